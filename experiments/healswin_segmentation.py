"""HEAL-SWIN semantic segmentation of fisheye scenes on the HEALPix sphere, scored on the sphere and back-projected.

Data: procedural synthetic fisheye street scenes (``healswin_jax.data.synthetic``, 8 classes incl. void) rendered
through the WoodScape front-camera lens model and projected onto the HEALPix NEST pixels of the 8 upper faces
(optical axis at the north pole), or a local WoodScape copy (``--set data.source='woodscape'
--set data.root=/path``; 10 classes). Training: class-weighted cross-entropy (ENet weights), AdamW with warmup
+ cosine, the sharded train step; checkpoints in ``--workdir`` (re-running the command resumes).
Evaluation: mIoU on the sphere (pixels that see the image) and back-projected to the image plane on the
coverage mask (image pixels whose ray lies in the used faces).

Run::

  python -m experiments.healswin_segmentation --quick --workdir runs/healswin_segmentation_quick
  python -m experiments.healswin_segmentation --workdir runs/healswin_segmentation

Quick: 48 scenes at 64 x 48, nside 16 (2,048 sphere pixels), a 2-stage model, 200 steps (mostly compilation). Full:
400 scenes at 128 x 96, nside 32 (8,192 pixels), 3 stages, 2,000 steps. Metrics: ``miou_sphere``,
``miou_backprojected`` (and ``_no_void``), ``loss_first``, ``loss_last`` (mean training loss over the first / last
10 % of steps; quick mode must reach ``loss_last < 0.7 loss_first``), per-class back-projected IoU. Figures:
Mollweide/orthographic views of the input, label and prediction; the back-projected prediction overlaid on the
image.

Results: ``results/healswin_segmentation/*.json`` (written with ``--record``) and the README's tables generated
from them.
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
  return run_config.scene_config(quick)


def segmentation_figures(result: train.TrainResult, config, workdir: str, prefix: str = "") -> None:
  """Sphere views of input / label / prediction and back-projected overlays for the first test scenes."""
  data = result.data
  outputs = result.predict(data.test["inputs"][:3])
  pred = evaluation.dense_predictions(config, tasks.test_subset(data, 3), outputs)
  proj = data.projections[0]
  k = data.num_classes
  lab_kw = dict(cmap=plotting.label_cmap(k), min=-0.5, max=k - 0.5)
  lum = data.test["inputs"][0].mean(-1) if config.model.kind == "healswin" else proj.rgb_to_sphere(
      _rgb(data, 0))[..., :].mean(-1)
  panels = [("input (luminance)", lum, dict(cmap="gray")),
            ("label", data.test_sphere["labels"][0], lab_kw), ("prediction", pred["sphere"][0], lab_kw)]
  cli.save_figure(plotting.sphere_figure(panels, proj.nside, proj.faces, f"{prefix}test scene 0 on the sphere"),
                  workdir, f"{prefix}sphere_views")
  images = [_rgb(data, i) for i in range(len(pred["image"]))]
  masks = [p.image_mask for p in data.projections[:len(images)]]
  cli.save_figure(plotting.overlay_figure(images, data.test_flat["labels"][:3], pred["image"], masks, k,
                                          f"{prefix}back-projected predictions"), workdir, f"{prefix}overlays")


def _rgb(data: tasks.TaskData, i: int) -> np.ndarray:
  return np.clip(data.test_flat["rgb"][i], 0, 1)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  result = train.train_and_evaluate(config, workdir)
  segmentation_figures(result, config, workdir)
  m = result.metrics
  rows = [["mIoU sphere (pixels seeing the image)", m["miou_sphere"]],
          ["mIoU back-projected (coverage mask)", m["miou_backprojected"]],
          ["mIoU back-projected without void", m["miou_backprojected_no_void"]],
          ["pixel accuracy back-projected", m["pixel_accuracy_backprojected"]],
          ["loss first 10 % of steps", m["loss_first"]], ["loss last 10 % of steps", m["loss_last"]]]
  cli.write_summary(workdir, "\n".join([
      "# HEAL-SWIN segmentation", "",
      f"{config.data.source} data, nside {config.data.nside}, faces {tuple(config.data.faces)}, "
      f"{config.num_steps} steps of batch {config.batch_size}.", "",
      cli.markdown_table(rows, ["metric", "value"]), "",
      "Figures: `sphere_views.png` (input / label / prediction on the sphere), `overlays.png` "
      "(back-projected prediction over the image; white = coverage-mask boundary)."]))
  return m


if __name__ == "__main__":
  cli.main(get_config, run, name="healswin_segmentation", validate=train.validate_config)
