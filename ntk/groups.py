"""Finite groups with explicit representations on inputs (rho_X) and outputs (rho_Y).

Used for full-orbit data augmentation and equivariance measurements in "Emergent Equivariance in Deep
Ensembles" (Gerken & Kessel, ICML 2024, arXiv:2403.03103).

Conventions:

- Elements are integers ``0 .. order-1``; element 0 is the identity. ``table[a, b]`` is the index of
  ``a∘b``, i.e. ``act_x(compose(a, b), x) == act_x(a, act_x(b, x))``.
- Every representation is stored once, at construction, as a *gather table* in numpy: a sparse matrix with
  a fixed number ``m`` of nonzeros per row, ``idx (order, D, m)`` int and ``w (order, D, m)`` float, with
  ``(rho(g) x)_flat[:, d] = sum_j w[g, d, j] * x_flat[:, idx[g, d, j]]`` on per-example flattened inputs
  of size ``D``. Pixel permutations (rot90, flips, lattice translations) are ``m = 1, w = 1`` and are
  applied as a pure gather (bit-exact); signed permutations (the cube group) are ``m = 1, w = ±1``;
  2-D rotation matrices are ``m = 2``; bilinear image rotation is ``m = 4``. Forward passes only gather.
- ``exact`` is True when rho_X is an exact orthogonal representation (permutations, signed
  permutations, rotation matrices). Interpolated image rotations by angles other than multiples of 90°
  are *not* a representation: composing two 45° rotations is not the 90° rotation (interpolation blurs
  and the corners leave the frame), so ``exact=False`` and the homomorphism holds only approximately.
- ``cyclic_factors = (k_1, ..., k_m)`` marks an abelian group ``Z_{k_1} × ... × Z_{k_m}`` whose element
  ``a`` has multi-index ``np.unravel_index(a, cyclic_factors)`` and composes by addition modulo ``k_l``.
  The block-circulant solver (:mod:`ntk.blockcirc`) needs this structure; ``None`` otherwise.
- Your own group: :meth:`FiniteGroup.from_permutations` (all elements as pixel/coordinate permutations; the
  table is derived and closure checked) or :meth:`FiniteGroup.cyclic` (one generator; ``cyclic_factors`` set,
  so the block-circulant solver applies). Direct construction from a table and :class:`GatherRep` tables is
  checked too: :func:`homomorphism_problem` compares the table with the representation on a probe input.
  Predictions on flattened orbits ``(..., |G| n, ...)`` go back to ``(..., |G|, n, ...)`` with :func:`split_orbit`.
- Arrays: numpy inputs with a Python-int ``g`` are transformed in numpy (dtype kept exactly, e.g.
  float64 without enabling JAX x64); anything else goes through ``jnp`` and works under ``jit``/``vmap``
  (``g`` may then also be a traced integer).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Optional, Sequence

import jax.numpy as jnp
import numpy as np


# --------------------------------------------------------------------------------------------------
# Sparse "gather" representations.


@dataclasses.dataclass(frozen=True, eq=False)
class GatherRep:
  """A representation ``g -> rho(g)`` stored as gather tables on flattened per-example arrays.

  Attributes:
    idx: (order, D, m) int32 source indices.
    w: (order, D, m) float64 weights.
    shape: per-example shape whose flattening has size D.
  """
  idx: np.ndarray
  w: np.ndarray
  shape: tuple[int, ...]

  def __post_init__(self):
    if self.idx.shape != self.w.shape or self.idx.ndim != 3:
      raise ValueError(f"idx {self.idx.shape} and w {self.w.shape} must both be (order, D, m).")
    if self.idx.shape[1] != int(np.prod(self.shape)):
      raise ValueError(f"D={self.idx.shape[1]} does not match the per-example shape {self.shape}.")
    self.idx.setflags(write=False)
    self.w.setflags(write=False)

  @property
  def dim(self) -> int:
    return self.idx.shape[1]

  @property
  def is_permutation(self) -> bool:
    """True when every rho(g) is a plain permutation (applied as a bit-exact gather)."""
    return self.idx.shape[2] == 1 and bool(np.all(self.w == 1.0))

  def dense(self, g: int) -> np.ndarray:
    """rho(g) as a dense (D, D) float64 matrix."""
    m = np.zeros((self.dim, self.dim))
    np.add.at(m, (np.repeat(np.arange(self.dim), self.idx.shape[2]), self.idx[g].reshape(-1)),
              self.w[g].reshape(-1))
    return m

  def apply(self, g, x):
    """rho(g) applied to a batch x of shape (n, *shape)."""
    if tuple(x.shape[1:]) != tuple(self.shape):
      raise ValueError(f"expected a batch of shape (n, {', '.join(map(str, self.shape))}), got {tuple(x.shape)}; "
                       "add the leading batch axis (x[None]) or build the group for this input shape.")
    n = x.shape[0]
    if isinstance(x, np.ndarray) and isinstance(g, (int, np.integer)):
      flat = x.reshape(n, self.dim)
      if self.is_permutation:
        out = flat[:, self.idx[g, :, 0]]
      else:
        out = np.einsum("ndm,dm->nd", flat[:, self.idx[g]], self.w[g].astype(x.dtype))
      return out.reshape(x.shape)
    x = jnp.asarray(x)
    flat = x.reshape(n, self.dim)
    idx = jnp.asarray(self.idx)[g]
    if self.is_permutation:
      out = flat[:, idx[:, 0]]
    else:
      out = jnp.einsum("ndm,dm->nd", flat[:, idx], jnp.asarray(self.w, dtype=x.dtype)[g])
    return out.reshape(x.shape)

  def orbit(self, x):
    """(order, n, *shape): rho(g) x for all g, in element order."""
    if tuple(x.shape[1:]) != tuple(self.shape):
      raise ValueError(f"expected a batch of shape (n, {', '.join(map(str, self.shape))}), got {tuple(x.shape)}.")
    n, order = x.shape[0], self.idx.shape[0]
    xp = np if isinstance(x, np.ndarray) else jnp
    flat = x.reshape(n, self.dim)
    if self.is_permutation:
      out = flat[:, self.idx[..., 0]]                          # (n, order, D)
    else:
      out = xp.einsum("ngdm,gdm->ngd", flat[:, self.idx], xp.asarray(self.w, dtype=x.dtype))
    return xp.moveaxis(out, 0, 1).reshape((order, n) + tuple(self.shape))


def _perm_rep(perms: np.ndarray, shape: Sequence[int]) -> GatherRep:
  perms = np.asarray(perms, dtype=np.int32)
  return GatherRep(perms[:, :, None], np.ones(perms.shape + (1,)), tuple(shape))


def _as_perms(perms, what: str) -> np.ndarray:
  perms = np.asarray(perms)
  if perms.ndim != 2 or not np.issubdtype(perms.dtype, np.integer):
    raise ValueError(f"{what} must be an integer array (order, D) of source indices, got {perms.dtype} "
                     f"{perms.shape}.")
  d = perms.shape[1]
  if np.any(np.sort(perms, axis=1) != np.arange(d)):
    raise ValueError(f"every row of {what} must be a permutation of 0..{d - 1}.")
  return perms.astype(np.int32)


def _cyclic_powers(generator: np.ndarray, order: Optional[int] = None) -> np.ndarray:
  """(k, D) powers ``generator^a`` (``p_{a+1} = p_a[generator]``) up to the generator's order (or ``order``)."""
  d = generator.shape[0]
  powers = [np.arange(d, dtype=np.int32)]
  while True:
    nxt = powers[-1][generator]
    if (order is None and np.array_equal(nxt, powers[0])) or (order is not None and len(powers) == order):
      break
    powers.append(nxt)
  if order is not None and not np.array_equal(powers[-1][generator], powers[0]):
    raise ValueError(f"the generator does not have order {order} (its {order}-th power is not the identity), "
                     "so it does not define a representation of Z{order}.")
  return np.stack(powers)


def _generators(table: np.ndarray) -> list[int]:
  """A small generating set of the group with multiplication ``table`` (greedy, in element order)."""
  k = table.shape[0]
  gens: list[int] = []
  reached = np.zeros(k, bool)
  reached[0] = True
  for g in range(1, k):
    if reached[g]:
      continue
    gens.append(g)
    frontier = np.flatnonzero(reached)
    while frontier.size:    # closure of the reached set under left multiplication by the generators
      new = np.unique(table[np.asarray(gens)][:, frontier])
      new = new[~reached[new]]
      reached[new] = True
      frontier = new
  return gens


def homomorphism_violation(group: "FiniteGroup", tol: float = 1e-9) -> Optional[tuple[str, int, int, float]]:
  """The first pair where ``rho_X``/``rho_Y`` break the group's table, as ``(label, s, b, err)``; None if none.

  Checks ``rho(s) rho(b) = rho(table[s, b])`` for every generator s (a greedy generating set of the table) and
  every element b, on one random probe input. Generators against all elements suffice: every element is a
  product of generators, and ``rho(s_1 ... s_m b) = rho(s_1) rho(s_2 ... s_m b)`` follows by induction. Cost:
  |gens| gathers of the probe's orbit. ``tol`` is relative to the probe's scale (exact groups give 0 or the
  round-off of orthogonal matrices).
  """
  table = np.asarray(group.table)
  for label, rep in (("rho_X", group.rep_x), ("rho_Y", group.rep_y)):
    if rep is None:
      continue
    probe = np.random.default_rng(0).normal(size=(1,) + tuple(rep.shape))
    orbit = rep.orbit(probe)[:, 0]                                        # (order, *shape)
    for s in _generators(table):
      err = np.abs(rep.apply(s, orbit) - orbit[table[s]]).reshape(len(orbit), -1).max(axis=1)
      bad = np.flatnonzero(~(err <= tol * float(np.max(np.abs(probe)))))   # rho(s) rho(b) x vs rho(s∘b) x
      if bad.size:
        b = int(bad[0])
        return label, int(s), b, float(err[b])
  return None


def homomorphism_problem(group: "FiniteGroup", tol: float = 1e-9) -> Optional[str]:
  """Why ``rho_X``/``rho_Y`` do not follow the group's table (None when they do); run at construction.

  The check is :func:`homomorphism_violation`; this is its message for someone building a group.
  """
  found = homomorphism_violation(group, tol)
  if found is None:
    return None
  label, s, b, err = found
  table = np.asarray(group.table)
  return (f"{group.name}: the table does not match {label}: rho({s}) rho({b}) != rho(table[{s}, {b}] = "
          f"{table[s, b]}) (off by {err:.2e} on a random probe). table[a, b] must be the element a∘b (apply "
          "b first). Fix: build permutation groups with FiniteGroup.from_permutations(perms, ...) or "
          "FiniteGroup.cyclic(generator, ...), which derive the table; for Z_k1 × ... × Z_km list the "
          "elements in multi-index order.")


def _matrix_rep(mats: np.ndarray, shape: Sequence[int]) -> GatherRep:
  """Gather tables for dense matrices ``(order, D, D)`` (each row keeps all D entries; for small D)."""
  order, d, _ = mats.shape
  idx = np.broadcast_to(np.arange(d, dtype=np.int32), (order, d, d)).copy()
  return GatherRep(idx, np.asarray(mats, dtype=np.float64), tuple(shape))


def _snap(m: np.ndarray, tol: float = 1e-12) -> np.ndarray:
  """Rounds entries within tol of -1, 0, 1 so that e.g. cos(pi/2) is exactly 0 (exact C4 matrices)."""
  m = np.array(m, dtype=np.float64)
  for v in (-1.0, 0.0, 1.0):
    m[np.abs(m - v) < tol] = v
  return m


def _block_diag_rep(mats: np.ndarray, copies: int) -> np.ndarray:
  """(order, d, d) -> (order, copies*d, copies*d): R ⊕ R ⊕ ... (e.g. rho_X = R ⊕ R on pairs of vectors)."""
  order, d, _ = mats.shape
  out = np.zeros((order, copies * d, copies * d))
  for c in range(copies):
    out[:, c * d:(c + 1) * d, c * d:(c + 1) * d] = mats
  return out


# --------------------------------------------------------------------------------------------------
# The group.


@dataclasses.dataclass(frozen=True, eq=False)
class FiniteGroup:
  """A finite group G with representations rho_X on inputs and rho_Y on outputs.

  Attributes:
    name: human-readable name (e.g. ``"C4 (rot90)"``).
    table: (order, order) int multiplication table, ``table[a, b] = a∘b``; element 0 is the identity.
    rep_x: rho_X as gather tables on inputs of shape ``input_shape``.
    rep_y: rho_Y as gather tables on outputs, or None for the trivial representation (invariant tasks:
      ``act_y`` is then the identity on any output shape).
    exact: True when rho_X is an exact orthogonal/permutation representation (see module docstring).
    cyclic_factors: ``(k_1, ..., k_m)`` when G = Z_{k_1} × ... × Z_{k_m} with element ``a`` having
      multi-index ``np.unravel_index(a, cyclic_factors)``; None otherwise.
  """
  name: str
  table: np.ndarray
  rep_x: GatherRep
  rep_y: Optional[GatherRep] = None
  exact: bool = True
  cyclic_factors: Optional[tuple[int, ...]] = None

  def __post_init__(self):
    t = np.asarray(self.table)
    k = t.shape[0]
    if t.shape != (k, k) or self.rep_x.idx.shape[0] != k or (self.rep_y is not None and self.rep_y.idx.shape[0] != k):
      raise ValueError(f"{self.name}: table {t.shape} and representations disagree on the group order.")
    if not (np.array_equal(t[0], np.arange(k)) and np.array_equal(t[:, 0], np.arange(k))):
      raise ValueError(f"{self.name}: element 0 must be the identity.")
    for rep in (self.rep_x, self.rep_y):
      probe = None if rep is None else np.arange(1.0, rep.dim + 1.0).reshape((1,) + rep.shape)
      if rep is not None and not np.array_equal(rep.apply(0, probe), probe):
        raise ValueError(f"{self.name}: rho(element 0) is not the identity.")
    if any(sorted(row) != list(range(k)) for row in t.tolist()):
      raise ValueError(f"{self.name}: table is not a Latin square (not a group).")
    if self.cyclic_factors is not None:
      if int(np.prod(self.cyclic_factors)) != k:
        raise ValueError(f"{self.name}: cyclic_factors {self.cyclic_factors} do not multiply to the order {k}.")
      if not np.array_equal(t, _abelian_table(self.cyclic_factors)):
        raise ValueError(f"{self.name}: table is not Z_{self.cyclic_factors} in multi-index order.")
    t = t.astype(np.int32)
    t.setflags(write=False)
    object.__setattr__(self, "table", t)
    problem = homomorphism_problem(self) if self.exact else None
    if problem:
      raise ValueError(problem)
    inv = np.argmax(t == 0, axis=1).astype(np.int32)
    inv.setflags(write=False)
    object.__setattr__(self, "_inverses", inv)

  @classmethod
  def from_permutations(cls, perms, input_shape: Sequence[int], *, name: str = "G",
                        output_perms=None, output_shape: Optional[Sequence[int]] = None,
                        cyclic_factors: Optional[Sequence[int]] = None) -> "FiniteGroup":
    """A permutation group given by all its elements; the multiplication table is derived.

    Args:
      perms: (order, D) int source indices, one row per element, identity first:
        ``(rho_X(g_a) x)_flat = x_flat[:, perms[a]]`` with ``D = prod(input_shape)`` (as ``np.roll`` /
        ``np.rot90`` of ``np.arange(D).reshape(input_shape)`` flattened).
      input_shape: per-example input shape.
      name: human-readable name.
      output_perms: (order, D_out) source indices of rho_Y in the same element order, or None for an
        invariant task (rho_Y = id).
      output_shape: per-example output shape for ``output_perms`` (default ``(D_out,)``).
      cyclic_factors: ``(k_1, ..., k_m)`` when the rows are in the multi-index order of
        ``Z_{k_1} × ... × Z_{k_m}`` (enables the block-circulant solver); checked against the derived table.

    Raises:
      ValueError: the rows are not distinct, not closed under composition, the identity is not first, or
        ``cyclic_factors`` does not match the derived table.
    """
    perms = _as_perms(perms, "perms")
    table = _table_from_perms(perms)
    rep_y = None
    if output_perms is not None:
      output_perms = _as_perms(output_perms, "output_perms")
      if output_perms.shape[0] != perms.shape[0]:
        raise ValueError(f"{name}: output_perms has {output_perms.shape[0]} rows, perms {perms.shape[0]}; give "
                         "rho_Y for every element in the same order.")
      rep_y = _perm_rep(output_perms, output_shape or (output_perms.shape[1],))
    cf = None if cyclic_factors is None else tuple(int(c) for c in cyclic_factors)
    return cls(name, table, _perm_rep(perms, input_shape), rep_y, True, cf)

  @classmethod
  def cyclic(cls, generator, input_shape: Sequence[int], *, name: Optional[str] = None,
             output_generator=None, output_shape: Optional[Sequence[int]] = None) -> "FiniteGroup":
    """The cyclic group Z_k generated by one permutation: element ``a`` is ``rho(generator)^a``.

    Args:
      generator: (D,) source indices of the generator, ``(rho(s) x)_flat = x_flat[:, generator]``; its order
        k (smallest k with ``generator^k = id``) is the group order.
      input_shape: per-example input shape (``prod == D``).
      name: default ``"Z{k}"``.
      output_generator: (D_out,) source indices of rho_Y(s) (equivariant outputs), or None (invariant).
      output_shape: per-example output shape for ``output_generator`` (default ``(D_out,)``).

    Returns:
      The group with ``cyclic_factors=(k,)``, so the block-circulant solver applies.
    """
    perms = _cyclic_powers(_as_perms(np.asarray(generator)[None], "generator")[0])
    out = None
    if output_generator is not None:
      out = _cyclic_powers(_as_perms(np.asarray(output_generator)[None], "output_generator")[0], len(perms))
    k = len(perms)
    return cls.from_permutations(perms, input_shape, name=name or f"Z{k}", output_perms=out,
                                 output_shape=output_shape, cyclic_factors=(k,))

  @property
  def order(self) -> int:
    """|G|."""
    return self.table.shape[0]

  @property
  def input_shape(self) -> tuple[int, ...]:
    return self.rep_x.shape

  @property
  def output_shape(self) -> Optional[tuple[int, ...]]:
    """Per-example output shape rho_Y acts on; None for invariant tasks (any shape, rho_Y = id)."""
    return None if self.rep_y is None else self.rep_y.shape

  @property
  def invariant(self) -> bool:
    """True when rho_Y is trivial (the task is invariant rather than equivariant)."""
    return self.rep_y is None

  @property
  def is_abelian(self) -> bool:
    return bool(np.array_equal(self.table, self.table.T))

  def compose(self, a: int, b: int) -> int:
    """Index of a∘b (apply b first, then a)."""
    return int(self.table[a, b])

  def inverse(self, a: int) -> int:
    return int(self._inverses[a])  # pytype: disable=attribute-error

  def act_x(self, g, x):
    """rho_X(g) x for a batch x of shape (n, *input_shape)."""
    return self.rep_x.apply(g, x)

  def act_y(self, g, y):
    """rho_Y(g) y for a batch y of shape (n, *output_shape); the identity for invariant tasks."""
    return y if self.rep_y is None else self.rep_y.apply(g, y)

  def orbit(self, x):
    """(order, n, *input_shape): the orbit rho_X(g) x_i of every input, group-major."""
    return self.rep_x.orbit(x)

  def orbit_y(self, y):
    """(order, n, *output_shape): rho_Y(g) y_i for all g (y repeated for invariant tasks)."""
    if self.rep_y is None:
      xp = np if isinstance(y, np.ndarray) else jnp
      return xp.broadcast_to(y[None], (self.order,) + tuple(y.shape))
    return self.rep_y.orbit(y)

  def matrix_x(self, g: int) -> np.ndarray:
    """rho_X(g) as a dense (D, D) matrix on flattened inputs (D = prod(input_shape))."""
    return self.rep_x.dense(g)

  def matrix_y(self, g: int) -> np.ndarray:
    if self.rep_y is None:
      raise ValueError(f"{self.name} is invariant: rho_Y is the identity on any output shape.")
    return self.rep_y.dense(g)

  def perm_x(self, g: int) -> np.ndarray:
    """(D,) source indices with ``rho_X(g)x_flat = x_flat[:, perm]``; raises if rho_X is not a permutation."""
    if not self.rep_x.is_permutation:
      raise ValueError(f"rho_X of {self.name} is not a permutation representation; use matrix_x(g).")
    return np.asarray(self.rep_x.idx[g, :, 0])

  def __repr__(self):
    return (f"FiniteGroup({self.name!r}, order={self.order}, input_shape={self.input_shape}, "
            f"output_shape={self.output_shape}, exact={self.exact}, cyclic_factors={self.cyclic_factors})")


def augment_full_orbit(group: FiniteGroup, x, y):
  """Full-orbit data augmentation, group-major.

  Args:
    group: the group.
    x: (n, *input_shape) inputs.
    y: (n, *output_shape) targets.

  Returns:
    ``(x_aug, y_aug)`` of shapes (order*n, *input_shape) and (order*n, *output_shape); row ``a*n + i``
    is ``(rho_X(g_a) x_i, rho_Y(g_a) y_i)``. This ordering makes a G-invariant kernel matrix
    block-circulant for abelian groups (see :mod:`ntk.blockcirc`).
  """
  if x.shape[0] != y.shape[0]:
    raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}.")
  xo, yo = group.orbit(x), group.orbit_y(y)
  return xo.reshape((-1,) + tuple(x.shape[1:])), yo.reshape((-1,) + tuple(y.shape[1:]))


def split_orbit(a, order: int, axis: int = 0):
  """Splits a group-major axis of size ``order * n`` into ``(order, n)``: the inverse of flattening an orbit.

  Predictions on ``group.orbit(x).reshape((-1,) + x.shape[1:])`` or on :func:`augment_full_orbit` rows come
  back as ``(..., order * n, ...)``; row ``a * n + i`` belongs to element a and input i.

  Args:
    a: array (numpy or jax) whose ``axis`` has size ``order * n``.
    order: |G| (``group.order``).
    axis: the group-major axis (negative counts from the end, e.g. -2 for ``(T, |G| n, out)``).

  Returns:
    ``a`` reshaped to ``a.shape[:axis] + (order, n) + a.shape[axis+1:]`` (a view where possible).
  """
  shape = tuple(a.shape)
  ax = axis % len(shape) if shape else 0
  if not shape or shape[ax] % order:
    raise ValueError(f"axis {axis} of shape {shape} is not a multiple of the group order {order}; pass the axis "
                     "that holds the group-major orbit rows (|G| n of them).")
  return a.reshape(shape[:ax] + (order, shape[ax] // order) + shape[ax + 1:])


# --------------------------------------------------------------------------------------------------
# Builders.


def _abelian_table(factors: Sequence[int]) -> np.ndarray:
  mi = np.stack(np.unravel_index(np.arange(int(np.prod(factors))), factors), axis=-1)   # (k, m)
  s = (mi[:, None, :] + mi[None, :, :]) % np.asarray(factors)
  return np.ravel_multi_index(tuple(np.moveaxis(s, -1, 0)), factors).astype(np.int32)


def _table_from_perms(perms: np.ndarray) -> np.ndarray:
  """Multiplication table of a permutation group (perms (k, D), element 0 = identity).

  With ``(rho(g)x)[d] = x[p_g[d]]``, ``rho(a)rho(b)`` has source indices ``p_b[p_a]``.
  """
  lookup = {p.tobytes(): i for i, p in enumerate(perms)}
  if len(lookup) != len(perms):
    raise ValueError("permutations are not distinct (the action is not faithful).")
  k = len(perms)
  table = np.empty((k, k), dtype=np.int32)
  for a in range(k):
    for b in range(k):
      c = lookup.get(perms[b][perms[a]].tobytes())
      if c is None:
        raise ValueError("permutations are not closed under composition.")
      table[a, b] = c
  return table


def _closure(generators: Sequence[np.ndarray]) -> np.ndarray:
  """All products of the generator permutations (BFS), identity first."""
  d = generators[0].shape[0]
  elems = [np.arange(d)]
  seen = {elems[0].tobytes()}
  frontier = list(elems)
  while frontier:
    new = []
    for p in frontier:
      for s in generators:
        q = p[s]  # rho(s)∘rho(p)
        if q.tobytes() not in seen:
          seen.add(q.tobytes())
          new.append(q)
    elems += new
    frontier = new
  return np.stack(elems)


def _abelian_perms(generators: Sequence[np.ndarray], factors: Sequence[int]) -> np.ndarray:
  """perm of element a = g_1^{e_1} ... g_m^{e_m} with (e_l) = unravel_index(a, factors)."""
  d = generators[0].shape[0]
  powers = [_cyclic_powers(np.asarray(s), k) for s, k in zip(generators, factors)]
  perms = []
  for e in itertools.product(*[range(k) for k in factors]):
    p = np.arange(d)
    for l, el in enumerate(e):
      p = p[powers[l][el]]
    perms.append(p)
  return np.stack(perms)


def _check_square_image(image_shape: Sequence[int]) -> tuple[int, ...]:
  image_shape = tuple(int(s) for s in image_shape)
  if len(image_shape) not in (2, 3) or image_shape[0] != image_shape[1]:
    raise ValueError(f"image_shape must be (H, W) or (H, W, C) with H == W for rotations; got {image_shape}.")
  return image_shape


def _index_image(shape: Sequence[int]) -> np.ndarray:
  return np.arange(int(np.prod(shape))).reshape(shape)


def _rot90_perm(shape) -> np.ndarray:
  return np.rot90(_index_image(shape), 1, axes=(0, 1)).reshape(-1)


def _flip_perm(shape) -> np.ndarray:
  return _index_image(shape)[:, ::-1].reshape(-1)


def rotations_c4(image_shape: Sequence[int]) -> FiniteGroup:
  """C4 acting on square images (n, H, W) or (n, H, W, C) by ``np.rot90(x, a, axes=(1, 2))`` (exact)."""
  shape = _check_square_image(image_shape)
  perms = np.stack([np.rot90(_index_image(shape), a, axes=(0, 1)).reshape(-1) for a in range(4)])
  return FiniteGroup("C4 (rot90)", _table_from_perms(perms), _perm_rep(perms, shape), None, True, (4,))


def rotations_ck(k: int, image_shape: Sequence[int]) -> FiniteGroup:
  """C_k acting on square images by rotation through ``2*pi*a/k`` about the image center, bilinear.

  Same direction as ``np.rot90`` (so element 1 of k=4 is rot90). Output pixels whose source falls outside
  the image are 0. For k in {1, 2, 4} every angle is a multiple of 90°, the tables are exact pixel
  permutations, and the group is exact (it then equals :func:`rotations_c4` for k=4). Otherwise it is
  **approximate**: interpolation is not invertible and does not compose exactly (``exact=False``), so
  kernels are only approximately invariant and :mod:`ntk.blockcirc` falls back to the dense path.
  """
  if k < 1:
    raise ValueError(f"k must be >= 1, got {k}.")
  shape = _check_square_image(image_shape)
  h, w_ = shape[0], shape[1]
  ch = shape[2] if len(shape) == 3 else 1
  c = (h - 1) / 2.0
  ii, jj = np.meshgrid(np.arange(h), np.arange(w_), indexing="ij")
  u, v = (ii - c).reshape(-1), (jj - c).reshape(-1)
  idx = np.zeros((k, h * w_, 4), dtype=np.int64)
  wts = np.zeros((k, h * w_, 4))
  for a in range(k):
    th = 2 * np.pi * a / k
    cs, sn = _snap(np.array([np.cos(th), np.sin(th)]))
    # out[i, j] = x[src]: src = R(θ)(u, v) + c; θ = 90° gives src = (j, W-1-i) = np.rot90.
    su, sv = cs * u + sn * v + c, -sn * u + cs * v + c
    su = np.where(np.abs(su - np.round(su)) < 1e-9, np.round(su), su)
    sv = np.where(np.abs(sv - np.round(sv)) < 1e-9, np.round(sv), sv)
    i0, j0 = np.floor(su).astype(np.int64), np.floor(sv).astype(np.int64)
    fu, fv = su - i0, sv - j0
    for m, (di, dj, wt) in enumerate([(0, 0, (1 - fu) * (1 - fv)), (0, 1, (1 - fu) * fv),
                                      (1, 0, fu * (1 - fv)), (1, 1, fu * fv)]):
      pi, pj = i0 + di, j0 + dj
      inside = (pi >= 0) & (pi < h) & (pj >= 0) & (pj < w_) & (wt > 0)
      idx[a, :, m] = np.where(inside, pi * w_ + pj, 0)
      wts[a, :, m] = np.where(inside, wt, 0.0)
  # Expand pixel tables to channels: flat index (p * C + c).
  idx = (idx[:, :, None, :] * ch + np.arange(ch)[None, None, :, None]).reshape(k, h * w_ * ch, 4)
  wts = np.repeat(wts[:, :, None, :], ch, axis=2).reshape(k, h * w_ * ch, 4)
  one_hot = np.all(np.sort(wts, axis=-1)[..., :3] == 0, axis=-1) & (wts.max(-1) == 1.0)
  if np.all(one_hot):  # all angles are multiples of 90°: exact pixel permutations
    perms = np.take_along_axis(idx, np.argmax(wts, -1)[..., None], -1)[..., 0]
    return FiniteGroup(f"C{k} (rot90)", _table_from_perms(perms), _perm_rep(perms, shape), None, True, (k,))
  rep = GatherRep(idx.astype(np.int32), wts, shape)
  return FiniteGroup(f"C{k} (bilinear rotation, approximate)", _abelian_table((k,)), rep, None, False, (k,))


def dihedral_d4(image_shape: Sequence[int]) -> FiniteGroup:
  """D4 on square images: element ``a + 4*s`` is ``rot90^a ∘ flip^s`` with flip = left-right mirror (exact)."""
  shape = _check_square_image(image_shape)
  r, f = _rot90_perm(shape), _flip_perm(shape)
  rots = [np.arange(r.size)]
  for _ in range(3):
    rots.append(rots[-1][r])
  # rho(rot^a ∘ flip) has source indices p_flip[p_rot^a].
  perms = np.stack(rots + [f[p] for p in rots])
  return FiniteGroup("D4", _table_from_perms(perms), _perm_rep(perms, shape), None, True, None)


def ising_lattice_group(L: int, rotations: bool = True, reflections: bool = False,
                        translations: bool = False) -> FiniteGroup:
  """Symmetries of an L×L periodic lattice acting on spin configurations (n, L, L) (invariant task).

  Generated by rot90, the left-right mirror and unit translations along both axes (periodic, np.roll).
  Rotations only: C4 (cyclic_factors (4,)); translations only: Z_L × Z_L (cyclic_factors (L, L), element
  ``a = L*tx + ty`` is ``np.roll(x, (tx, ty), axes=(1, 2))``); other combinations are non-abelian
  (D4, or the wallpaper group p4m/p4 on the torus with 8L² / 4L² elements).
  """
  if L < 2:
    raise ValueError(f"L must be >= 2, got {L}.")
  if not (rotations or reflections or translations):
    raise ValueError("choose at least one of rotations, reflections, translations.")
  shape = (L, L)
  img = _index_image(shape)
  gens, names = [], []
  if rotations:
    gens.append(_rot90_perm(shape)); names.append("rot")
  if reflections:
    gens.append(_flip_perm(shape)); names.append("flip")
  tx = np.roll(img, 1, axis=0).reshape(-1)
  ty = np.roll(img, 1, axis=1).reshape(-1)
  name = f"Ising {L}x{L} lattice (" + "+".join(names + (["translations"] if translations else [])) + ")"
  if translations and not gens:
    perms = _abelian_perms([tx, ty], (L, L))
    return FiniteGroup(name, _table_from_perms(perms), _perm_rep(perms, shape), None, True, (L, L))
  if gens == [] or (names == ["rot"] and not translations):
    perms = _abelian_perms(gens, (4,))
    return FiniteGroup(name, _table_from_perms(perms), _perm_rep(perms, shape), None, True, (4,))
  if translations:
    gens += [tx, ty]
  perms = _closure(gens)
  return FiniteGroup(name, _table_from_perms(perms), _perm_rep(perms, shape), None, True, None)


def cyclic_shifts_1d(length: int) -> FiniteGroup:
  """Z_length acting on 1-D signals (n, length) by cyclic shifts: element a is ``np.roll(x, a, axis=1)``."""
  if length < 2:
    raise ValueError(f"length must be >= 2, got {length}.")
  return FiniteGroup.cyclic(np.roll(np.arange(length), 1), (length,), name=f"Z{length} (cyclic shifts)")


def spin_flip(shape: Sequence[int]) -> FiniteGroup:
  """Z2 acting by ``x -> -x`` on arrays of per-example ``shape`` (the global spin flip of an Ising model).

  Commutes with every lattice symmetry, e.g. ``product_group(ising_lattice_group(L), spin_flip((L, L)))``
  is C4 × Z2 with ``cyclic_factors (4, 2)``.
  """
  shape = tuple(int(s) for s in shape)
  d = int(np.prod(shape))
  idx = np.broadcast_to(np.arange(d, dtype=np.int32)[None, :, None], (2, d, 1)).copy()
  w = np.stack([np.ones((d, 1)), -np.ones((d, 1))])
  return FiniteGroup("Z2 (spin flip)", _abelian_table((2,)), GatherRep(idx, w, shape), None, True, (2,))


def rotation_matrices_2d(k: int) -> np.ndarray:
  """(k, 2, 2) rotation matrices through 2*pi*a/k (entries snapped so that multiples of 90° are exact)."""
  th = 2 * np.pi * np.arange(k) / k
  return _snap(np.stack([np.stack([np.cos(th), -np.sin(th)], -1), np.stack([np.sin(th), np.cos(th)], -1)], -2))


def rotations_2d_points(k: int, equivariant_outputs: bool = False) -> FiniteGroup:
  """C_k acting on points of R^2 (n, 2) by exact rotation matrices (orthogonal representation).

  Args:
    k: group order.
    equivariant_outputs: if True, rho_Y is the same rotation on outputs (n, 2) (e.g. vector fields);
      otherwise the task is invariant (rho_Y = id).
  """
  mats = rotation_matrices_2d(k)
  rep_y = _matrix_rep(mats, (2,)) if equivariant_outputs else None
  return FiniteGroup(f"C{k} (2-D rotations)", _abelian_table((k,)), _matrix_rep(mats, (2,)), rep_y, True, (k,))


def cube_rotation_matrices() -> np.ndarray:
  """(24, 3, 3): the rotation group of the cube (signed permutation matrices with det +1), identity first."""
  mats = []
  for p in itertools.permutations(range(3)):
    for s in itertools.product((1.0, -1.0), repeat=3):
      m = np.zeros((3, 3))
      m[np.arange(3), p] = s
      if np.linalg.det(m) > 0:
        mats.append(m)
  mats.sort(key=lambda m: -np.trace(m))  # identity (trace 3) first
  return np.stack(mats)


def _table_from_matrices(mats: np.ndarray) -> np.ndarray:
  k = len(mats)
  lookup = {np.round(m).astype(np.int64).tobytes(): i for i, m in enumerate(mats)}
  table = np.empty((k, k), dtype=np.int32)
  for a in range(k):
    for b in range(k):
      table[a, b] = lookup[np.round(mats[a] @ mats[b]).astype(np.int64).tobytes()]
  return table


def rotate_pairs(rots: np.ndarray, x: np.ndarray) -> np.ndarray:
  """``(R a, R b)`` for rotations ``rots (r, 3, 3)`` and pairs ``x (n, 6)`` -> ``(r, n, 6)`` (rho_X = R ⊕ R)."""
  return np.einsum("rij,nkj->rnki", rots, x.reshape(-1, 2, 3)).reshape(len(rots), -1, 6)


def cube_group_so3(kind: str = "cross_product") -> FiniteGroup:
  """The 24 rotations of the cube (a finite subgroup of SO(3)).

  Args:
    kind: ``"cross_product"``: rho_X = R ⊕ R on pairs ``x = (a, b)`` of shape (n, 6), rho_Y = R on outputs
      (n, 3) (the SO(3)-equivariant task ``y = a × b``); ``"vectors"``: rho_X = R on (n, 3), rho_Y = R.

  The matrices are signed permutations, so the action is a bit-exact gather with signs.
  """
  mats = cube_rotation_matrices()
  table = _table_from_matrices(mats)

  def signed_perm_rep(ms, copies):
    big = _block_diag_rep(ms, copies)
    col = np.argmax(np.abs(big), axis=-1)
    sign = np.take_along_axis(big, col[..., None], -1)
    return GatherRep(col[..., None].astype(np.int32), sign, (big.shape[1],))

  if kind == "cross_product":
    return FiniteGroup("cube rotations (R⊕R -> R)", table, signed_perm_rep(mats, 2), signed_perm_rep(mats, 1))
  if kind == "vectors":
    return FiniteGroup("cube rotations (R -> R)", table, signed_perm_rep(mats, 1), signed_perm_rep(mats, 1))
  raise ValueError(f"kind must be 'cross_product' or 'vectors', got {kind!r}.")


def product_group(g1: FiniteGroup, g2: FiniteGroup, check_key: int = 0) -> FiniteGroup:
  """Direct product G1 × G2 of two groups acting on the same space by *commuting* actions.

  Element ``a*|G2| + b`` is ``(a, b)`` acting as ``rho1(a) rho2(b)``. The representation is stored as the
  composed gather table (m1*m2 nonzeros per row). Raises if the actions do not commute on a random input
  (e.g. rotations and translations of a lattice, which form a semidirect product: use
  :func:`ising_lattice_group`).
  """
  if g1.input_shape != g2.input_shape or g1.output_shape != g2.output_shape:
    raise ValueError(f"{g1.name} and {g2.name} act on different spaces.")
  rng = np.random.default_rng(check_key)
  x = rng.normal(size=(2,) + g1.input_shape)
  for a in range(g1.order):
    for b in range(g2.order):
      if not np.allclose(g1.act_x(a, g2.act_x(b, x)), g2.act_x(b, g1.act_x(a, x)), atol=1e-12):
        raise ValueError(f"actions of {g1.name} and {g2.name} do not commute; not a direct product.")

  def compose_rep(r1, r2):
    if r1 is None or r2 is None:
      return r2 if r1 is None else r1
    d = r1.dim
    out_idx = np.empty((k1, k2, d, r1.idx.shape[2] * r2.idx.shape[2]), dtype=np.int32)
    out_w = np.empty(out_idx.shape)
    for a in range(k1):
      for b in range(k2):
        out_idx[a, b] = r2.idx[b][r1.idx[a]].reshape(d, -1)
        out_w[a, b] = (r1.w[a][:, :, None] * r2.w[b][r1.idx[a]]).reshape(d, -1)
    return GatherRep(out_idx.reshape(k1 * k2, d, -1), out_w.reshape(k1 * k2, d, -1), r1.shape)

  k1, k2 = g1.order, g2.order
  table = (g1.table[:, None, :, None] * k2 + g2.table[None, :, None, :]).reshape(k1 * k2, k1 * k2)
  rep_x = compose_rep(g1.rep_x, g2.rep_x)  # permutation x permutation stays a bit-exact gather (m = 1)
  rep_y = None if g1.rep_y is None and g2.rep_y is None else compose_rep(g1.rep_y, g2.rep_y)
  cf = (g1.cyclic_factors + g2.cyclic_factors) if (g1.cyclic_factors and g2.cyclic_factors) else None
  return FiniteGroup(f"{g1.name} × {g2.name}", table, rep_x, rep_y, g1.exact and g2.exact, cf)
