"""Evaluation metrics for HEAL-SWIN (host-side numpy): segmentation IoU, depth errors, Chamfer
(Euclidean and squared); ``accuracy`` is :func:`infra.metrics.accuracy`.

Segmentation follows the original HEAL-SWIN code's definitions: a confusion matrix accumulated over the evaluated
pixels, per-class IoU = TP / (TP + FP + FN), mIoU = mean over classes that occur (in the target or the
prediction); "with void" averages all classes (``val_iou_global``), "without void" drops class 0
(``val_iou_global_ignored``). Depth metrics are the standard monocular-depth set (Eigen et al. 2014,
arXiv:1406.2283), which the original did not implement; they are computed over valid (finite, > 0) targets.
"""

from __future__ import annotations

import numpy as np

from infra.metrics import accuracy  # noqa: F401  (re-exported: one definition for both packages)


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int,
                     mask: np.ndarray | None = None) -> np.ndarray:
  """Counts ``C[t, p]`` over pixels (any matching shapes); ``mask`` (bool, same shape) selects pixels.

  Returns:
    (num_classes, num_classes) int64, rows = target class, columns = predicted class.
  """
  pred = np.asarray(pred)
  target = np.asarray(target)
  if pred.shape != target.shape:
    raise ValueError(f"pred {pred.shape} and target {target.shape} shapes differ.")
  if mask is not None:
    try:
      mask = np.broadcast_to(np.asarray(mask, bool), pred.shape)
    except ValueError as e:
      raise ValueError(f"mask of shape {np.shape(mask)} does not broadcast to the pixels {pred.shape}.") from e
    pred, target = pred[mask], target[mask]
  pred = pred.astype(np.int64).ravel()
  target = target.astype(np.int64).ravel()
  for name, a in (("pred", pred), ("target", target)):
    if a.size and (a.min() < 0 or a.max() >= num_classes):
      raise ValueError(f"{name} has labels outside 0..{num_classes - 1} (min {a.min()}, max {a.max()}).")
  return np.bincount(target * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
  """Per-class IoU from a confusion matrix: (C,) float64, NaN for classes absent from target and prediction."""
  conf = np.asarray(conf, np.float64)
  tp = np.diag(conf)
  denom = conf.sum(0) + conf.sum(1) - tp
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(denom > 0, tp / denom, np.nan)


def mean_iou(conf: np.ndarray, ignore_void: bool = False, void_class: int = 0) -> float:
  """mIoU over the classes present; ``ignore_void`` drops ``void_class`` (the original's ``_ignored``)."""
  iou = iou_per_class(conf)
  if ignore_void:
    iou = np.delete(iou, void_class)
  return float(np.nanmean(iou)) if np.any(np.isfinite(iou)) else float("nan")


def valid_depth(target: np.ndarray) -> np.ndarray:
  """Where a depth target counts: finite and positive (0, inf = no data or sky)."""
  target = np.asarray(target)
  return np.isfinite(target) & (target > 0)


def depth_metrics(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None,
                  min_depth: float = 1e-3) -> dict[str, float]:
  """Standard depth errors over valid target pixels (and ``mask``).

  Predictions are clipped below at ``min_depth`` so that ``log`` and ratios are defined.

  Returns:
    ``abs_rel`` = mean |p - t| / t, ``rmse`` = sqrt(mean (p - t)^2), ``log_rmse`` = sqrt(mean (log p - log t)^2),
    ``delta1`` = fraction with max(p/t, t/p) < 1.25, ``num_valid``.
  """
  pred = np.asarray(pred, np.float64)
  target = np.asarray(target, np.float64)
  if pred.shape != target.shape:
    raise ValueError(f"pred {pred.shape} and target {target.shape} shapes differ.")
  m = valid_depth(target)
  if mask is not None:
    m &= np.broadcast_to(np.asarray(mask, bool), m.shape)
  if not m.any():
    raise ValueError("depth_metrics: no valid target pixels (all masked, non-finite or <= 0).")
  p = np.maximum(pred[m], min_depth)
  t = target[m]
  ratio = np.maximum(p / t, t / p)
  return dict(abs_rel=float(np.mean(np.abs(p - t) / t)), rmse=float(np.sqrt(np.mean((p - t) ** 2))),
              log_rmse=float(np.sqrt(np.mean((np.log(p) - np.log(t)) ** 2))),
              delta1=float(np.mean(ratio < 1.25)), num_valid=int(m.sum()))


def depth_to_points(depth: np.ndarray, rays: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
  """Point cloud from ray distances: depth (...,) times unit rays (..., 3) at valid (and masked) pixels.

  Depth is the Euclidean distance along the ray (SynWoodScape / the synthetic renderer's convention).
  Returns (M, 3) float64.
  """
  depth = np.asarray(depth, np.float64)
  m = valid_depth(depth)
  if mask is not None:
    m &= np.asarray(mask, bool)
  return depth[m][:, None] * np.asarray(rays, np.float64)[m]


def _nearest_neighbour_distances(a: np.ndarray, b: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
  """Euclidean distances (M,) from each point of ``a`` to its nearest in ``b``, and (K,) from ``b`` to ``a``."""
  from scipy.spatial import cKDTree  # pylint: disable=g-import-not-at-top
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not len(a) or not len(b):
    raise ValueError(f"{name} needs two non-empty (M, D) point sets, got {a.shape} and {b.shape}.")
  d_ab, _ = cKDTree(b).query(a)
  d_ba, _ = cKDTree(a).query(b)
  return d_ab, d_ba


def chamfer_distance(a: np.ndarray, b: np.ndarray) -> float:
  """Symmetric Euclidean Chamfer distance: mean_a min_b |a - b| + mean_b min_a |a - b| (metres).

  Not the original HEAL-SWIN depth metric, which squares the distances (:func:`chamfer_squared`).

  Args:
    a: (M, 3) points; b: (K, 3) points (both non-empty).
  """
  d_ab, d_ba = _nearest_neighbour_distances(a, b, "chamfer_distance")
  return float(d_ab.mean() + d_ba.mean())


def chamfer_squared(a: np.ndarray, b: np.ndarray) -> float:
  """Symmetric squared Chamfer distance: mean_a min_b |a - b|^2 + mean_b min_a |a - b|^2 (square metres).

  The original HEAL-SWIN depth metric (``best_chamfer_distance_full_res_hp_masked``): the chamfer_distance
  package over PyTorch3D ``knn_points``, whose distances are squared L2, summed over both directions. The
  original computes it per image and averages over images; callers do the same.

  Args:
    a: (M, 3) points; b: (K, 3) points (both non-empty).
  """
  d_ab, d_ba = _nearest_neighbour_distances(a, b, "chamfer_squared")
  return float(np.mean(d_ab**2) + np.mean(d_ba**2))
