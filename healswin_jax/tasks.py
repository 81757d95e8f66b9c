"""Model-ready data of the HEAL-SWIN tasks: ``build_data(config) -> TaskData``.

Three tasks (``config.task``): ``"segmentation"`` and ``"depth"`` on fisheye scenes (``config.data.source``:
``"synthetic"``, ``"woodscape"`` or ``"synwoodscape"``) projected to HEALPix NEST maps (B, N, C) for
``config.model.kind == "healswin"`` or kept as padded images (B, H, W, C) for ``"flat"``; ``"classification"``
on spherical MNIST (``"flat"``: the same digits unprojected, NR/NR only). Also the fixed input normalisation
and the segmentation class weights (ENet rule ``1 / ln(1.02 + f_c)``, Paszke et al. 2016, arXiv:1606.02147),
which the loss reads from ``batch["mask"]``.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import os
from typing import Any

import ml_collections
import numpy as np

from healswin_jax.data.fisheye import FisheyeCamera, SphereProjection, make_projection

TASKS = ("segmentation", "depth", "classification")


@dataclasses.dataclass
class TaskData:
  """Model-ready arrays plus what evaluation needs.

  Attributes:
    train, test: batch dicts of numpy arrays with a leading example axis: ``inputs`` (n, N, C) or
      (n, H, W, C); ``targets`` (n, N) / (n, H, W) int labels, standardised or log depth, or (n,) classes;
      ``mask`` (same shape as dense targets) float32: the per-pixel loss weight (segmentation: the class
      weight of the pixel's label; depth: 1 on finite targets; 0 on flat padding).
    num_classes: classes of the head (segmentation / classification) or None (depth).
    projections: per test example, the :class:`SphereProjection` of its camera (dense tasks), else None.
    test_flat: the original flat test ``rgb`` (n, H, W, 3) in [0, 1] and ``labels`` / ``depth`` (n, H, W).
    test_sphere: ``labels`` / ``depth`` (n, N) on the sphere and ``sphere_mask`` (n, N).
    depth_mean, depth_std: the standardisation of depth targets (``"mse"`` loss).
    flat_pad: (pad_h, pad_w) added at the bottom/right of flat inputs to fit the Swin grid.
  """
  train: dict[str, np.ndarray]
  test: dict[str, np.ndarray]
  num_classes: int | None = None
  projections: list[SphereProjection] | None = None
  test_flat: dict[str, np.ndarray] | None = None
  test_sphere: dict[str, np.ndarray] | None = None
  depth_mean: float = 0.0
  depth_std: float = 1.0
  flat_pad: tuple[int, int] = (0, 0)


CAMERAS = ("woodscape_fv", "woodscape_fv_crop")


def synthetic_camera(width: int, height: int, kind: str = "woodscape_fv") -> FisheyeCamera:
  """The camera of the synthetic scenes at (width, height).

  ``"woodscape_fv"``: the WoodScape FV lens scaled to ``width`` (any height; the principal point stays at the
  image centre plus the scaled FV offset), every ray of the lens polynomial's range (up to 180 degrees off
  axis). ``"woodscape_fv_crop"``: the original's flat inputs, :meth:`FisheyeCamera.woodscape_fv_crop` (short
  side resized to ``height``, centre crop to ``width``, WoodScape's 190-degree field of view).
  """
  if kind == "woodscape_fv":
    return dataclasses.replace(FisheyeCamera.woodscape_fv(width), height=int(height))
  if kind == "woodscape_fv_crop":
    return FisheyeCamera.woodscape_fv_crop(int(width), int(height))
  raise ValueError(f"data.camera={kind!r} is not a synthetic camera. Fix: use one of {CAMERAS}.")


def _load_dense(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Flat and sphere arrays for the dense tasks from ``config.data.source``."""
  d = config.data
  faces = tuple(d.faces)
  if d.source == "synthetic":
    from healswin_jax.data import synthetic  # pylint: disable=g-import-not-at-top
    cam = synthetic_camera(d.image_width, d.image_height, d.get("camera", "woodscape_fv"))
    both = synthetic.make_dataset(d.num_train + d.num_test, d.seed, cam)
    proj = make_projection(cam, d.nside, faces)
    out = {}
    for part, sl in (("train", slice(0, d.num_train)), ("test", slice(d.num_train, None))):
      rgb, labels, depth = both["rgb"][sl], both["labels"][sl], both["depth"][sl]
      out[part] = dict(rgb=rgb, labels=labels, depth=depth, sphere_rgb=proj.rgb_to_sphere(rgb),
                       sphere_labels=proj.labels_to_sphere(labels), sphere_depth=proj.depth_to_sphere(depth),
                       sphere_mask=np.broadcast_to(proj.sphere_mask, (len(rgb), proj.num_pixels)),
                       projections=[proj] * len(rgb))
    out["num_classes"] = synthetic.NUM_CLASSES
    return out
  if d.source in ("woodscape", "synwoodscape"):
    from healswin_jax.data import woodscape  # pylint: disable=g-import-not-at-top
    syn = d.source == "synwoodscape"
    frames = woodscape.list_frames(d.root or None, synthetic=syn, cam_pos=d.cam_pos or None)
    train_f, test_f = woodscape.train_val_split(frames)
    train_f, test_f = train_f[:d.num_train], test_f[:d.num_test]
    cache = d.cache_dir or os.path.join(woodscape.resolve_root(d.root or None, syn), ".healswin_cache")
    out = {}
    for part, fr in (("train", train_f), ("test", test_f)):
      z = woodscape.load_projected(fr, d.nside, faces, image_width=d.image_width or None, cache_dir=cache,
                                   progress=config.progress)
      z["projections"] = [make_projection(c, d.nside, faces) for c in z["cameras"]]
      out[part] = z
    out["num_classes"] = len(woodscape.WOODSCAPE_CLASSES) if not syn else int(d.num_classes)
    return out
  raise ValueError(f"data.source={d.source!r} is not a dense dataset; use 'synthetic', 'woodscape' or "
                   f"'synwoodscape' (or task='classification' with 'spherical_mnist').")


def _pad_flat(x: np.ndarray, pad: tuple[int, int], value=0) -> np.ndarray:
  widths = [(0, 0), (0, pad[0]), (0, pad[1])] + [(0, 0)] * (x.ndim - 3)
  return np.pad(x, widths, constant_values=value)


def build_data(config: ml_collections.ConfigDict) -> TaskData:
  """Builds :class:`TaskData` for ``config.task`` / ``config.data`` / ``config.model.kind``."""
  task, kind = config.task, config.model.kind
  if task not in TASKS:
    raise ValueError(f"task={task!r} must be one of {TASKS}.")
  if kind not in ("healswin", "flat"):
    raise ValueError(f"model.kind={kind!r} must be 'healswin' or 'flat'.")
  if task == "classification":
    if config.data.source != "spherical_mnist":
      raise ValueError(f"task='classification' is implemented for data.source='spherical_mnist', got "
                       f"{config.data.source!r}. Fix: --set data.source=spherical_mnist.")
    from healswin_jax.data import spherical_mnist  # pylint: disable=g-import-not-at-top
    d = config.data
    if kind == "flat":  # the same digits, not projected: the flat reference of the NR/NR setting
      if d.setting != "nr_nr" or d.get("train_rotations", 1) != 1 or d.get("jitter_deg", 0.0):
        raise ValueError(f"model.kind='flat' classifies the planar digits of the NR/NR setting only, got "
                         f"data.setting={d.setting!r}, train_rotations={d.get('train_rotations', 1)}, "
                         f"jitter_deg={d.get('jitter_deg', 0.0)}. Fix: --set data.setting=nr_nr "
                         "--set data.train_rotations=1 --set data.jitter_deg=0.")
      m = config.model
      z = spherical_mnist.planar_digits(d.num_train, d.num_test, seed=d.seed,
                                        multiple=m.patch_size * m.window_size * 2 ** (len(m.depths) - 1))
      return TaskData(train=dict(inputs=normalize_inputs(z["x_train"]), targets=z["y_train"]),
                      test=dict(inputs=normalize_inputs(z["x_test"]), targets=z["y_test"]), num_classes=10)
    z = spherical_mnist.make_spherical_mnist(d.nside, d.num_train, d.num_test, d.setting, seed=d.seed,
                                             faces=tuple(d.faces), half_extent_deg=d.half_extent_deg,
                                             train_rotations=d.get("train_rotations", 1),
                                             jitter_deg=d.get("jitter_deg", 0.0))
    return TaskData(train=dict(inputs=normalize_inputs(z["x_train"]), targets=z["y_train"]),
                    test=dict(inputs=normalize_inputs(z["x_test"]), targets=z["y_test"]), num_classes=10)

  raw = _load_dense(config)
  frac = config.data.get("train_fraction", 1.0)
  if not 0 < frac <= 1:
    raise ValueError(f"data.train_fraction={frac!r} must be in (0, 1] (the share of the training scenes used).")
  if frac < 1:  # the first ceil(f n) training scenes; the test split does not change
    n = math.ceil(frac * len(raw["train"]["labels"]))
    raw["train"] = {k: v[:n] for k, v in raw["train"].items()}
  tr, te = raw["train"], raw["test"]
  data = TaskData(train={}, test={}, num_classes=raw["num_classes"] if task == "segmentation" else None,
                  projections=te["projections"], test_flat=dict(labels=te["labels"], rgb=te["rgb"]),
                  test_sphere=dict(labels=te["sphere_labels"], sphere_mask=te["sphere_mask"]))
  if task == "depth":
    if "depth" not in tr:
      raise ValueError(f"task='depth' needs depth maps; data.source={config.data.source!r} has none "
                       "(use 'synthetic' or 'synwoodscape').")
    data.test_flat["depth"] = te["depth"]
    data.test_sphere["depth"] = te["sphere_depth"]
    valid = tr["depth"][np.isfinite(tr["depth"])]
    data.depth_mean, data.depth_std = float(valid.mean()), float(valid.std() + 1e-6)

  if task == "segmentation":
    if config.loss.outside_image not in ("void", "ignore"):
      raise ValueError(f"loss.outside_image={config.loss.outside_image!r} must be 'void' or 'ignore'.")
    # Class frequencies over the pixels that enter the loss.
    counted = tr["labels"] if kind == "flat" else (
        tr["sphere_labels"][np.broadcast_to(tr["sphere_mask"], tr["sphere_labels"].shape)]
        if config.loss.outside_image == "ignore" else tr["sphere_labels"])
    weights = class_weights(counted, data.num_classes, config.loss.class_weights)

  def targets_of(z, flat: bool):
    if task == "segmentation":
      # The loss mask carries the class weight of each pixel (0 on padding), so the jitted loss has no
      # dataset-dependent constants.
      y = z["labels"] if flat else z["sphere_labels"]
      w = weights[y]
      if not flat and config.loss.outside_image == "ignore":
        w = w * z["sphere_mask"]
      return y.astype(np.int32), w.astype(np.float32)
    dep = z["depth"] if flat else z["sphere_depth"]
    ok = np.isfinite(dep) & (dep > 0)
    safe = np.where(ok, dep, 1.0)
    y = np.log(safe) if config.loss.depth == "silog" else (safe - data.depth_mean) / data.depth_std
    return np.where(ok, y, 0.0).astype(np.float32), ok.astype(np.float32)

  if kind == "healswin":
    for part, z in (("train", tr), ("test", te)):
      y, m = targets_of(z, flat=False)
      getattr(data, part).update(inputs=normalize_inputs(z["sphere_rgb"]), targets=y, mask=m)
  else:
    h, w = tr["rgb"].shape[1:3]
    mult = config.model.patch_size * config.model.window_size * 2 ** (len(config.model.depths) - 1)
    data.flat_pad = (-h % mult, -w % mult)
    for part, z in (("train", tr), ("test", te)):
      y, m = targets_of(z, flat=True)
      # Pad before normalising: padding is an empty (black) pixel like those outside the lens, never an exact
      # zero token, whose cosine-attention normalisation has gradient ~1/eps at initialisation (zero biases).
      getattr(data, part).update(inputs=normalize_inputs(_pad_flat(z["rgb"], data.flat_pad)),
                                 targets=_pad_flat(y, data.flat_pad), mask=_pad_flat(m, data.flat_pad))
  return data


def normalize_inputs(rgb: np.ndarray) -> np.ndarray:
  """Intensities in [0, 1] -> [-1, 1] float32: a fixed affine map, identical for sphere and flat inputs.

  It also keeps empty pixels (0: outside the image, MNIST background) away from exactly zero tokens, where the
  cosine attention's L2 normalisation has gradient ~1/eps.
  """
  return (np.asarray(rgb, np.float32) * 2.0 - 1.0).astype(np.float32)


def parse_class_weights(rule: Any) -> str | np.ndarray:
  """``loss.class_weights`` as ``"enet"``, ``"none"`` or a float32 vector of finite weights >= 0.

  The field is a string in the config (so ``--set loss.class_weights=none`` works); an explicit list is given
  as its text, ``--set "loss.class_weights=[1, 2, 0.5]"``, or as a Python sequence.
  """
  fix = "use 'enet', 'none' or a list of one weight per class, e.g. --set \"loss.class_weights=[1, 2, 0.5]\""
  if isinstance(rule, str) and rule.strip()[:1] not in ("[", "("):
    if rule in ("enet", "none"):
      return rule
    raise ValueError(f"loss.class_weights={rule!r} is not a known rule. Fix: {fix}.")
  try:
    w = np.asarray(ast.literal_eval(rule.strip()) if isinstance(rule, str) else rule, np.float64)
  except (ValueError, SyntaxError, TypeError) as e:
    raise ValueError(f"loss.class_weights={rule!r} is not a list of numbers ({e}). Fix: {fix}.") from e
  if w.ndim != 1 or not w.size or not np.all(np.isfinite(w)) or np.any(w < 0):
    raise ValueError(f"loss.class_weights={rule!r} must be a non-empty list of finite weights >= 0. Fix: {fix}.")
  return w.astype(np.float32)


def class_weights(labels: np.ndarray, num_classes: int, rule: Any) -> np.ndarray:
  """Per-class loss weights (num_classes,): ``"enet"`` = 1 / ln(1.02 + frequency), ``"none"`` = ones,
  or an explicit list (:func:`parse_class_weights`)."""
  rule = parse_class_weights(rule)
  if isinstance(rule, str):
    if rule == "none":
      return np.ones(num_classes, np.float32)
    freq = np.bincount(np.asarray(labels).ravel(), minlength=num_classes)[:num_classes] / np.size(labels)
    return (1.0 / np.log(1.02 + freq)).astype(np.float32)
  if rule.shape != (num_classes,):
    raise ValueError(f"loss.class_weights has {rule.size} entries for {num_classes} classes. Fix: give one weight "
                     "per class.")
  return rule


def test_subset(data: TaskData, n: int) -> TaskData:
  """``data`` with only the first ``n`` test scenes in ``projections``, ``test_flat`` and ``test_sphere`` (what
  :func:`healswin_jax.evaluation.dense_predictions` reads for outputs on ``data.test["inputs"][:n]``)."""
  return dataclasses.replace(
      data, projections=data.projections[:n],
      test_flat={k: v[:n] for k, v in data.test_flat.items()},
      test_sphere={k: v[:n] for k, v in data.test_sphere.items()})
