"""HEAL-SWIN monocular depth on fisheye scenes: trained on the sphere, scored back-projected on the image plane.

Data: the synthetic fisheye scenes (metric depth = distance along the ray; sky has no depth) projected onto
the 8 upper HEALPix faces, or a local SynWoodScape copy (``--set data.source='synwoodscape'
--set data.root=/path``). Loss: masked MSE on standardised depth (the original's, ``loss.depth='mse'``) or
SILog on log depth (``--set loss.depth='silog'``), over finite targets only. Predictions are back-projected
to the image (nearest HEALPix pixel per image pixel) and scored on the coverage mask: AbsRel, RMSE,
log-RMSE, delta < 1.25, and two Chamfer distances between the predicted and true point clouds (depth times
the camera ray of each covered pixel with a finite target), per test image then averaged: ``chamfer`` (mean
Euclidean nearest-neighbour distance both ways, metres) and ``chamfer_squared`` (mean squared distance both
ways, square metres: the original's depth metric, ``metrics.chamfer_squared``).

Run::

  python -m experiments.healswin_depth --quick --workdir runs/healswin_depth_quick
  python -m experiments.healswin_depth --workdir runs/healswin_depth

Quick: 40 scenes at 64 x 48, nside 16, a 2-stage model, 200 steps. Full: 400 scenes at 128 x 96, nside 32, 3
stages, 2,000 steps. Metrics: ``abs_rel``, ``rmse``, ``log_rmse``, ``delta1``, ``chamfer``, ``chamfer_squared``
(back-projected), ``sphere_*`` (on the sphere), ``loss_first``, ``loss_last`` (quick mode reaches ``loss_last < 0.7
loss_first``).

Depth targets are capped at 100 m (``synthetic.MAX_DEPTH``).
Results: ``results/healswin_depth/*.json`` (written with ``--record``) and the README's tables generated from them.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from healswin_jax import evaluation
from healswin_jax import plotting
from healswin_jax import tasks
from healswin_jax import run_config
from healswin_jax import train
from infra import cli


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  """The segmentation experiment's data, model and schedule (quick or full), with the depth head and loss."""
  c = run_config.scene_config(quick)
  c.task = "depth"
  c.loss.depth = "mse"
  return c


def depth_figures(result: train.TrainResult, config, workdir: str) -> None:
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  data = result.data
  n = min(3, len(data.test["inputs"]))
  outputs = result.predict(data.test["inputs"][:n])
  pred = evaluation.dense_predictions(config, tasks.test_subset(data, n), outputs)
  proj = data.projections[0]
  logd = lambda d: np.where(np.isfinite(d), np.log10(np.maximum(d, 1e-3)), np.nan)
  true_s = data.test_sphere["depth"][0]
  kw = dict(cmap="magma_r", min=-0.5, max=2.0)
  panels = [("input (luminance)", data.test["inputs"][0].mean(-1), dict(cmap="gray")),
            ("log10 depth [m]", np.nan_to_num(logd(true_s), nan=-0.5), kw),
            ("predicted log10 depth", logd(pred["sphere"][0]), kw)]
  cli.save_figure(plotting.sphere_figure(panels, proj.nside, proj.faces, "test scene 0 on the sphere"), workdir,
                  "sphere_views")
  fig, axes = plt.subplots(n, 3, figsize=(11, 3.0 * n), squeeze=False)
  for i in range(n):
    mask = data.projections[i].image_mask
    axes[i, 0].imshow(np.clip(data.test_flat["rgb"][i], 0, 1))
    axes[i, 1].imshow(logd(data.test_flat["depth"][i]), cmap="magma_r", vmin=-0.5, vmax=2.0)
    im = axes[i, 2].imshow(np.where(mask, logd(pred["image"][i]), np.nan), cmap="magma_r", vmin=-0.5, vmax=2.0)
    for ax in axes[i]:
      ax.contour(mask.astype(float), levels=[0.5], colors="c", linewidths=0.8)
      ax.set_xticks([])
      ax.set_yticks([])
  for ax, t in zip(axes[0], ("image", "true log10 depth", "predicted (back-projected)")):
    ax.set_title(t)
  fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="log10 depth [m]")
  cli.save_figure(fig, workdir, "overlays")


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  result = train.train_and_evaluate(config, workdir)
  depth_figures(result, config, workdir)
  m = result.metrics
  rows = [[k, m[k]] for k in ("abs_rel", "rmse", "log_rmse", "delta1", "chamfer", "chamfer_squared", "sphere_abs_rel",
                              "sphere_rmse", "loss_first", "loss_last")]
  cli.write_summary(workdir, "\n".join([
      "# HEAL-SWIN depth", "",
      f"{config.data.source} data, nside {config.data.nside}, loss {config.loss.depth}, {config.num_steps} steps "
      f"of batch {config.batch_size}. Back-projected metrics on the coverage mask (finite targets); Chamfer in "
      "metres.", "", cli.markdown_table(rows, ["metric", "value"]), "",
      "Figures: `sphere_views.png`, `overlays.png` (cyan = coverage-mask boundary)."]))
  return m


if __name__ == "__main__":
  cli.main(get_config, run, name="healswin_depth", validate=train.validate_config)
