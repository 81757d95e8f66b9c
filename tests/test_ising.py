"""The Ising sampler against exact enumeration; energy conventions and symmetries."""

import numpy as np
import pytest

from ntk import ising


def test_energy_hand_computed_and_ground_state():
  assert ising.ising_energy(np.ones((5, 5))) == -50.0  # 2 L^2 bonds, all aligned
  # Checkerboard on an even lattice: every bond anti-aligned.
  cb = 1 - 2 * ((np.arange(4)[:, None] + np.arange(4)[None, :]) % 2)
  assert ising.ising_energy(cb) == 32.0
  # One flipped spin in the ground state breaks its 4 bonds: +8.
  s = np.ones((4, 4))
  s[1, 2] = -1
  assert ising.ising_energy(s) == -32.0 + 8.0
  np.testing.assert_allclose(ising.ising_energy(np.ones((2, 3, 3)), J=0.5), [-9.0, -9.0])


def test_energy_is_invariant_under_lattice_symmetries_and_spin_flip():
  s = np.random.default_rng(0).choice([-1, 1], size=(7, 6, 6))
  e = ising.ising_energy(s)
  for t in (lambda x: np.rot90(x, 1, axes=(-2, -1)), lambda x: x[..., ::-1], lambda x: np.roll(x, 2, axis=-1),
            lambda x: np.roll(x, -1, axis=-2), lambda x: -x):
    np.testing.assert_array_equal(ising.ising_energy(t(s)), e)


@pytest.mark.parametrize("L", [2, 3, 4, 5, 6])
def test_colour_classes_are_a_proper_colouring(L):
  classes = ising.colour_classes(L)
  np.testing.assert_array_equal(classes.sum(0), np.ones((L, L)))  # a partition
  for c in classes:
    for axis in (0, 1):
      # No site of the class has a (periodic) neighbour in the same class (L = 2: right == left neighbour).
      assert not np.any(c & np.roll(c, 1, axis=axis))
  assert len(classes) == (2 if L % 2 == 0 else 3)


@pytest.mark.parametrize("rule", ising.RULES)
@pytest.mark.parametrize("L,T", [(3, 1.8), (3, 3.0), (4, ising.T_CRITICAL)])
def test_sampler_matches_exact_boltzmann_mean_energy(L, T, rule):
  # Odd L exercises the 3-colour schedule; T = 1.8 on the 3x3 torus is where naive whole-class
  # Metropolis gets trapped in deterministic cycles (see the module docstring).
  s, temps = ising.sample_ising(L, [T], 6000, seed=1, burn_in=60, rule=rule)
  assert s.shape == (6000, L, L) and s.dtype == np.int8 and set(np.unique(s)) == {-1, 1}
  assert np.all(temps == T)
  e = ising.ising_energy(s)
  z = (e.mean() - ising.exact_mean_energy(L, T)) / (e.std() / np.sqrt(len(e)))
  assert abs(z) < 4.0, z


def test_deterministic_by_seed_and_ordered_by_temperature():
  temps = ising.temperature_grid(3, 1.5, 3.5)
  a, ta = ising.sample_ising(8, temps, 40, seed=7, burn_in=150, chains_per_temperature=20, thin=5)
  b, _ = ising.sample_ising(8, temps, 40, seed=7, burn_in=150, chains_per_temperature=20, thin=5)
  c, _ = ising.sample_ising(8, temps, 40, seed=8, burn_in=150, chains_per_temperature=20, thin=5)
  np.testing.assert_array_equal(a, b)
  assert np.any(a != c)
  np.testing.assert_array_equal(ta, np.repeat(temps, 40))
  # Below T_c the lattice orders (|m| near 1, E/site near -2), above it disorders.
  m = np.abs(a.reshape(3, 40, -1).mean(-1)).mean(-1)
  e = ising.ising_energy(a).reshape(3, 40).mean(-1) / 64
  assert m[0] > 0.9 and m[2] < 0.4 and e[0] < -1.8 and e[2] > -1.0


def test_bad_arguments_raise_clear_errors():
  with pytest.raises(ValueError, match="square lattice"):
    ising.ising_energy(np.ones((3, 4)))
  with pytest.raises(ValueError, match="rule="):
    ising.sample_ising(4, [2.0], 2, seed=0, rule="wolff")
  with pytest.raises(ValueError, match="positive"):
    ising.sample_ising(4, [0.0], 2, seed=0)
  with pytest.raises(ValueError, match="chains_per_temperature"):
    ising.sample_ising(4, [2.0], 2, seed=0, chains_per_temperature=3)
  with pytest.raises(ValueError, match="L <= 4"):
    ising.exact_mean_energy(5, 2.0)
