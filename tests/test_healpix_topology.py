"""healswin_jax.healpix.topology against healpy (the independent oracle)."""

import healpy as hp
import numpy as np
import pytest

from healswin_jax.healpix import topology

NSIDES = [1, 2, 4, 8, 16]


@pytest.mark.parametrize("nside", NSIDES)
def test_nest_fxy_matches_healpy_and_inverts(nside):
  pix = np.arange(12 * nside**2)
  f, x, y = topology.nest_to_fxy(nside, pix)
  hx, hy, hf = hp.pix2xyf(nside, pix, nest=True)
  np.testing.assert_array_equal(f, hf)
  np.testing.assert_array_equal(x, hx)
  np.testing.assert_array_equal(y, hy)
  np.testing.assert_array_equal(topology.fxy_to_nest(nside, f, x, y), pix)
  np.testing.assert_array_equal(topology.fxy_to_nest(nside, hf, hx, hy), hp.xyf2pix(nside, hx, hy, hf, nest=True))


@pytest.mark.parametrize("nside", NSIDES)
def test_neighbours_match_get_all_neighbours_for_every_pixel(nside):
  pix = np.arange(12 * nside**2)
  np.testing.assert_array_equal(topology.neighbours(nside, pix), hp.get_all_neighbours(nside, pix, nest=True))


def test_adjacency_is_symmetric_with_missing_diagonals_only_at_three_face_corners():
  nside = 8
  pix = np.arange(12 * nside**2)
  nb = topology.neighbours(nside, pix)
  a = np.repeat(pix[None], 8, axis=0)[nb >= 0]
  b = nb[nb >= 0]
  pairs = set(zip(a.tolist(), b.tolist()))
  assert all((q, p) in pairs for p, q in pairs)
  # 24 three-face corners (8 polar E/W corners shared with equatorial N/S corners): one missing entry each
  # for the 3 corner pixels meeting there.
  assert np.count_nonzero(nb < 0) == 24


@pytest.mark.parametrize("nside", NSIDES)
def test_ring_order_matches_healpy(nside):
  pix = np.arange(12 * nside**2)
  np.testing.assert_array_equal(topology.nest_to_ring(nside, pix), hp.nest2ring(nside, pix))
  np.testing.assert_array_equal(topology.ring_to_nest(nside, pix), hp.ring2nest(nside, pix))


def test_walk_resolves_one_face_step_like_repeated_healpy_steps():
  # Walking (x - 3, y) from the SW edge of every face equals 3 healpy "SW" steps where the orientation is kept.
  nside, steps = 8, 3
  f, x, y = topology.token_fxy(nside)
  g, xn, yn = topology.walk(nside, f, x - steps, y)
  p = topology.token_to_nest(nside)
  for _ in range(steps):
    p = hp.get_all_neighbours(nside, p, nest=True)[0]
  same_orientation = f // 4 != 2  # SW of a south-polar face turns about the pole
  np.testing.assert_array_equal(topology.fxy_to_nest(nside, g, xn, yn)[same_orientation], p[same_orientation])
  with pytest.raises(ValueError, match="one face step"):
    topology.walk(nside, f, x + 2 * nside, y)


@pytest.mark.parametrize("faces", [None, (0, 4, 8), (5,), (1, 2, 3, 9, 11)])
def test_tokens_are_nest_order_restricted_to_faces(faces):
  nside = 4
  nest = topology.token_to_nest(nside, faces)
  f, x, y = topology.token_fxy(nside, faces)
  np.testing.assert_array_equal(topology.fxy_to_nest(nside, f, x, y), nest)
  np.testing.assert_array_equal(topology.fxy_to_token(nside, faces, f, x, y), np.arange(len(nest)))
  assert np.all(np.diff(nest) > 0)
  unused = [g for g in range(12) if g not in topology.check_faces(faces)]
  if unused:
    assert topology.fxy_to_token(nside, faces, np.array([unused[0]]), np.array([0]), np.array([0]))[0] == -1


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match="power of 2"):
    topology.check_nside(12)
  with pytest.raises(ValueError, match="strictly increasing"):
    topology.check_faces((3, 1))
  with pytest.raises(ValueError, match="strictly increasing"):
    topology.check_faces((0, 12))
