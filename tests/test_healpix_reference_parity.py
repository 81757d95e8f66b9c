"""Reference parity with the original torch HEAL-SWIN shifts.

Golden arrays: ``tests/data/healswin_reference_shifts.npz``, made by ``scripts/make_reference_shifts.py`` from
the original ``NestGridShift`` / ``RingShift`` (JanEGerken/HEAL-SWIN, ``heal_swin/models_torch/hp_shifting.py``)
on the original's 8 upper base pixels, token nside 8 and 16, windows of 4 and 16 tokens (and 64 at nside 16,
the paper's window), ring step sqrt(ws) / 2. Neither torch nor the original code is needed here.

What must agree, and does exactly: the gather index of the shift and of its inverse, and which query/key pairs
of every shifted window may attend (the labels' values are arbitrary: ours are 0..3 for grid, the original's
0 and 5..12; ring labels are equal as values too). The one intended difference is the additive mask constant:
the original's -100 leaks at the Swin-V2 cosine clamp, ours is
:data:`layers.MASK_VALUE` = -1e9.
"""

import json
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from healswin_jax import model
from healswin_jax.config import HealSwinConfig
from healswin_jax import layers
from healswin_jax.healpix import shifting

GOLDEN = pathlib.Path(__file__).parent / "data" / "healswin_reference_shifts.npz"
UPPER_FACES = tuple(range(8))  # the original's base_pix = 8: NEST pixels [0, 8 nside^2)
GEOMETRIES = [(8, 4), (8, 16), (16, 4), (16, 16), (16, 64)]  # (token nside, window size)
STRATEGIES = ["grid", "ring"]  # the original's nest_grid_shift and ring_shift


@pytest.fixture(scope="module")
def golden():
  with np.load(GOLDEN) as data:
    return {k: data[k] for k in data.files}


def _ref(golden, strategy, nside, ws, what):
  return golden[f"{strategy}_nside{nside}_ws{ws}_{what}"]


def test_golden_file_covers_the_spec_geometries(golden):
  meta = json.loads(str(golden["meta"]))
  assert meta["commit"] == "0d5ec8f5971a85f63aeff697e0c8a868ea836ebf"
  assert {tuple(g) for g in meta["geometries"]} == set(GEOMETRIES)
  for strategy in STRATEGIES:
    for nside, ws in GEOMETRIES:
      n = len(UPPER_FACES) * nside**2
      assert _ref(golden, strategy, nside, ws, "src").shape == (n,)
      assert _ref(golden, strategy, nside, ws, "attn_mask").shape == (n // ws, ws, ws)
  assert GOLDEN.stat().st_size < 200_000


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("nside,ws", GEOMETRIES)
def test_shift_and_inverse_indices_equal_the_original(golden, strategy, nside, ws):
  t = shifting.build_shift(nside, UPPER_FACES, ws, strategy)
  np.testing.assert_array_equal(t.src, _ref(golden, strategy, nside, ws, "src"))
  np.testing.assert_array_equal(t.inv, _ref(golden, strategy, nside, ws, "inv"))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("nside,ws", GEOMETRIES)
def test_labels_induce_the_original_attention_pattern(golden, strategy, nside, ws):
  t = shifting.build_shift(nside, UPPER_FACES, ws, strategy)
  ref_labels = _ref(golden, strategy, nside, ws, "labels")
  ref_same = layers.same_region(ref_labels, ws)
  np.testing.assert_array_equal(ref_same, _ref(golden, strategy, nside, ws, "attn_mask") == 0)
  np.testing.assert_array_equal(layers.same_region(t.labels, ws), ref_same)
  # Equivalently, within each window the label values correspond one to one.
  for ours, theirs in zip(t.window_labels, ref_labels.reshape(-1, ws)):
    pairs = set(zip(ours.tolist(), theirs.tolist()))
    assert len(pairs) == len(set(ours.tolist())) == len(set(theirs.tolist()))
  assert t.needs_mask == bool(np.any(~ref_same))
  if strategy == "ring":  # same rule (1 + face for orphans), so the same values
    np.testing.assert_array_equal(t.labels, ref_labels)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("nside,ws", [(8, 16), (16, 64)])
def test_attention_mask_differs_only_in_the_constant(golden, strategy, nside, ws):
  # Intended difference: the original adds -100 across regions, which leaks once the
  # cosine logits reach +-100; ours adds MASK_VALUE = -1e9, zero weight in float32 and bfloat16.
  t = shifting.build_shift(nside, UPPER_FACES, ws, strategy)
  ref = _ref(golden, strategy, nside, ws, "attn_mask").astype(np.float32)
  assert set(np.unique(ref).tolist()) == {-100.0, 0.0}
  # WindowAttention's mask applied to zero logits is its additive form, the original's attn_mask.
  ours = np.asarray(layers.mask_logits(jnp.zeros(ref.shape, jnp.float32), layers.same_region(t.labels, ws)))
  np.testing.assert_array_equal(ours, np.where(ref == -100.0, np.float32(layers.MASK_VALUE), 0.0))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_model_stages_on_the_original_faces_use_the_original_tables(golden, strategy):
  # The model's own path: 8 faces at nside 64 with patch 16 gives token nside 16 and 8 with 4x4 windows.
  cfg = HealSwinConfig(nside=64, patch_size=16, faces=UPPER_FACES, window_size=16, depths=(2, 2),
                       num_heads=(1, 2), embed_dim=8, shift_strategy=strategy)
  layouts = model.healpix_grid(cfg).layouts
  for plan, layout in zip(cfg.stage_plan(), layouts):
    assert plan.shifted
    n, ws = plan.num_tokens, plan.window_size
    x = jnp.arange(n, dtype=jnp.float32).reshape(1, n, 1)
    np.testing.assert_array_equal(np.asarray(layout.shift(x))[0, :, 0], _ref(golden, strategy, plan.nside, ws, "src"))
    np.testing.assert_array_equal(np.asarray(layout.unshift(x))[0, :, 0], _ref(golden, strategy, plan.nside, ws, "inv"))
    same = layout.shift_labels[:, :, None] == layout.shift_labels[:, None, :]
    np.testing.assert_array_equal(same, _ref(golden, strategy, plan.nside, ws, "attn_mask") == 0)
