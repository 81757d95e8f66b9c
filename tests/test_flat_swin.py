"""Flat Swin U-Net baseline: the same blocks as HEAL-SWIN on (H, W) images with roll-based cyclic shift."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from healswin_jax import layers
from healswin_jax.config import FlatSwinConfig
from healswin_jax.flat_swin import (FlatSwinClassifier, FlatSwinUNet, flat_grid, flat_layout, square_group,
                                    square_ungroup)

CFG = FlatSwinConfig(image_size=(8, 16), patch_size=2, window_size=2, embed_dim=8, depths=(2, 2),
                     num_heads=(2, 2), num_classes=5)


def test_group_ungroup_round_trip_and_order():
  h, w, s = 4, 6, 2
  x = jnp.arange(h * w, dtype=jnp.float32).reshape(1, h * w, 1)
  g = square_group(h, w, s)(x)
  assert g.shape == (1, (h // s) * (w // s), s * s, 1)
  # Window 1 is the second 2x2 square of the first row band: tokens (0,2),(0,3),(1,2),(1,3) row-major.
  np.testing.assert_array_equal(np.asarray(g[0, 1, :, 0]), [2, 3, 8, 9])
  np.testing.assert_array_equal(np.asarray(square_ungroup(h, w, s)(g)), np.asarray(x))


def test_relative_position_index_is_swin_convention():
  s = 3
  rc = np.stack(np.divmod(np.arange(s * s), s), axis=-1)
  idx, size = layers.relative_position_index(rc)
  assert size == (2 * s - 1)**2 and idx.shape == (s * s, s * s)
  for n in range(s * s):
    for m in range(s * s):
      dr, dc = rc[n] - rc[m]
      assert idx[n, m] == (dr + s - 1) * (2 * s - 1) + (dc + s - 1)
  assert idx[0, 0] == idx[4, 4] == (s - 1) * (2 * s - 1) + (s - 1)  # zero offset shares one entry


def test_roll_mask_only_joins_true_neighbours():
  """Same-label tokens in a rolled window were within one window-width of each other before the roll (no
  wrap-around), and every window touching the wrap-around is masked."""
  h, w, s = 8, 12, 4
  lay = flat_layout(h, w, s, shift=True)
  pos = jnp.stack(jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij"), -1).reshape(1, h * w, 2)
  win_pos = np.asarray(lay.partition(lay.shift(pos.astype(jnp.float32))))[0]  # (nW, ws, 2) original (r, c)
  same = lay.same_region
  assert same is not None and same.shape == (lay.num_windows, s * s, s * s)
  dist = np.abs(win_pos[:, :, None, :] - win_pos[:, None, :, :]).max(-1)
  assert dist[same].max() < s  # no same-label pair spans the image border
  assert np.all(dist[~same] >= s)  # and every masked pair does
  # Interior windows are unmasked, the last row/column of windows is split into regions.
  assert same.reshape(h // s, w // s, -1)[:-1, :-1].all()
  assert not same.reshape(h // s, w // s, -1)[-1, -1].all()


def test_shift_round_trip():
  lay = flat_layout(8, 8, 4, shift=True)
  x = jax.random.normal(jax.random.key(0), (2, 64, 3))
  np.testing.assert_array_equal(np.asarray(lay.unshift(lay.shift(x))), np.asarray(x))
  assert not flat_layout(4, 4, 4, shift=True).can_shift  # one window: nothing to shift


@pytest.fixture(scope="module")
def model_and_params():
  model = FlatSwinUNet(CFG)
  x = jax.random.normal(jax.random.key(0), (3, 8, 16, 3))
  return model, jax.jit(model.init)(jax.random.key(1), x[:1])["params"], x


def test_unet_shape_jit_and_batch_of_one(model_and_params):
  model, params, x = model_and_params
  y = model.apply({"params": params}, x)
  assert y.shape == (3, 8, 16, 5) and y.dtype == jnp.float32
  yj = jax.jit(model.apply)({"params": params}, x)
  np.testing.assert_allclose(np.asarray(yj), np.asarray(y), rtol=1e-4, atol=1e-4)
  y1 = model.apply({"params": params}, x[1:2])
  np.testing.assert_allclose(np.asarray(y1[0]), np.asarray(y[1]), rtol=1e-4, atol=1e-4)


def test_grid_matches_config():
  grid = flat_grid(CFG)
  assert [lay.num_tokens for lay in grid.layouts] == [4 * 8, 2 * 4]
  assert all(lay.can_shift and lay.shift_labels is not None for lay in grid.layouts)
  assert flat_grid(CFG) is grid  # cached


def test_classifier_and_bad_input():
  cfg = CFG.replace(head="classification", num_classes=4)
  model = FlatSwinClassifier(cfg)
  x = jax.ShapeDtypeStruct((2, 8, 16, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert jax.eval_shape(model.apply, variables, x).shape == (2, 4)
  with pytest.raises(ValueError, match=r"expects input \(B, 8, 16, 3\)"):
    jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32))
