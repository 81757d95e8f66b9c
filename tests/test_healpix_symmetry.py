"""HEALPix symmetry group: exact NEST permutations checked against healpy (the oracle)."""

import healpy as hp
import numpy as np
import pytest

from healswin_jax.healpix import symmetry
from healswin_jax.healpix import topology

FACE_SETS = [tuple(range(12)), tuple(range(8)), (0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11)]


def _angles(nside, faces):
  """(theta, phi) of the map pixels of ``faces`` (map pixel i = face faces[i // nside^2])."""
  nest = (np.asarray(faces)[:, None] * nside**2 + np.arange(nside**2)[None, :]).reshape(-1)
  return hp.pix2ang(nside, nest, nest=True)


def _wrap(a):
  return np.angle(np.exp(1j * a))


@pytest.mark.parametrize("nside", [1, 2, 4, 16])
@pytest.mark.parametrize("faces", FACE_SETS)
def test_rotation_moves_pixels_by_plus_90_degrees_in_phi(nside, faces):
  dest, src = symmetry.pixel_permutations(nside, faces)
  theta, phi = _angles(nside, faces)
  for k in range(4):
    np.testing.assert_allclose(theta[dest[k]], theta, atol=1e-12)
    np.testing.assert_allclose(_wrap(phi[dest[k]] - phi - k * np.pi / 2), 0.0, atol=1e-12)
    # src is the gather form: the rotated map at pixel j holds the original value at src[k, j].
    np.testing.assert_array_equal(dest[k][src[k]], np.arange(dest.shape[1]))


@pytest.mark.parametrize("nside", [1, 2, 8, 32])
def test_reflection_maps_theta_to_pi_minus_theta(nside):
  dest, _ = symmetry.pixel_permutations(nside, None, reflection=True)
  theta, phi = _angles(nside, symmetry.ALL_FACES)
  for g in range(8):
    k, m = g % 4, g // 4
    expected_theta = np.pi - theta if m else theta
    np.testing.assert_allclose(theta[dest[g]], expected_theta, atol=1e-12)
    np.testing.assert_allclose(_wrap(phi[dest[g]] - phi - k * np.pi / 2), 0.0, atol=1e-12)


def test_reflected_xy_matches_healpy_pix2xyf():
  nside = 8
  dest, _ = symmetry.pixel_permutations(nside, None, reflection=True)
  x, y, f = hp.pix2xyf(nside, np.arange(12 * nside**2), nest=True)
  x2, y2, f2 = hp.pix2xyf(nside, dest[4], nest=True)
  np.testing.assert_array_equal(x2, nside - 1 - y)
  np.testing.assert_array_equal(y2, nside - 1 - x)
  np.testing.assert_array_equal(f2, symmetry.reflect_face(f))


@pytest.mark.parametrize("reflection", [False, True])
def test_permutations_form_a_homomorphism(reflection):
  nside = 4
  faces = None if reflection else tuple(range(8))
  dest, src = symmetry.pixel_permutations(nside, faces, reflection=reflection)
  table = symmetry.group_table(reflection)
  order = 8 if reflection else 4
  assert table.shape == (order, order) and dest.shape[0] == order
  np.testing.assert_array_equal(dest[0], np.arange(dest.shape[1]))
  for g in range(order):
    assert sorted(dest[g].tolist()) == list(range(dest.shape[1]))  # a permutation
    for h in range(order):
      # Moving pixels by h then by g equals moving them by g o h ...
      np.testing.assert_array_equal(dest[g][dest[h]], dest[table[g, h]])
      # ... and so does acting on maps with the gathers: g.(h.m) = (g h).m.
      m = np.arange(dest.shape[1]) * 1.5
      np.testing.assert_array_equal(m[src[h]][src[g]], m[src[table[g, h]]])
  # Every element has an inverse and r, s commute (C4 x Z2 is abelian).
  assert all((table[g] == 0).sum() == 1 for g in range(order))
  np.testing.assert_array_equal(table, table.T)


@pytest.mark.parametrize("nside", [2, 8])
def test_reflect_local_nest_is_an_involution(nside):
  local = np.arange(nside**2)
  once = symmetry.reflect_local_nest(local, nside)
  assert sorted(once.tolist()) == local.tolist()
  np.testing.assert_array_equal(symmetry.reflect_local_nest(once, nside), local)


def test_rotation_preserves_healpy_neighbourhoods():
  """An isometry of the grid: neighbours of p move to neighbours of r(p) (full sphere)."""
  nside = 4
  dest, _ = symmetry.pixel_permutations(nside, None, reflection=True)
  nb = hp.get_all_neighbours(nside, np.arange(12 * nside**2), nest=True)  # (8, N), -1 = none
  for g in (1, 4, 7):
    for p in range(12 * nside**2):
      moved = {int(dest[g][q]) for q in nb[:, p] if q >= 0}
      target = {int(q) for q in nb[:, dest[g][p]] if q >= 0}
      assert moved == target


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match="not closed under the 90-degree"):
    symmetry.pixel_permutations(4, (0, 1, 2))
  with pytest.raises(ValueError, match="equatorial reflection"):
    symmetry.pixel_permutations(4, tuple(range(8)), reflection=True)
  with pytest.raises(ValueError, match="power of 2"):
    symmetry.pixel_permutations(6)
  with pytest.raises(ValueError, match="strictly increasing"):
    symmetry.pixel_permutations(4, (1, 0, 2, 3))
  # 4..7 alone is reflection-closed (the equatorial faces map to themselves).
  dest, _ = symmetry.pixel_permutations(4, (4, 5, 6, 7), reflection=True)
  assert dest.shape == (8, 64)


def test_element_names():
  assert [symmetry.element_name(g) for g in range(8)] == ["e", "r", "r^2", "r^3", "s", "r s", "r^2 s", "r^3 s"]


@pytest.mark.parametrize("faces", [None, tuple(range(8)), (4, 5, 6, 7), (8, 9, 10, 11)])
def test_rotate_faces_90_is_phi_plus_90_degrees(faces):
  nside = 4
  dest = symmetry.rotate_faces_90(nside, faces)
  nest = topology.token_to_nest(nside, faces)
  theta, phi = hp.pix2ang(nside, nest, nest=True)
  np.testing.assert_allclose(theta[dest], theta, atol=1e-12)
  np.testing.assert_allclose(np.angle(np.exp(1j * (phi[dest] - phi - np.pi / 2))), 0.0, atol=1e-12)
  np.testing.assert_array_equal(np.sort(dest), np.arange(len(nest)))
  with pytest.raises(ValueError, match="rows of four"):
    symmetry.rotate_faces_90(4, (0, 4, 8))
