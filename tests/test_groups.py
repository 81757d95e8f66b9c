"""ntk.groups and ntk.metrics.equivariance_error: homomorphism, inverses, orbits, augmentation order."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntk import groups as G
from ntk.metrics import equivariance_error, orbit_equivariance_errors

EXACT_GROUPS = {
    "c4": lambda: G.rotations_c4((5, 5)),
    "c4_channels": lambda: G.rotations_c4((4, 4, 2)),
    "ck4_is_rot90": lambda: G.rotations_ck(4, (6, 6)),
    "d4": lambda: G.dihedral_d4((5, 5, 2)),
    "ising_rot": lambda: G.ising_lattice_group(4),
    "ising_d4": lambda: G.ising_lattice_group(4, reflections=True),
    "ising_translations": lambda: G.ising_lattice_group(3, rotations=False, translations=True),
    "ising_p4m": lambda: G.ising_lattice_group(3, reflections=True, translations=True),
    "shifts": lambda: G.cyclic_shifts_1d(6),
    "points_c8": lambda: G.rotations_2d_points(8, equivariant_outputs=True),
    "cube_cross": lambda: G.cube_group_so3("cross_product"),
    "cube_vectors": lambda: G.cube_group_so3("vectors"),
    "spin_flip": lambda: G.spin_flip((3, 3)),
    "product": lambda: G.product_group(G.ising_lattice_group(3), G.spin_flip((3, 3))),
}


def _x(group, n=3, seed=0):
  return np.random.default_rng(seed).normal(size=(n,) + group.input_shape)


@pytest.mark.parametrize("name", sorted(EXACT_GROUPS))
def test_homomorphism_inverse_identity(name):
  group = EXACT_GROUPS[name]()
  x = _x(group)
  assert group.exact
  np.testing.assert_array_equal(group.act_x(0, x), x)
  # Orthogonal matrices with irrational entries (C8 on points) compose up to round-off; the rest bit-exactly.
  tol = 1e-14 if name == "points_c8" else 0.0
  for a in range(group.order):
    xa = group.act_x(a, x)
    np.testing.assert_allclose(group.act_x(group.inverse(a), xa), x, rtol=0, atol=tol)
    assert group.compose(a, group.inverse(a)) == 0
    for b in range(group.order):
      np.testing.assert_allclose(group.act_x(a, group.act_x(b, x)), group.act_x(group.compose(a, b), x),
                                 rtol=0, atol=tol)
  if group.rep_y is not None:
    y = np.random.default_rng(1).normal(size=(3,) + group.output_shape)
    for a in range(group.order):
      for b in range(0, group.order, 3):
        np.testing.assert_allclose(group.act_y(a, group.act_y(b, y)), group.act_y(group.compose(a, b), y),
                                   rtol=0, atol=tol)


@pytest.mark.parametrize("name", sorted(EXACT_GROUPS))
def test_representation_is_orthogonal_and_faithful(name):
  group = EXACT_GROUPS[name]()
  mats = np.stack([group.matrix_x(a) for a in range(group.order)])
  d = mats.shape[-1]
  np.testing.assert_allclose(mats @ np.swapaxes(mats, -1, -2), np.broadcast_to(np.eye(d), mats.shape), atol=1e-14)
  assert len({m.round(12).tobytes() for m in mats}) == group.order


def test_orders_and_structure():
  assert G.ising_lattice_group(4).order == 4
  assert G.ising_lattice_group(4, reflections=True).order == 8
  assert G.ising_lattice_group(3, rotations=False, translations=True).cyclic_factors == (3, 3)
  assert G.ising_lattice_group(3, reflections=True, translations=True).order == 8 * 9
  assert G.ising_lattice_group(4, translations=True).order == 4 * 16
  assert not G.dihedral_d4((3, 3)).is_abelian
  assert G.product_group(G.ising_lattice_group(3), G.spin_flip((3, 3))).cyclic_factors == (4, 2)
  cube = G.cube_rotation_matrices()
  assert cube.shape == (24, 3, 3)
  np.testing.assert_allclose(np.linalg.det(cube), 1.0)
  np.testing.assert_array_equal(cube[0], np.eye(3))


def test_c4_matches_rot90_and_translations_match_roll():
  x = _x(G.rotations_c4((5, 5)))
  c4 = G.rotations_c4((5, 5))
  for a in range(4):
    np.testing.assert_array_equal(c4.act_x(a, x), np.rot90(x, a, axes=(1, 2)))
  tr = G.ising_lattice_group(3, rotations=False, translations=True)
  s = _x(tr)
  for a in range(9):
    np.testing.assert_array_equal(tr.act_x(a, s), np.roll(s, np.unravel_index(a, (3, 3)), axis=(1, 2)))
  np.testing.assert_array_equal(G.cyclic_shifts_1d(5).act_x(2, np.arange(5.0)[None]), [[3.0, 4.0, 0.0, 1.0, 2.0]])


def test_cube_cross_product_is_equivariant():
  cube = G.cube_group_so3("cross_product")
  x = _x(cube, 5)
  cross = lambda v: np.cross(v[:, :3], v[:, 3:])
  assert equivariance_error(cross, cube, x) < 1e-15
  # ...and a non-equivariant map is caught.
  assert equivariance_error(lambda v: v[:, :3] + 1.0, cube, x) > 0.1


def test_interpolated_rotation_is_approximate_but_close_on_smooth_images():
  c8 = G.rotations_ck(8, (21, 21))
  assert not c8.exact and c8.cyclic_factors == (8,)
  ii, jj = np.meshgrid(np.arange(21) - 10.0, np.arange(21) - 10.0, indexing="ij")
  blob = np.exp(-((ii - 2.0) ** 2 + (jj + 1.0) ** 2) / 18.0)[None]
  two_45 = c8.act_x(1, c8.act_x(1, blob))
  assert np.max(np.abs(two_45 - np.rot90(blob, 1, axes=(1, 2)))) < 0.05   # interpolation blur only
  assert np.max(np.abs(c8.act_x(2, blob) - np.rot90(blob, 1, axes=(1, 2)))) < 1e-12  # 90° is exact
  noise = _x(c8, 2)
  assert np.max(np.abs(c8.act_x(1, c8.act_x(1, noise)) - c8.act_x(2, noise))) > 0.1  # not a homomorphism


def test_orbit_and_group_major_augmentation():
  group = G.rotations_2d_points(4, equivariant_outputs=True)
  x, y = _x(group, 5), _x(group, 5, seed=3)
  orbit = group.orbit(x)
  assert orbit.shape == (4, 5, 2)
  x_aug, y_aug = G.augment_full_orbit(group, x, y)
  assert x_aug.shape == (20, 2) and y_aug.shape == (20, 2)
  for a in range(4):
    np.testing.assert_array_equal(orbit[a], group.act_x(a, x))
    np.testing.assert_array_equal(x_aug[a * 5:(a + 1) * 5], group.act_x(a, x))
    np.testing.assert_array_equal(y_aug[a * 5:(a + 1) * 5], group.act_y(a, y))
  inv = G.rotations_c4((3, 3))
  xi, yi = _x(inv, 2), np.arange(2.0)[:, None]
  _, y_aug = G.augment_full_orbit(inv, xi, yi)
  np.testing.assert_array_equal(y_aug[:, 0], np.tile([0.0, 1.0], 4))


def test_jnp_jit_and_traced_element_match_numpy():
  group = G.dihedral_d4((4, 4, 1))
  x = _x(group).astype(np.float32)
  jitted = jax.jit(group.act_x, static_argnums=0)
  traced = jax.jit(group.act_x)
  for a in range(group.order):
    np.testing.assert_array_equal(np.asarray(jitted(a, jnp.asarray(x))), group.act_x(a, x))
    np.testing.assert_array_equal(np.asarray(traced(jnp.int32(a), jnp.asarray(x))), group.act_x(a, x))
  c16 = G.rotations_ck(16, (6, 6))
  xs = _x(c16).astype(np.float32)
  np.testing.assert_allclose(np.asarray(jax.jit(lambda v: c16.act_x(3, v))(jnp.asarray(xs))), c16.act_x(3, xs),
                             atol=1e-6)
  np.testing.assert_allclose(np.asarray(c16.orbit(jnp.asarray(xs))), c16.orbit(xs), atol=1e-6)


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match="H == W"):
    G.rotations_c4((4, 5))
  with pytest.raises(ValueError, match="expected a batch"):
    G.rotations_c4((4, 4)).act_x(1, np.zeros((4, 4)))
  with pytest.raises(ValueError, match="do not commute"):
    G.product_group(G.ising_lattice_group(3), G.ising_lattice_group(3, rotations=False, translations=True))
  with pytest.raises(ValueError, match="not a permutation"):
    G.rotations_2d_points(4).perm_x(1)
  with pytest.raises(ValueError, match="rows"):
    G.augment_full_orbit(G.cyclic_shifts_1d(3), np.zeros((2, 3)), np.zeros((3, 1)))


def test_equivariance_error_values():
  c4 = G.rotations_c4((4, 4))
  x = _x(c4, 4)
  assert equivariance_error(lambda v: v.sum(axis=(1, 2))[:, None], c4, x) < 1e-15   # invariant
  err = equivariance_error(lambda v: v[:, :1, 0], c4, x)                            # a corner pixel
  assert err > 0.1
  # Constant-zero predictor (the infinite ensemble at t = 0): error 0, not 0/0.
  assert equivariance_error(lambda v: np.zeros((v.shape[0], 3)), c4, x) == 0.0
  # Known value: f(x) = first pixel times (1, 0); relative error |x_g - x| / |x|.
  errs = orbit_equivariance_errors(np.stack([np.stack([v[:, 0, 0], 0 * v[:, 0, 0]], -1) for v in c4.orbit(x)]), c4)
  manual = np.abs(c4.orbit(x)[:, :, 0, 0] - x[None, :, 0, 0]) / np.abs(x[None, :, 0, 0])
  np.testing.assert_allclose(errs, manual, rtol=1e-12)


# -- Public constructors and the table check ----------------------------------------------------------------------


def _rolls(length, step, count):
  return np.stack([np.roll(np.arange(length), step * a) for a in range(count)])


def test_from_permutations_derives_the_table_and_cyclic_matches_it():
  """C6 shifting length-12 signals by 2: all elements, or one generator, give the same group."""
  listed = G.FiniteGroup.from_permutations(_rolls(12, 2, 6), (12,), name="C6", cyclic_factors=(6,))
  gen = G.FiniteGroup.cyclic(np.roll(np.arange(12), 2), (12,))
  assert gen.order == 6 and gen.cyclic_factors == (6,) and gen.name == "Z6"
  np.testing.assert_array_equal(listed.table, gen.table)
  x = _x(gen)
  for a in range(6):
    np.testing.assert_array_equal(gen.act_x(a, x), np.roll(x, 2 * a, axis=1))
  # Equivariant outputs: the same shift on (n, 12) outputs, given by its own generator.
  eq = G.FiniteGroup.cyclic(np.roll(np.arange(12), 2), (12,), output_generator=np.roll(np.arange(6), 1))
  np.testing.assert_array_equal(eq.act_y(2, np.arange(6.0)[None]), np.roll(np.arange(6.0), 2)[None])


def test_constructors_reject_what_is_not_a_group():
  with pytest.raises(ValueError, match="not closed"):   # 6 shifts by 1 of a length-12 signal
    G.FiniteGroup.from_permutations(_rolls(12, 1, 6), (12,))
  with pytest.raises(ValueError, match="multi-index order"):   # Z2 x Z2 rows labelled Z4
    G.FiniteGroup.from_permutations(G.ising_lattice_group(2, rotations=False, translations=True).rep_x.idx[..., 0],
                                    (2, 2), cyclic_factors=(4,))
  with pytest.raises(ValueError, match="permutation of 0..3"):
    G.FiniteGroup.from_permutations(np.array([[0, 1, 2, 3], [0, 0, 1, 2]]), (4,))
  with pytest.raises(ValueError, match="does not have order 3"):
    G.FiniteGroup.cyclic(np.roll(np.arange(6), 2), (6,), output_generator=np.roll(np.arange(2), 1))


def test_table_is_checked_against_the_representation():
  """A hand-written table that does not describe rho raises and names the offending pair."""
  rep = G.GatherRep(_rolls(12, 1, 6)[:, :, None].astype(np.int32), np.ones((6, 12, 1)), (12,))
  with pytest.raises(ValueError, match=r"rho\(1\) rho\(5\) != rho\(table\[1, 5\] = 0\)"):
    G.FiniteGroup("Z6?", G._abelian_table((6,)), rep, None, True, (6,))
  # An approximate (interpolated) representation is not a homomorphism and is not checked.
  assert not G.rotations_ck(8, (5, 5)).exact


def test_split_orbit():
  f = np.arange(2 * 12 * 3).reshape(2, 12, 3)       # (T, |G| n, out) with |G| = 4, n = 3
  s = G.split_orbit(f, 4, axis=-2)
  assert s.shape == (2, 4, 3, 3)
  np.testing.assert_array_equal(s[:, 1, 2], f[:, 1 * 3 + 2])
  with pytest.raises(ValueError, match="not a multiple of the group order 5"):
    G.split_orbit(f, 5, axis=1)
