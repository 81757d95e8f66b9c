"""HEAL-SWIN (sphere) against the flat Swin (image) over seeds: the paper's comparisons at matched resolution.

:func:`compare` trains both models of :func:`presets.model_configs` for every seed on the same data (the
dataset seed stays fixed; the seed sets initialisation, dropout and batch order), scores both on the same
covered image pixels (:func:`evaluation.evaluate`) and keeps the back-projected / cropped test predictions for error
maps. :func:`summarise` turns the runs into flat ``{metric}_{model}_{mean,std}`` numbers (std over seeds,
ddof = 1), and :func:`error_by_angle` splits the per-pixel errors by the angle of the pixel's ray from the
optical axis (centre vs periphery of the fisheye image).

The matched resolution is the paper's pixel ratio sphere : image = 524,288 : 491,520 = 1.067 (nside 32 on 8
faces against a 96 x 80 image here; :func:`fisheye.check_matched_ratio`).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Sequence

import jax
import ml_collections
import numpy as np

from healswin_jax import evaluation, presets, run_config, tasks, train
from healswin_jax import metrics as metrics_lib
from healswin_jax.data import fisheye

MODELS = ("healswin", "swin")
# The trivial baseline (:func:`prior_baseline`), reported next to the models as ``{metric}_prior_{mean,std}``.
BASELINE = "prior"
# Angle of an image pixel's ray from the optical axis (degrees): the centre band and the periphery band, where
# the fisheye distortion is largest (WoodScape's lens reaches 95 degrees).
CENTRE_DEG = 45.0
PERIPHERY_DEG = 75.0


@dataclasses.dataclass
class Run:
  """One trained model: ``metrics`` of :func:`evaluation.evaluate` plus losses and ``num_params``; ``image``
  (n_test, H, W) test predictions on the image plane (labels or metres)."""
  metrics: dict[str, float]
  image: np.ndarray


@dataclasses.dataclass
class Comparison:
  """``runs[model]``: one :class:`Run` per seed (:data:`BASELINE`: the one :func:`prior_baseline`);
  ``data``: the HEAL-SWIN model's :class:`tasks.TaskData` (test images, labels and projections, the same scenes
  the flat model saw); ``configs[model]``: training configs."""
  runs: dict[str, list[Run]]
  data: tasks.TaskData
  configs: dict[str, ml_collections.ConfigDict]


def matched_config(quick: bool = False, variant: str = "default") -> ml_collections.ConfigDict:
  """The training config of the comparisons (segmentation; ``task="depth"`` switches): the WoodScape crop
  camera at the matched ratio, nside 32 vs 96 x 80 (quick: nside 16 vs 48 x 40), ``seeds`` (3; quick 2), the
  ``variant`` preset (:func:`presets.apply_preset`) on top of :func:`run_config.scene_config` (sizes, steps and
  recipe; quick mode shrinks further: 24 scenes, embed 16, 80 steps)."""
  c = run_config.scene_config(quick)
  c.seeds = (0, 1) if quick else (0, 1, 2)
  c.data.camera = "woodscape_fv_crop"
  if quick:
    c.num_steps, c.checkpoint_every, c.progress = 80, 80, False
    c.data.update(num_train=24, image_width=48, image_height=40)
    c.model.update(embed_dim=16)
  else:
    c.data.update(image_width=96, image_height=80)
  c = presets.apply_preset(c, variant)
  c.variant = variant
  return c


def check_matched(config: ml_collections.ConfigDict) -> float:
  """The pixel ratio of ``config.data`` (a ValueError naming the matched size if it is not the paper's) after
  checking that the synthetic camera covers every used face. Returns the ratio."""
  d = config.data
  ratio = fisheye.check_matched_ratio(d.nside, len(d.faces), d.image_width, d.image_height)
  if d.source == "synthetic":
    cam = tasks.synthetic_camera(d.image_width, d.image_height, d.camera)
    fisheye.check_face_coverage(fisheye.make_projection(cam, d.nside, tuple(d.faces)))
  return ratio


def compare(config: ml_collections.ConfigDict, workdir: str, seeds: Sequence[int]) -> Comparison:
  """Trains and evaluates both models for every seed (checkpoints in ``workdir/<model>/seed<s>``; re-running
  resumes). ``config`` is a HEAL-SWIN training config after :func:`presets.apply_preset`."""
  if not seeds:
    raise ValueError("seeds is empty. Fix: pass at least one seed, e.g. seeds=(0, 1, 2).")
  configs = presets.model_configs(config)
  runs, data = {m: [] for m in MODELS}, None
  for name in MODELS:
    model_data = tasks.build_data(configs[name])  # the seed does not enter the data (data.seed does)
    for seed in seeds:
      cfg = ml_collections.ConfigDict(configs[name].to_dict())
      cfg.seed = int(seed)
      res = train.train_and_evaluate(cfg, os.path.join(workdir, name, f"seed{seed}"), data=model_data)
      pred = evaluation.dense_predictions(cfg, res.data, res.predict(res.data.test["inputs"]))
      m = dict(res.metrics, num_params=float(sum(int(np.size(p)) for p in jax.tree.leaves(res.params))))
      runs[name].append(Run(metrics=m, image=pred["image"]))
      if name == "healswin" and data is None:
        data = res.data
    if name == "swin":
      runs[BASELINE] = [prior_baseline(configs[name], model_data)]
  return Comparison(runs=runs, data=data, configs=configs)


def prior_baseline(flat_config: ml_collections.ConfigDict, flat_data: tasks.TaskData) -> Run:
  """The trivial baseline on the same arrays: one fixed image for every test scene, per pixel the most
  frequent training label (segmentation) or the median valid training depth (depth; the overall median where
  a pixel never has one), scored like the flat model (:func:`evaluation.evaluate`, both directions)."""
  y, m = flat_data.train["targets"], flat_data.train["mask"] > 0
  n_test = len(flat_data.test["targets"])
  if flat_config.task == "segmentation":
    k = flat_data.num_classes
    counts = np.stack([((y == c) & m).sum(0) for c in range(k)], axis=-1)  # (Hp, Wp, K)
    outputs = np.eye(k, dtype=np.float32)[counts.argmax(-1)]
  else:
    dep = y * flat_data.depth_std + flat_data.depth_mean if flat_config.loss.depth == "mse" else np.exp(y)
    dep = np.where(m, dep, np.nan)
    with warnings.catch_warnings():  # pixels that never have a valid depth: NaN, replaced below
      warnings.simplefilter("ignore", RuntimeWarning)
      med = np.nanmedian(dep, axis=0)
    med = np.where(np.isfinite(med), med, np.nanmedian(dep))
    out = (med - flat_data.depth_mean) / flat_data.depth_std if flat_config.loss.depth == "mse" else np.log(med)
    outputs = out[..., None].astype(np.float32)
  outputs = np.broadcast_to(outputs, (n_test,) + outputs.shape)
  metrics = evaluation.evaluate(flat_config, flat_data, outputs)
  return Run(metrics=metrics, image=evaluation.dense_predictions(flat_config, flat_data, outputs)["image"])


def resampling_ceiling(proj: fisheye.SphereProjection, labels: np.ndarray, depth: np.ndarray,
                       num_classes: int) -> dict[str, float]:
  """The best image-plane scores a sphere model can reach on these scenes: its targets (the image's labels and
  depths sampled at the HEALPix pixel centres, exactly as the training data is made) back-projected to the
  image and scored like a sphere model's predictions, on the same coverage mask.

  A perfect HEAL-SWIN predicts the sphere targets; what it loses here is the nearest-neighbour resampling
  image -> sphere -> image, largest at class boundaries and thin objects, and smaller the finer both grids
  are. The flat model's ceiling on these image-plane scores is 1 (perfect).

  Args:
    proj: the projection of the sphere model's data.
    labels: (n, H, W) int image labels.
    depth: (n, H, W) image depths in metres (inf / 0 where there is none).
    num_classes: K.

  Returns:
    :func:`evaluation.image_segmentation_scores` (``miou_backprojected``, ...) and the depth errors of
    :func:`metrics.depth_metrics` (``abs_rel``, ``rmse``, ``log_rmse``, ``delta1``) on covered pixels where
    both the image depth and its back-projected sphere target are valid; ``depth_excluded_fraction``: the
    share of covered, valid image pixels left out because their back-projected target is not (sky or no
    data at the nearest sphere pixel).
  """
  labels, depth = np.asarray(labels), np.asarray(depth)
  if labels.shape != depth.shape or labels.shape[1:] != proj.image_shape:
    raise ValueError(f"labels {labels.shape} and depth {depth.shape} must both be (n,) + the projection's image "
                     f"shape {proj.image_shape}.")
  cover = np.broadcast_to(proj.image_mask, labels.shape)
  out = evaluation.image_segmentation_scores(proj.to_image(proj.labels_to_sphere(labels), fill=0), labels, cover,
                                             num_classes)
  back = proj.to_image(proj.depth_to_sphere(depth), fill=np.inf)
  valid = cover & metrics_lib.valid_depth(depth)
  keep = valid & metrics_lib.valid_depth(back)
  dep = metrics_lib.depth_metrics(back, depth, keep)
  out.update({k: v for k, v in dep.items() if k != "num_valid"})
  out["depth_excluded_fraction"] = float(1.0 - keep.sum() / max(valid.sum(), 1))
  return out


def run_matched(config: ml_collections.ConfigDict, workdir: str) -> tuple[dict[str, float], Comparison]:
  """:func:`check_matched`, :func:`compare` over ``config.seeds`` and the flat metrics: :func:`summarise`,
  ``error_{centre,periphery}_{model}_{mean,std}`` (:func:`error_by_angle`), ``pixel_ratio``, ``num_seeds``
  and the pixel counts ``num_pixels_sphere``, ``num_pixels_sphere_seeing_image``, ``num_pixels_image``,
  ``num_scored_pixels``."""
  presets.check_preset(config.get("variant", "default"))
  ratio = check_matched(config)
  comp = compare(config, workdir, tuple(config.seeds))
  out = summarise(comp.runs)
  for name, e in error_by_angle(config.task, comp.runs, comp.data).items():
    for band in ("centre", "periphery"):
      out[f"error_{band}_{name}_mean"] = e[band]
      out[f"error_{band}_{name}_std"] = e[f"{band}_std"]
  proj = comp.data.projections[0]
  out.update(pixel_ratio=ratio, num_seeds=float(len(config.seeds)), num_pixels_sphere=float(proj.num_pixels),
             num_pixels_sphere_seeing_image=float(proj.sphere_mask.sum()),
             num_pixels_image=float(np.prod(proj.image_shape)),
             num_scored_pixels=float(sum(int(p.image_mask.sum()) for p in comp.data.projections)))
  return out, comp


def summarise(runs: dict[str, list[Run]]) -> dict[str, float]:
  """``{metric}_{model}_mean`` and ``_std`` over seeds (std with ddof = 1; 0 for one seed). A metric missing in
  some seeds (a class absent from prediction and target) is averaged over the seeds that have it."""
  out = {}
  for name, rs in runs.items():
    keys = sorted(set().union(*(r.metrics for r in rs)))
    for k in keys:
      vals = np.array([r.metrics[k] for r in rs if k in r.metrics], np.float64)
      out[f"{k}_{name}_mean"] = float(vals.mean())
      out[f"{k}_{name}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
  return out


def pixel_angles(data: tasks.TaskData) -> np.ndarray:
  """(H, W) angle in degrees of every image pixel's ray from the optical axis (test camera 0)."""
  cam = data.projections[0].camera
  theta, _, _ = cam.unproject(*cam.pixel_grid())
  return np.degrees(theta)


def pixel_errors(task: str, pred: np.ndarray, data: tasks.TaskData) -> tuple[np.ndarray, np.ndarray]:
  """Per-pixel errors of test predictions (n, H, W) and where they count: segmentation 1 - correct on the
  coverage mask; depth the relative error |p - t| / t on covered pixels with a valid target."""
  cover = np.stack([p.image_mask for p in data.projections])
  if task == "segmentation":
    return (pred != data.test_flat["labels"]).astype(np.float64), cover
  t = data.test_flat["depth"]
  ok = cover & np.isfinite(t) & (t > 0) & np.isfinite(pred)
  return np.where(ok, np.abs(pred - np.where(ok, t, 1.0)) / np.where(ok, t, 1.0), 0.0), ok


def error_by_angle(task: str, runs: dict[str, list[Run]], data: tasks.TaskData,
                   bins_deg: np.ndarray | None = None) -> dict[str, dict[str, np.ndarray]]:
  """Per model: ``map`` (H, W) mean error over test images and seeds (NaN where nothing counts), ``curve``
  (len(bins) - 1,) mean error per angle bin, and the seed-mean errors ``centre`` (theta < CENTRE_DEG) and
  ``periphery`` (theta >= PERIPHERY_DEG) with their seed std (``centre_std``, ``periphery_std``)."""
  bins = np.arange(0.0, 101.0, 10.0) if bins_deg is None else np.asarray(bins_deg, np.float64)
  theta = pixel_angles(data)
  out = {}
  for name, rs in runs.items():
    errs, masks = zip(*(pixel_errors(task, r.image, data) for r in rs))
    err, mask = np.stack(errs), np.stack(masks)  # (seeds, n, H, W)
    th = np.broadcast_to(theta, err.shape)
    with np.errstate(invalid="ignore"):
      emap = (err * mask).sum((0, 1)) / mask.sum((0, 1))
    curve = np.array([err[mask & (th >= lo) & (th < hi)].mean() if (mask & (th >= lo) & (th < hi)).any()
                      else np.nan for lo, hi in zip(bins[:-1], bins[1:])])
    band = {}
    for key, sel in (("centre", theta < CENTRE_DEG), ("periphery", theta >= PERIPHERY_DEG)):
      per_seed = np.array([e[m & sel].mean() if (m & sel).any() else np.nan for e, m in zip(err, mask)])
      band[key] = float(np.mean(per_seed))
      band[f"{key}_std"] = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0
    out[name] = dict(map=emap, curve=curve, bins=bins, **band)
  return out
