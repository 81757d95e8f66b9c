"""Training presets of the HEAL-SWIN vs flat Swin comparison: ``"default"`` (this project's recipe) and
``"paper"`` (the original's segmentation and depth run configs, HEAL-SWIN, Carlsson, Gerken et al., CVPR 2024,
arXiv:2307.07313; ``heal_swin/run_configs``), scaled to the resolution that fits 2 CPU cores.

``paper`` sets, on top of an experiment's config (sizes, steps and data stay the experiment's):

- ring shift (the paper's "spiral shifting") and windows of 64 tokens (8 x 8; the flat model's 8 x 8), two
  stages (at nside 32 the token grid of stage 0 is the paper's bottleneck resolution, so deeper stages would
  shrink to a few tokens per face; the flat 96 x 80 image is padded to 96 x 96 to fit 8 x 8 windows at stage 1);
- dropout, attention dropout and drop path 0.1, MLP ratio 4, cosine attention (V2) with relative position bias;
- Adam at a constant learning rate, no weight decay, no clipping: 9.55e-4 for segmentation; for depth 5e-3
  (HEAL-SWIN) and 5e-5 (flat). ``optim.lr = None`` selects these per task and model (``--set optim.lr=X``
  uses X for both);
- sphere pixels outside the image count as void in the segmentation loss (``loss.outside_image = "void"``).

``default`` keeps the experiment's config as it is (grid shift, windows of 4 tokens / 2 x 2, no dropout,
AdamW with warmup + cosine, outside pixels ignored). Every difference of ``paper`` from the original configs is
listed in the README.
"""

from __future__ import annotations

import ml_collections

from healswin_jax import run_config, train

PRESETS = ("default", "paper")
# The original's learning rates per (task, model kind): ``heal_swin/run_configs`` (segmentation: both models;
# depth: ``depth_swin_hp_train_run_config.py`` and ``depth_swin_train_run_config.py``).
PAPER_LR = {("segmentation", "healswin"): 9.54993e-4, ("segmentation", "flat"): 9.54993e-4,
            ("depth", "healswin"): 5e-3, ("depth", "flat"): 5e-5}


def check_preset(name: str) -> str:
  if name not in PRESETS:
    raise ValueError(f"unknown preset {name!r}. Fix: use one of {PRESETS} (e.g. --variant paper).")
  return name


def apply_preset(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """Returns a copy of ``config`` (a :func:`run_config.base_config`-style config of the HEAL-SWIN model) with the
  preset's model, optimizer and loss settings."""
  check_preset(name)
  c = ml_collections.ConfigDict(config.to_dict())
  if name == "paper":
    c.model.update(shift_strategy="ring", window_size=64, drop_rate=0.1, attn_drop_rate=0.1, drop_path_rate=0.1,
                   mlp_ratio=4.0, attention="v2", rel_pos_bias=True, depths=tuple(c.model.depths[:2]),
                   num_heads=tuple(c.model.num_heads[:2]))
    c.optim.lr = None
    c.optim.update(name="adam", warmup_steps=0, final_lr_ratio=1.0, weight_decay=0.0, grad_clip=0.0)
    c.loss.outside_image = "void"
  return c


def model_configs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """``{"healswin": ..., "swin": ...}``: the training configs of both models of one comparison.

  The flat model is :func:`run_config.flat_model_config` of the HEAL-SWIN one (same widths, depths, heads,
  attention and dropout; patch and window as sides). ``optim.lr = None`` resolves to :data:`PAPER_LR` of the
  config's task for each model.
  """
  out = {}
  for name, kind in (("healswin", "healswin"), ("swin", "flat")):
    c = ml_collections.ConfigDict(config.to_dict())
    if kind == "flat":
      c.model = run_config.flat_model_config(config.model)
    if c.optim.lr is None:
      if (c.task, kind) not in PAPER_LR:
        raise ValueError(f"optim.lr=None (the paper preset's per-task rates) has no value for task={c.task!r}; "
                         f"tasks with one: {sorted({t for t, _ in PAPER_LR})}. Fix: --set optim.lr=<rate>.")
      c.optim.lr = PAPER_LR[(c.task, kind)]
    out[name] = c
  return out


def validate_comparison(config: ml_collections.ConfigDict) -> None:
  """:func:`healswin_jax.train.validate_config` of both models' resolved configs (:func:`model_configs`), so a
  preset's ``optim.lr = None`` is checked as the rate each model will train with; run before any work."""
  for model_config in model_configs(config).values():
    train.validate_config(model_config)
