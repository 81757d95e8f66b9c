"""2-D Ising model on a periodic L x L lattice: energy and a vectorized Monte-Carlo sampler.

The Ising experiment of Gerken & Kessel (ICML 2024, arXiv 2403.03103) regresses the energy

    E(s) = -J sum_<ij> s_i s_j,     s in {-1, +1}^(L x L), periodic boundaries,

which is invariant under the lattice symmetries (rotations, reflections, translations, global spin flip).
The training configurations are drawn from the Boltzmann distribution p(s) ∝ exp(-E(s)/T) at temperatures
around the critical point T_c = 2J / ln(1 + √2) ≈ 2.269 J (Onsager), where the configurations range from
ordered to disordered.

Sampler: single-spin-flip updates with a *colour-class* schedule. A proper colouring of the periodic
lattice puts no two neighbours in the same class, so all spins of one class can flip simultaneously without
breaking detailed balance (the classic checkerboard update for even L). For odd L the torus is not
bipartite; we use 3 classes: with a proper colouring a(i) of the ring C_L by values in Z_3, the class
(a(i) + a(j)) mod 3 is proper on C_L x C_L because neighbours differ in exactly one coordinate. The class
table is built once in numpy; a sweep is ``n_colours`` vectorized half-steps over all chains at once
(array ``(C, L, L)``, one chain per row, each at its own temperature). Everything is seeded by a
``numpy.random.Generator`` and therefore deterministic.

Acceptance rule. Plain Metropolis (accept with min(1, e^{-dE/T})) must *not* be applied to a whole class
at once: flips with dE <= 0 are then certain, and there are high-energy states in which every proposed flip
has dE <= 0, so the chain cycles deterministically through them forever (a closed class: on the 3 x 3 torus
at T = 1.8 some chains get trapped at E = +6 and <E> is biased far beyond its standard error). We therefore
use the heat-bath (Glauber) rule p_flip = 1 / (1 + e^{dE/T}) by default, which is never 0 or 1, and offer
Metropolis in which each site of the class is proposed only with probability 1/2 (a mixture with the
identity kernel: still detailed balance, no deterministic cycles). Both are checked against exact
enumeration in ``tests/test_ising.py``.

Single-spin dynamics slow down near T_c (critical slowing down, autocorrelation ~ L^2.17 sweeps), which is harmless for
the small lattices (L <= 16) used here; :func:`sample_ising` discards a burn-in and thins between samples.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

#: Onsager's critical temperature of the square-lattice Ising model for J = 1 (k_B = 1).
T_CRITICAL = 2.0 / math.log(1.0 + math.sqrt(2.0))


def _check_spins(spins: np.ndarray) -> np.ndarray:
  spins = np.asarray(spins)
  if spins.ndim < 2 or spins.shape[-1] != spins.shape[-2]:
    raise ValueError(f"spins must have shape (..., L, L) with a square lattice, got {spins.shape}.")
  return spins


def ising_energy(spins: np.ndarray, J: float = 1.0) -> np.ndarray:
  """Energy E(s) = -J sum over nearest-neighbour bonds of s_i s_j, periodic boundaries.

  Every bond is counted once (right and down neighbour of each site), so a ground state of an L x L
  lattice has E = -2 J L^2 (for L >= 3; for L = 2 the periodic right and left neighbours coincide and each
  pair is counted twice, consistently with :func:`mc_sweeps`).

  Args:
    spins: ``(..., L, L)`` array of +-1 (any real dtype; real-valued inputs give the same bilinear form).
    J: coupling (J > 0 ferromagnetic).

  Returns:
    ``(...)`` float64 energies.
  """
  s = _check_spins(spins).astype(np.float64)
  return -J * (s * np.roll(s, -1, axis=-1) + s * np.roll(s, -1, axis=-2)).sum(axis=(-2, -1))


def _ring_colouring(L: int) -> tuple[np.ndarray, int]:
  """A proper colouring of the cycle C_L by values in Z_n (n = 2 for even L, else 3)."""
  a = np.arange(L) % 2
  if L % 2 == 0:
    return a, 2
  a[-1] = 2  # ... 0, 1, 2 | 0: the odd cycle needs a third colour at the wrap-around.
  return a, 3


def colour_classes(L: int) -> np.ndarray:
  """Boolean masks ``(n_colours, L, L)`` of a proper colouring of the periodic L x L lattice.

  No two nearest neighbours (periodic) share a class, so one class can be updated in parallel.
  """
  if L < 2:
    raise ValueError(f"lattice size L={L} must be >= 2.")
  a, n = _ring_colouring(L)
  colour = (a[:, None] + a[None, :]) % n
  return np.stack([colour == c for c in range(n)])


def _local_field(s: np.ndarray) -> np.ndarray:
  """Sum of the 4 periodic nearest neighbours of every site, ``(C, L, L)``."""
  return (np.roll(s, 1, axis=-1) + np.roll(s, -1, axis=-1) + np.roll(s, 1, axis=-2) + np.roll(s, -1, axis=-2))


RULES = ("heat_bath", "metropolis")


def mc_sweeps(spins: np.ndarray, temperatures: np.ndarray, n_sweeps: int, rng: np.random.Generator,
              J: float = 1.0, rule: str = "heat_bath") -> np.ndarray:
  """Runs ``n_sweeps`` colour-class single-spin-flip sweeps on a batch of chains (returns a new array).

  A flip of spin i changes the energy by dE = 2 J s_i h_i (h_i the sum of its neighbours). ``heat_bath``
  flips it with probability 1 / (1 + exp(dE / T)); ``metropolis`` proposes it with probability 1/2 and
  accepts with min(1, exp(-dE / T)) (see the module docstring for why not every site is proposed).

  Args:
    spins: ``(C, L, L)`` int8 array of +-1, one chain per row.
    temperatures: ``(C,)`` temperatures (> 0), one per chain.
    n_sweeps: number of full sweeps (every site is proposed once per sweep).
    rng: the random generator (advanced in place).
    J: coupling.
    rule: ``"heat_bath"`` or ``"metropolis"``.

  Returns:
    ``(C, L, L)`` int8 spins after the sweeps.
  """
  if rule not in RULES:
    raise ValueError(f"rule={rule!r} is not one of {RULES}.")
  s = _check_spins(spins).astype(np.int8).copy()
  if s.ndim != 3:
    raise ValueError(f"spins must be (chains, L, L), got {s.shape}.")
  temperatures = np.asarray(temperatures, dtype=np.float64)
  if temperatures.shape != (s.shape[0],) or not np.all(temperatures > 0):
    raise ValueError(f"temperatures must be ({s.shape[0]},) and positive, got shape {temperatures.shape}.")
  classes = colour_classes(s.shape[-1])
  # dE / T takes only the values 2 J s h / T with s h in {-4, -2, 0, 2, 4}: tabulate the flip
  # probabilities per chain once instead of calling exp on every site.
  d_e = 2.0 * J * np.arange(-4, 5)[None, :] / temperatures[:, None]  # (C, 9)
  if rule == "heat_bath":
    flip_table = 1.0 / (1.0 + np.exp(d_e))
  else:
    flip_table = 0.5 * np.minimum(1.0, np.exp(-d_e))
  chain = np.arange(s.shape[0])[:, None, None]
  for _ in range(n_sweeps):
    for mask in classes:
      sh = s * _local_field(s).astype(np.int8)  # in [-4, 4]
      p = flip_table[chain, sh + 4]
      flip = mask & (rng.random(s.shape) < p)
      s = np.where(flip, -s, s).astype(np.int8)
  return s


def temperature_grid(n: int, t_min: float = 1.5, t_max: float = 3.5) -> np.ndarray:
  """``n`` evenly spaced temperatures in ``[t_min, t_max]`` (default: ordered to disordered around T_c)."""
  if n < 1 or not 0 < t_min <= t_max:
    raise ValueError(f"need n >= 1 and 0 < t_min <= t_max, got n={n}, t_min={t_min}, t_max={t_max}.")
  return np.linspace(t_min, t_max, n)


def sample_ising(L: int, temperatures: Sequence[float], n_per_temperature: int, *, seed: int,
                 burn_in: int = 200, thin: int = 10, chains_per_temperature: int | None = None,
                 J: float = 1.0, rule: str = "heat_bath") -> tuple[np.ndarray, np.ndarray]:
  """Draws Ising configurations at each temperature with the vectorized colour-class sampler.

  For every temperature, ``chains_per_temperature`` independent chains start from random (T = ∞)
  configurations, run ``burn_in`` sweeps, then yield one configuration every ``thin`` sweeps until
  ``n_per_temperature`` samples per temperature are collected. All chains of all temperatures advance
  together in one ``(C, L, L)`` array.

  Args:
    L: lattice side.
    temperatures: the temperatures T > 0 (J = k_B = 1 units).
    n_per_temperature: configurations returned per temperature.
    seed: seed of the ``numpy.random.Generator``; equal seeds give identical samples.
    burn_in: sweeps discarded before the first sample.
    thin: sweeps between successive samples of one chain.
    chains_per_temperature: default ``n_per_temperature`` (every sample from its own chain, i.e.
      independent samples after burn-in); fewer chains take several thinned samples each.
    J: coupling.
    rule: acceptance rule of :func:`mc_sweeps`.

  Returns:
    ``(spins, temps)``: spins ``(len(temperatures) * n_per_temperature, L, L)`` int8 of +-1, temperature-
    major order; temps the matching ``(N,)`` float64 temperature of every configuration.
  """
  temperatures = np.asarray(temperatures, dtype=np.float64).reshape(-1)
  if n_per_temperature < 1 or burn_in < 0 or thin < 1:
    raise ValueError(f"need n_per_temperature >= 1, burn_in >= 0, thin >= 1; got {n_per_temperature}, "
                     f"{burn_in}, {thin}.")
  chains = chains_per_temperature or n_per_temperature
  if not 1 <= chains <= n_per_temperature:
    raise ValueError(f"chains_per_temperature={chains} must be in 1..n_per_temperature={n_per_temperature}.")
  rng = np.random.default_rng(seed)
  chain_temps = np.repeat(temperatures, chains)
  s = rng.choice(np.array([-1, 1], dtype=np.int8), size=(chain_temps.size, L, L))
  s = mc_sweeps(s, chain_temps, burn_in, rng, J, rule)
  rounds = -(-n_per_temperature // chains)
  draws = []
  for r in range(rounds):
    if r:
      s = mc_sweeps(s, chain_temps, thin, rng, J, rule)
    draws.append(s.reshape(temperatures.size, chains, L, L))
  spins = np.concatenate(draws, axis=1)[:, :n_per_temperature].reshape(-1, L, L)
  return spins, np.repeat(temperatures, n_per_temperature)


def exact_mean_energy(L: int, temperature: float, J: float = 1.0) -> float:
  """The exact Boltzmann mean energy <E> by enumerating all 2^(L^2) states (L <= 4); a test oracle."""
  if L * L > 16:
    raise ValueError(f"exact enumeration is limited to L <= 4 (2^16 states), got L={L}.")
  codes = np.arange(2 ** (L * L), dtype=np.int64)
  bits = (codes[:, None] >> np.arange(L * L)[None, :]) & 1
  spins = (2 * bits - 1).reshape(-1, L, L)
  e = ising_energy(spins, J)
  w = np.exp(-(e - e.min()) / temperature)
  return float((w * e).sum() / w.sum())
