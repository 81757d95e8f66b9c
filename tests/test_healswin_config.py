"""HealSwinConfig / FlatSwinConfig: validation errors name the field and the fix; JSON round trip; stage plan."""

import dataclasses
import json

import pytest

from healswin_jax.config import FlatSwinConfig, HealSwinConfig


def test_defaults_are_valid_frozen_and_hashable():
  cfg = HealSwinConfig()
  assert cfg.faces == tuple(range(12)) and cfg.num_pixels == 12 * 16**2
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.nside = 32
  assert hash(cfg) == hash(HealSwinConfig()) and cfg == HealSwinConfig()
  assert cfg != cfg.replace(nside=32)


@pytest.mark.parametrize("cfg", [
    HealSwinConfig(nside=32, faces=(0, 4, 8), depths=(2, 2, 2), num_heads=(2, 4, 8), embed_dim=16,
                   shift_strategy="ring", attention="v1", rel_pos_bias=False, head="depth", depth_channels=2,
                   dtype="bfloat16", remat=True, drop_path_rate=0.2),
    HealSwinConfig(head="classification", num_classes=7),
])
def test_json_round_trip(cfg):
  text = cfg.to_json()
  assert isinstance(json.loads(text)["faces"], list)
  back = HealSwinConfig.from_json(text)
  assert back == cfg and isinstance(back.depths, tuple) and isinstance(back.faces, tuple)
  assert HealSwinConfig.from_dict(cfg.to_dict()) == cfg


def test_flat_json_round_trip():
  cfg = FlatSwinConfig(image_size=(32, 64), depths=(2, 2), num_heads=(2, 4), embed_dim=16)
  assert FlatSwinConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("kwargs, field, words", [
    (dict(nside=24), "nside", "power of 2"),
    (dict(nside=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8)), "nside", "too small"),
    (dict(nside=8, window_size=64, depths=(2,), num_heads=(3,)), "window_size", "larger than a face"),
    (dict(window_size=8), "window_size", "power of 4"),
    (dict(patch_size=2), "patch_size", "power of 4"),
    (dict(depths=(2, 2), num_heads=(3, 6, 12)), "num_heads", "same length"),
    (dict(embed_dim=10, depths=(2,), num_heads=(3,)), "num_heads", "not divisible"),
    (dict(faces=(0, 0, 1)), "faces", "strictly increasing"),
    (dict(faces=(3, 1)), "faces", "strictly increasing"),
    (dict(faces=(0, 12)), "faces", "0..11"),
    (dict(faces=()), "faces", "non-empty"),
    (dict(shift_strategy="nest_roll"), "shift_strategy", "one of"),
    (dict(attention="v3"), "attention", "one of"),
    (dict(head="depth", depth_channels=3), "depth_channels", "1 (depth) or 2"),
    (dict(head="segmentation", num_classes=1), "num_classes", ">= 2"),
    (dict(head="regression"), "head", "one of"),
    (dict(dtype="float16"), "dtype", "one of"),
    (dict(drop_path_rate=1.0), "drop_path_rate", "[0, 1)"),
    (dict(mlp_ratio=0), "mlp_ratio", "positive"),
    (dict(remat="yes"), "remat", "bool"),
    (dict(patch_norm=1), "patch_norm", "bool"),
    (dict(pool="attention"), "pool", "one of"),
])
def test_validation_names_field_and_fix(kwargs, field, words):
  with pytest.raises(ValueError) as err:
    HealSwinConfig(**kwargs)
  msg = str(err.value)
  assert msg.startswith(field + ":") and words in msg and "Fix:" in msg, msg


def test_flat_validation():
  with pytest.raises(ValueError, match=r"image_size: H=36 is not divisible"):
    FlatSwinConfig(image_size=(36, 64), patch_size=2, window_size=4, depths=(2, 2), num_heads=(2, 4))


def test_from_dict_rejects_unknown_fields():
  d = HealSwinConfig().to_dict()
  d["window"] = 16
  with pytest.raises(ValueError, match="unknown field"):
    HealSwinConfig.from_dict(d)


def test_stage_plan_marks_global_stages():
  # nside 16, patch 4 -> token nside 8, 4, 2, 1; ws 16 fits stages 0 and 1 only.
  cfg = HealSwinConfig(nside=16, window_size=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), embed_dim=8)
  plan = cfg.stage_plan()
  assert [p.nside for p in plan] == [8, 4, 2, 1]
  assert [p.num_tokens for p in plan] == [768, 192, 48, 12]
  assert [p.windowed for p in plan] == [True, True, False, False]
  assert [p.shifted for p in plan] == [True, True, False, False]
  assert [p.window_size for p in plan] == [16, 16, 48, 12]
  assert not any(p.shifted for p in cfg.replace(shift_strategy="none").stage_plan())


def test_drop_path_rates_linspace():
  cfg = HealSwinConfig(depths=(2, 2, 6, 2), drop_path_rate=0.11)
  rates = cfg.drop_path_rates()
  assert [len(r) for r in rates] == [2, 2, 6, 2]
  flat = [r for stage in rates for r in stage]
  assert flat[0] == 0.0 and flat[-1] == pytest.approx(0.11) and flat == sorted(flat)
