"""Data efficiency of HEAL-SWIN vs the flat Swin (the original's ``*_data_efficiency_*`` runs): segmentation mIoU
against the share of the synthetic training set, both models, over seeds, at the paper's pixel ratio.

Each fraction f trains both models of ``healswin_vs_swin`` (same scenes, camera, matched resolution nside 32 vs
96 x 80, ``--variant default`` or ``paper``) on the first ceil(f n) training scenes
(``data.train_fraction``) and scores them on the same test scenes. Every fraction gets the same number of steps
(the original's max_epochs = ceil(500 / f) is also a constant number of gradient steps).

Run::

  python -m experiments.healswin_data_efficiency --quick --workdir runs/healswin_data_efficiency_quick
  python -m experiments.healswin_data_efficiency --variant paper --workdir runs/healswin_data_efficiency_paper

Quick: nside 16 vs 48 x 40, 24 scenes, 2 seeds, 40 steps per model, seed and fraction. Full: 400 scenes, 3
seeds, 2,000 steps. Metrics: ``{metric}_{healswin,swin}_f{10,25,50,100}_{mean,std}`` for ``miou_backprojected``,
``miou_backprojected_no_void``, ``miou_sphere``, ``pixel_accuracy_backprojected``, ``loss_last``; ``pixel_ratio``;
``num_train_f{pct}``; the same for the trivial baseline ``prior`` (per pixel the most frequent training label,
``comparison.prior_baseline``). Figure: ``data_efficiency.png`` (mIoU vs fraction, mean ± std over seeds).
"""

from __future__ import annotations

import math
import os

import ml_collections
import numpy as np

from healswin_jax import comparison, presets
from infra import cli

_KEYS = ("miou_backprojected", "miou_backprojected_no_void", "miou_sphere", "pixel_accuracy_backprojected",
         "loss_last")


def get_config(quick: bool = False, variant: str = "default") -> ml_collections.ConfigDict:
  c = comparison.matched_config(quick, variant)
  c.fractions = (0.1, 0.25, 0.5, 1.0)
  if quick:
    c.num_steps = c.checkpoint_every = 40
  return c


def curve_figure(out: dict[str, float], fractions, title: str):
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  pct = [round(100 * f) for f in fractions]
  for ax, key in zip(axes, ("miou_backprojected", "miou_backprojected_no_void")):
    for name in comparison.MODELS + (comparison.BASELINE,):
      mean = np.array([out[f"{key}_{name}_f{p}_mean"] for p in pct])
      std = np.array([out[f"{key}_{name}_f{p}_std"] for p in pct])
      ax.errorbar(fractions, mean, yerr=std, marker="o", capsize=3, label=name,
                  ls="--" if name == comparison.BASELINE else "-")
    ax.set_xscale("log")
    ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
    ax.set_xlabel("fraction of the training scenes")
    ax.set_ylabel(key.replace("_", " "))
    ax.legend()
  fig.suptitle(title, y=1.02)
  fig.tight_layout()
  return fig


def _fraction_metrics(config: ml_collections.ConfigDict, f: float, workdir: str) -> dict[str, float]:
  """Trains and scores both models (and the prior baseline) on the first ceil(f n) training scenes; returns the
  ``{metric}_{name}_f{pct}_{mean,std}`` keys, ``num_train_f{pct}`` and ``pixel_ratio``."""
  pct = round(100 * f)
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.data.train_fraction = f
  res, _ = comparison.run_matched(cfg, os.path.join(workdir, f"f{pct}"))
  out = {}
  for key in _KEYS:
    for name in comparison.MODELS + (comparison.BASELINE,):
      for stat in ("mean", "std"):
        if f"{key}_{name}_{stat}" in res:  # the baseline has no training loss
          out[f"{key}_{name}_f{pct}_{stat}"] = res[f"{key}_{name}_{stat}"]
  out[f"num_train_f{pct}"] = float(math.ceil(f * config.data.num_train))
  out["pixel_ratio"] = res["pixel_ratio"]
  return out


def _summary(config: ml_collections.ConfigDict, out: dict[str, float], fractions) -> str:
  rows = [[f"{f:g} ({int(out[f'num_train_f{round(100 * f)}'])} scenes)"] + [
      f"{out[f'miou_backprojected_{n}_f{round(100 * f)}_mean']:.4g} ± "
      f"{out[f'miou_backprojected_{n}_f{round(100 * f)}_std']:.2g}"
      for n in comparison.MODELS + (comparison.BASELINE,)] for f in fractions]
  return "\n".join([
      f"# Data efficiency, HEAL-SWIN vs flat Swin, preset `{config.variant}`", "",
      f"{config.num_steps} steps of batch {config.batch_size} per model, seed and fraction; pixel ratio "
      f"{out['pixel_ratio']:.4f}; back-projected mIoU (with void) on the same {config.data.num_test} test scenes, "
      f"mean ± std over {len(config.seeds)} seeds.", "",
      cli.markdown_table(rows, ["training fraction", "HEAL-SWIN", "flat Swin", "prior baseline"]), "",
      "Figure: `data_efficiency.png`."])


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  if config.task != "segmentation":
    raise ValueError(f"task={config.task!r}: the data-efficiency runs are segmentation only. Fix: drop --set task.")
  fractions = tuple(float(f) for f in config.fractions)
  if not fractions or any(not 0 < f <= 1 for f in fractions):
    raise ValueError(f"fractions={fractions} must be non-empty, each in (0, 1]. Fix: e.g. fractions=(0.1, 0.5, 1.0).")
  out = {}
  for f in fractions:
    out.update(_fraction_metrics(config, f, workdir))
  cli.save_figure(curve_figure(out, fractions, f"data efficiency, preset `{config.variant}`, "
                                  f"{len(config.seeds)} seeds"), workdir, "data_efficiency")
  cli.write_summary(workdir, _summary(config, out, fractions))
  return out


if __name__ == "__main__":
  cli.main(get_config, run, name="healswin_data_efficiency", variants=presets.PRESETS,
           validate=presets.validate_comparison)
