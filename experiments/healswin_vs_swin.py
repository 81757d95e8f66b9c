"""HEAL-SWIN on the sphere vs the flat Swin U-Net on the fisheye images, at the paper's pixel ratio, over seeds.

Both models see the same synthetic fisheye scenes (``healswin_jax.data.synthetic``) through WoodScape's front
lens with its 190-degree field of view, cropped like the original's flat inputs
(``FisheyeCamera.woodscape_fv_crop``): HEAL-SWIN their projection onto the HEALPix NEST pixels of the 8 upper
faces, the flat Swin the images. The resolution is matched as in the paper: sphere : image pixels = nside 32 on
8 faces : 96 x 80 = 8,192 : 7,680 = 1.067 (the paper's 524,288 : 491,520; quick: nside 16 vs 48 x 40, the same
ratio); any other ratio is an error naming the matched image size. Both models share widths, depths, heads,
attention, dropout, optimizer, steps and batch size (``presets.model_configs``); ``--variant`` picks the recipe:
``default`` (this project's) or ``paper`` (the original's run configs, scaled; ``healswin_jax/presets.py``).

Both are scored on the same image pixels (the coverage mask of the sphere model; the original's
``val_hp_masked_iou``): HEAL-SWIN back-projected, the flat predictions as they are. The other direction: the
flat predictions sampled at the HEALPix centres against HEAL-SWIN on the sphere (``miou_sphere_*``, the
original's ``val_iou_projected_to_hp`` / ``val_iou_global``, on sphere pixels that see the image).

Run (``--set task=depth`` for depth; ``--set seeds=(0,1,2,3)`` for more seeds)::

  python -m experiments.healswin_vs_swin --quick --workdir runs/healswin_vs_swin_quick
  python -m experiments.healswin_vs_swin --variant paper --workdir runs/healswin_vs_swin_paper
  python -m experiments.healswin_vs_swin --variant paper --set task=depth --workdir runs/healswin_vs_swin_paper_depth

Quick: 24 train / 8 test scenes, 2 seeds, 80 steps per model and seed. Full: 400 / 80 scenes, 3 seeds, 2,000
steps of batch 8. Metrics (mean and std over seeds, ``{metric}_{healswin,swin}_{mean,std}``): segmentation
``miou_backprojected`` (with void), ``miou_backprojected_no_void``, ``miou_sphere``, ``miou_sphere_no_void``,
``pixel_accuracy_backprojected``, ``iou_backprojected_class{c}``; depth ``abs_rel``, ``rmse``, ``log_rmse``,
``delta1``, ``chamfer`` (Euclidean, m), ``chamfer_squared`` (the original's, m^2), ``sphere_*``; both tasks
``loss_first``, ``loss_last``, ``num_params``, ``error_centre`` / ``error_periphery`` (pixel error rate or
AbsRel of pixels whose ray is < 45 / >= 75 degrees off axis), and ``pixel_ratio``, ``num_pixels_*``. The
trivial baseline ``prior`` (one fixed image: per pixel the most frequent training label or the median training
depth, ``comparison.prior_baseline``) is scored the same way (``{metric}_prior_{mean,std}``).
Results: ``results/healswin_vs_swin/*.json`` (written with ``--record``) and the README's tables generated from them.
With ``--set task=depth`` name the record (``--record quick-depth``), so that it does not replace the
segmentation one.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from healswin_jax import comparison, plotting, presets
from infra import cli

_SEG_KEYS = ("miou_backprojected", "miou_backprojected_no_void", "miou_sphere", "miou_sphere_no_void",
             "pixel_accuracy_backprojected")
_DEPTH_KEYS = ("abs_rel", "rmse", "delta1", "chamfer", "chamfer_squared", "sphere_abs_rel")


def get_config(quick: bool = False, variant: str = "default") -> ml_collections.ConfigDict:
  return comparison.matched_config(quick, variant)


def error_figure(task: str, comp: comparison.Comparison):
  """Both models' errors on the same test images: mean error maps on the image plane and error vs the angle
  of the pixel's ray from the optical axis (centre -> periphery)."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  errs = comparison.error_by_angle(task, comp.runs, comp.data)
  label = "pixel error rate" if task == "segmentation" else "AbsRel"
  # Mean AbsRel has a long tail (a few pixels far above 1): a colour scale to its maximum would paint every other
  # pixel black, so depth maps saturate at the 99th percentile (error rates are in [0, 1] as they are).
  maps = np.stack([e["map"] for e in errs.values()])
  vmax = float(np.nanmax(maps) if task == "segmentation" else np.nanpercentile(maps, 99))
  fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
  for ax, (name, e) in zip(axes[:2], errs.items()):
    im = ax.imshow(e["map"], cmap="magma", vmin=0, vmax=vmax)
    ax.set_title(f"{name}: mean {label}", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
  fig.colorbar(im, ax=axes[:2].tolist(), shrink=0.8, extend="neither" if task == "segmentation" else "max")
  for name, e in errs.items():
    centres = 0.5 * (e["bins"][:-1] + e["bins"][1:])
    axes[2].plot(centres, e["curve"], "o-", label=name)
  for x in (comparison.CENTRE_DEG, comparison.PERIPHERY_DEG):
    axes[2].axvline(x, color="gray", lw=0.8, ls=":")
  axes[2].set_xlabel("angle of the pixel's ray from the optical axis (deg)")
  axes[2].set_ylabel(label)
  axes[2].legend()
  axes[2].set_title("centre -> periphery")
  fig.suptitle(f"{task}: both models on the same {comp.runs['healswin'][0].image.shape[0]} test images, "
               f"{len(comp.runs['healswin'])} seeds", y=1.02)
  return fig


def prediction_figure(comp: comparison.Comparison, num_classes: int, n: int = 3):
  """Ground truth and both models' predictions (seed 0) on the same test images."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  d = comp.data
  n = min(n, len(d.test_flat["labels"]))
  cmap = plotting.label_cmap(num_classes)
  fig, axes = plt.subplots(n, 4, figsize=(13, 2.8 * n), squeeze=False)
  for i in range(n):
    cover = d.projections[i].image_mask
    panels = [("image", np.clip(d.test_flat["rgb"][i], 0, 1)), ("ground truth", d.test_flat["labels"][i])] + [
        (name, np.ma.masked_where(~cover, comp.runs[name][0].image[i])) for name in comparison.MODELS]
    for ax, (title, img) in zip(axes[i], panels):
      ax.imshow(img, **({} if title == "image" else dict(cmap=cmap, vmin=-0.5, vmax=num_classes - 0.5,
                                                         interpolation="nearest")))
      ax.contour(cover.astype(float), levels=[0.5], colors="w", linewidths=0.8)
      ax.set_title(title if i == 0 else "")
      ax.set_xticks([])
      ax.set_yticks([])
  fig.tight_layout()
  return fig


def _pm(out, key, name):
  if f"{key}_{name}_mean" not in out:
    return "–"
  return f"{out[f'{key}_{name}_mean']:.4g} ± {out[f'{key}_{name}_std']:.2g}"


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  out, comp = comparison.run_matched(config, workdir)
  cli.save_figure(error_figure(config.task, comp), workdir, "errors_centre_vs_periphery")
  keys = _SEG_KEYS if config.task == "segmentation" else _DEPTH_KEYS
  if config.task == "segmentation":
    cli.save_figure(prediction_figure(comp, comp.data.num_classes), workdir, "predictions")
  keys = keys + ("error_centre", "error_periphery", "loss_last", "num_params")
  rows = [[k] + [_pm(out, k, name) for name in comparison.MODELS + (comparison.BASELINE,)] for k in keys]
  head = "miou_backprojected" if config.task == "segmentation" else "abs_rel"
  diff = out[f"{head}_healswin_mean"] - out[f"{head}_swin_mean"]
  spread = max(out[f"{head}_healswin_std"], out[f"{head}_swin_std"])
  cli.write_summary(workdir, "\n".join([
      f"# HEAL-SWIN (sphere) vs Swin (flat), {config.task}, preset `{config.variant}`", "",
      f"{config.data.num_train} train / {config.data.num_test} test scenes, {len(config.seeds)} seeds, "
      f"{config.num_steps} steps of batch {config.batch_size} per model and seed. Pixel ratio sphere : image = "
      f"{int(out['num_pixels_sphere'])} : {int(out['num_pixels_image'])} = {out['pixel_ratio']:.4f} (the "
      f"paper: 524,288 : 491,520 = 1.0667); {int(out['num_pixels_sphere_seeing_image'])} sphere pixels see the "
      f"image. Scored on the same {int(out['num_scored_pixels'])} covered image pixels. Mean ± std over seeds.",
      "", cli.markdown_table(rows, ["metric", "HEAL-SWIN", "flat Swin", "prior baseline"]), "",
      f"{head}: HEAL-SWIN - flat Swin = {diff:+.4g} (largest seed std {spread:.2g}; "
      + ("within the spread" if abs(diff) <= 2 * spread else "larger than twice the spread") + ").", "",
      "Figures: `errors_centre_vs_periphery.png` (both models' errors on the same images, by angle off axis)"
      + (", `predictions.png`." if config.task == "segmentation" else ".")]))
  return out


if __name__ == "__main__":
  cli.main(get_config, run, name="healswin_vs_swin", variants=presets.PRESETS,
           validate=presets.validate_comparison)
