"""HEALPix windows, merging and the relative position index."""

import healpy as hp
import jax.numpy as jnp
import numpy as np
import pytest

from healswin_jax import layers
from healswin_jax.healpix import symmetry
from healswin_jax.healpix import topology
from healswin_jax.healpix import windows


@pytest.mark.parametrize("faces", [None, tuple(range(8)), (0, 4, 8)])
@pytest.mark.parametrize("nside,ws", [(4, 4), (8, 16), (8, 64), (2, 4)])
def test_windows_are_squares_of_healpy_neighbours_and_partition_roundtrips(faces, nside, ws, keys):
  import jax  # pylint: disable=g-import-not-at-top
  n = len(topology.check_faces(faces)) * nside**2
  x = jax.random.normal(next(keys), (3, n, 5))
  w = windows.window_partition(x, ws)
  assert w.shape == (3 * n // ws, ws, 5)
  np.testing.assert_array_equal(windows.window_reverse(w, ws, 3), x)
  np.testing.assert_array_equal(w[n // ws + 1], x[1, ws:2 * ws])  # window b * N/ws + j is row b's j-th run

  s = int(np.sqrt(ws))
  f, fx, fy = topology.token_fxy(nside, faces)
  for key in (f, fx // s, fy // s):  # each window is one (face, x // s, y // s) block
    assert np.all(key.reshape(-1, ws) == key.reshape(-1, ws)[:, :1])
  # every horizontally/vertically/diagonally adjacent pair inside a window is a healpy neighbour
  nest = topology.token_to_nest(nside, faces).reshape(-1, ws)
  lx, ly = topology.local_to_xy(np.arange(ws), s)
  adj = (np.maximum(abs(lx[:, None] - lx[None]), abs(ly[:, None] - ly[None])) == 1)
  i, j = np.nonzero(adj)
  nbs = hp.get_all_neighbours(nside, nest[:, i].ravel(), nest=True)
  assert np.all((nbs == nest[:, j].ravel()[None]).any(axis=0))


@pytest.mark.parametrize("nside", [2, 8])
def test_merge_mean_is_healpy_ud_grade_nested(nside, keys, x64):
  import jax  # pylint: disable=g-import-not-at-top
  m = np.asarray(jax.random.normal(next(keys), (12 * nside**2,), dtype=jnp.float64))
  merged = windows.merge_children(jnp.asarray(m)[None, :, None])  # (1, N/4, 4)
  coarse = hp.ud_grade(m, nside // 2, order_in="NESTED", order_out="NESTED")
  np.testing.assert_allclose(np.asarray(merged[0].mean(axis=1)), coarse, rtol=0, atol=1e-14)


def test_merge_and_expand_keep_child_order(keys):
  import jax  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(next(keys), (2, 48, 3))
  merged = windows.merge_children(x)
  assert merged.shape == (2, 12, 12)
  np.testing.assert_array_equal(merged[:, 5, 6:9], x[:, 4 * 5 + 2])  # channel block j = child 4k + j
  np.testing.assert_array_equal(windows.expand_children(merged), x)
  y = jax.random.normal(next(keys), (2, 12, 8))
  np.testing.assert_array_equal(windows.merge_children(windows.expand_children(y)), y)
  np.testing.assert_array_equal(windows.expand_children(y)[:, 4 * 3 + 1], y[:, 3, 2:4])


@pytest.mark.parametrize("ws", [1, 4, 16, 64])
def test_window_rc_is_the_original_convention(ws):
  s = int(np.sqrt(ws))
  rc = windows.window_rc(ws)
  hx, hy, _ = hp.pix2xyf(s, np.arange(ws), nest=True)  # a window is one face of an nside = s grid
  np.testing.assert_array_equal(rc, np.stack([hy, s - 1 - hx], axis=1))
  assert len({tuple(r) for r in rc}) == ws  # a bijection onto the s x s grid
  if ws == 4:  # NEST 0..3 = (x, y) (0,0), (1,0), (0,1), (1,1) -> (r, c) = (0,1), (0,0), (1,1), (1,0)
    np.testing.assert_array_equal(rc, [[0, 1], [0, 0], [1, 1], [1, 0]])
  with pytest.raises(ValueError):
    rc[0, 0] = 5  # cached tables are read-only


@pytest.mark.parametrize("ws", [4, 16, 64])
def test_relative_position_index_matches_formula_and_depends_only_on_offsets(ws):
  s = int(np.sqrt(ws))
  rc = windows.window_rc(ws)
  idx, size = layers.relative_position_index(rc)
  assert size == (2 * s - 1)**2
  for n in range(0, ws, max(1, ws // 8)):
    for m in range(ws):
      expected = (rc[n, 0] - rc[m, 0] + s - 1) * (2 * s - 1) + (rc[n, 1] - rc[m, 1] + s - 1)
      assert idx[n, m] == expected
  assert idx.min() == 0 and idx.max() == (2 * s - 1)**2 - 1
  assert len(np.unique(idx)) == (2 * s - 1)**2
  offsets = rc[:, None] - rc[None]
  for k in np.unique(idx):  # one table entry per offset
    assert len({tuple(o) for o in offsets[idx == k]}) == 1


@pytest.mark.parametrize("faces", [None, tuple(range(8))])
def test_windowing_and_merging_commute_with_the_polar_rotation(faces):
  nside, ws = 8, 16
  rot = symmetry.rotate_faces_90(nside, faces)
  rot_coarse = symmetry.rotate_faces_90(nside // 2, faces)
  rot_win = symmetry.rotate_faces_90(nside // 4, faces)  # a window of 16 tokens is one pixel at nside / 4
  k = np.arange(len(rot))
  # token k of window w goes to token k of the rotated window: windows move as whole blocks, in-window order kept
  np.testing.assert_array_equal(rot, rot_win[k // ws] * ws + k % ws)
  # the 4 children of coarse token c go, in order, to the children of its image
  np.testing.assert_array_equal(rot, rot_coarse[k // 4] * 4 + k % 4)
  x = np.random.default_rng(0).normal(size=(1, len(rot), 2))
  x_rot = np.empty_like(x)
  x_rot[:, rot] = x
  merged, merged_rot = windows.merge_children(x), windows.merge_children(x_rot)
  np.testing.assert_array_equal(merged_rot[:, rot_coarse], merged)


def test_bad_window_inputs_raise():
  with pytest.raises(ValueError, match="power of 4"):
    windows.window_rc(8)
  with pytest.raises(ValueError, match="divide"):
    windows.window_partition(jnp.zeros((1, 12, 2)), 8)
  with pytest.raises(ValueError, match="merged"):
    windows.merge_children(jnp.zeros((1, 6, 2)))
