"""Run configs (``ml_collections``) of the HEAL-SWIN experiments: the shared defaults (:func:`base_config`), the
fisheye-scene setting of the segmentation, depth and comparison experiments (:func:`scene_config`) and the flat
Swin that matches a HEAL-SWIN model (:func:`flat_model_config`). :func:`healswin_jax.train.train_and_evaluate`
takes these configs; :mod:`healswin_jax.presets` adds the comparison's recipes on top.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import ml_collections

from healswin_jax.config import MODEL_SIZES, HealSwinConfig

# HealSwinConfig fields that the data and the task decide (:func:`model_config` fills them in), so they are not
# part of ``config.model``: nside and faces live once, in ``config.data``.
DATA_MODEL_FIELDS = ("nside", "faces", "head", "in_channels", "num_classes", "depth_channels")


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by the experiments (each experiment overrides what it needs).

  ``model`` holds :class:`HealSwinConfig`'s defaults (the one source of model defaults) except the fields the
  data decide (:data:`DATA_MODEL_FIELDS`), with a smaller model than the paper's for CPU-sized runs.
  """
  defaults = HealSwinConfig()
  model = {k: (tuple(v) if isinstance(v, list) else v) for k, v in defaults.to_dict().items()
           if k not in DATA_MODEL_FIELDS}
  model.update(MODEL_SIZES["small"])  # CPU scale: 3 stages of 32 / 64 / 128 channels, 2x2-token windows
  c = ml_collections.ConfigDict()
  c.task = "segmentation"
  c.seed = 0
  c.num_steps = 200
  c.batch_size = 4
  c.eval_batch_size = 8
  c.checkpoint_every = 50
  c.log_every = 10
  c.progress = True
  c.data = ml_collections.ConfigDict(dict(
      source="synthetic", num_train=64, num_test=16, seed=0, nside=defaults.nside, faces=tuple(range(8)),
      image_width=128, image_height=96, camera="woodscape_fv", train_fraction=1.0, root="", cache_dir="",
      cam_pos="", num_classes=8, setting="nr_nr", half_extent_deg=45.0))
  c.model = ml_collections.ConfigDict(dict(kind="healswin", **model))
  c.optim = ml_collections.ConfigDict(dict(name="adamw", lr=2e-3, warmup_steps=10, final_lr_ratio=0.05,
                                           weight_decay=1e-4, grad_clip=1.0))
  # outside_image: sphere pixels that see no image are void; "void" keeps them in the segmentation loss (the
  # original), "ignore" drops them (the flat model never sees them either, so comparisons are like for like).
  c.loss = ml_collections.ConfigDict(dict(class_weights="enet", depth="mse", outside_image="ignore"))
  return c


def scene_config(quick: bool) -> ml_collections.ConfigDict:
  """The fisheye-scene segmentation setting shared by the HEAL-SWIN experiments (segmentation, depth, HEAL-SWIN
  vs flat Swin): :func:`base_config` with the data, model and schedule of quick mode (about a minute on 2 CPU
  cores) or full mode."""
  c = base_config()
  c.task = "segmentation"
  if quick:
    c.num_steps = 200
    c.batch_size = 4
    c.checkpoint_every = 100
    c.data.update(num_train=40, num_test=8, nside=16, image_width=64, image_height=48)
    c.model.update(embed_dim=24, depths=(2, 2), num_heads=(2, 4), mlp_ratio=2.0)
    c.optim.update(lr=3e-3, warmup_steps=10)
  else:
    c.num_steps = 2000
    c.batch_size = 8
    c.checkpoint_every = 200
    c.data.update(num_train=400, num_test=80, nside=32, image_width=128, image_height=96)
    c.model.update(MODEL_SIZES["full"])
    c.optim.update(lr=1e-3, warmup_steps=100)
  return c


def flat_model_config(sphere_model: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """The flat Swin matching a HEAL-SWIN model config: same widths/depths/heads/attention; patch and window
  given as sides (sqrt of the NEST counts), so a flat token covers the same number of pixels."""
  m = dict(sphere_model)
  m.pop("shift_strategy", None)
  m.update(kind="flat", patch_size=math.isqrt(int(m["patch_size"])), window_size=math.isqrt(int(m["window_size"])),
           shift=True)
  return ml_collections.ConfigDict(m)
