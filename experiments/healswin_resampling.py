"""The resampling ceiling of the HEAL-SWIN vs flat Swin comparisons: the best image-plane scores a sphere model
can reach on the comparison's test scenes, at the comparison's resolution and at 2, 4 and 8 times it.

A sphere model is trained on the image targets sampled at the HEALPix pixel centres and scored after
back-projection to the image (``healswin_vs_swin``'s ``miou_backprojected_*``, the original's
``val_hp_masked_iou``). Even a perfect one loses the nearest-neighbour round trip image -> sphere -> image,
most at class boundaries and thin objects; the flat model's ceiling on the same scores is 1.
:func:`healswin_jax.comparison.resampling_ceiling` scores that perfect sphere model. Every scale keeps the
paper's pixel ratio (nside 32 s on 8 faces against a 96 s x 80 s image, 1.067); scale 8 is the paper's own
resolution (nside 256 against 768 x 640). The scenes are the comparison's test scenes (``data.seed``, scenes
``num_train`` ... ``num_train + num_test - 1`` of the synthetic generator), rendered at each scale.

Run::

  python -m experiments.healswin_resampling --quick --workdir runs/healswin_resampling_quick
  python -m experiments.healswin_resampling --workdir runs/healswin_resampling

Quick: the quick comparison's 8 test scenes at nside 16 vs 48 x 40, scales 1 and 2. Full: the 80 test scenes,
scales 1, 2, 4, 8. Metrics, per scale s: ``{key}_ceiling_s{s}`` for ``miou_backprojected`` (with void),
``miou_backprojected_no_void``, ``pixel_accuracy_backprojected``, ``iou_backprojected_class{c}``, the depth
errors ``abs_rel``, ``rmse``, ``log_rmse``, ``delta1`` and ``depth_excluded_fraction``; ``nside_s{s}``,
``image_width_s{s}``, ``image_height_s{s}``, ``pixel_ratio_s{s}``; ``num_scenes``. Figure:
``resampling_ceiling.png``.
"""

from __future__ import annotations

import ml_collections
from healswin_jax import comparison, tasks
from healswin_jax.data import fisheye, synthetic
from infra import cli

_PLOTTED = (("miou_backprojected", "mIoU, with void"), ("miou_backprojected_no_void", "mIoU, without void"),
            ("abs_rel", "depth AbsRel"))


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.data = ml_collections.ConfigDict(comparison.matched_config(quick).data.to_dict())
  c.scales = (1, 2) if quick else (1, 2, 4, 8)
  return c


def validate(config: ml_collections.ConfigDict) -> None:
  d = config.data
  if d.source != "synthetic":
    raise ValueError(f"data.source={d.source!r}: the ceiling renders the synthetic scenes at every scale. Fix: "
                     f"drop --set data.source.")
  scales = tuple(int(s) for s in config.scales)
  if not scales or min(scales) < 1:
    raise ValueError(f"scales={tuple(config.scales)} must be non-empty positive integers. Fix: e.g. "
                     f"scales=(1, 2, 4, 8).")
  fisheye.check_matched_ratio(d.nside, len(d.faces), d.image_width, d.image_height)


def ceiling_at(config: ml_collections.ConfigDict, scale: int) -> dict[str, float]:
  """:func:`comparison.resampling_ceiling` of the test scenes rendered at ``scale`` times the configured nside
  and image size, keyed ``{key}_ceiling_s{scale}``, with the grid sizes."""
  d = config.data
  nside, w, h = d.nside * scale, d.image_width * scale, d.image_height * scale
  ratio = fisheye.check_matched_ratio(nside, len(d.faces), w, h)
  cam = tasks.synthetic_camera(w, h, d.camera)
  proj = fisheye.make_projection(cam, nside, tuple(d.faces))
  fisheye.check_face_coverage(proj)
  scenes = synthetic.make_dataset(d.num_test, d.seed, cam, first=d.num_train)  # the comparison's test scenes
  res = comparison.resampling_ceiling(proj, scenes["labels"], scenes["depth"], d.num_classes)
  out = {f"{k}_ceiling_s{scale}": v for k, v in res.items()}
  out.update({f"nside_s{scale}": float(nside), f"image_width_s{scale}": float(w),
              f"image_height_s{scale}": float(h), f"pixel_ratio_s{scale}": ratio})
  return out


def ceiling_figure(out: dict[str, float], scales):
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  widths = [out[f"image_width_s{s}"] for s in scales]
  for key, label in _PLOTTED[:2]:
    axes[0].plot(widths, [out[f"{key}_ceiling_s{s}"] for s in scales], marker="o", label=label)
  axes[0].set_ylabel("back-projected mIoU of a perfect sphere model")
  key, label = _PLOTTED[2]
  axes[1].plot(widths, [out[f"{key}_ceiling_s{s}"] for s in scales], marker="o", color="C3", label=label)
  axes[1].set_ylabel("back-projected AbsRel of a perfect sphere model")
  for ax in axes:
    ax.set_xscale("log", base=2)
    ax.set_xticks(widths, [f"{int(out[f'image_width_s{s}'])}x{int(out[f'image_height_s{s}'])}\n"
                           f"nside {int(out[f'nside_s{s}'])}" for s in scales])
    ax.legend()
  fig.suptitle("resampling ceiling at the paper's pixel ratio (image -> HEALPix -> image)", y=1.02)
  fig.tight_layout()
  return fig


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  validate(config)
  scales = tuple(int(s) for s in config.scales)
  out = {"num_scenes": float(config.data.num_test)}
  for s in scales:
    out.update(ceiling_at(config, s))
  cli.save_figure(ceiling_figure(out, scales), workdir, "resampling_ceiling")
  rows = [[f"{int(out[f'nside_s{s}'])} vs {int(out[f'image_width_s{s}'])} x {int(out[f'image_height_s{s}'])}"]
          + [out[f"{k}_ceiling_s{s}"] for k, _ in _PLOTTED] for s in scales]
  cli.write_summary(workdir, "\n".join([
      "# Resampling ceiling of the sphere model", "",
      f"A perfect sphere model's image-plane scores on the {config.data.num_test} test scenes (the flat model's "
      f"ceiling is 1 / 0).", "",
      cli.markdown_table(rows, ["nside vs image"] + [label for _, label in _PLOTTED]), "",
      "Figure: `resampling_ceiling.png`."]))
  return out


if __name__ == "__main__":
  cli.main(get_config, run, name="healswin_resampling", validate=validate)
