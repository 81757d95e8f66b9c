"""Evaluation of trained HEAL-SWIN / flat Swin models: batched prediction and the test metrics of each task.

Both geometries are scored on the same image pixels: sphere predictions are back-projected with
:meth:`SphereProjection.to_image`, flat ones cropped, and every score is restricted to the projection's
coverage mask; sphere-side scores use the HEALPix pixels (flat predictions sampled at their centres).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from healswin_jax import metrics as metrics_lib
from healswin_jax import parallel
from healswin_jax.tasks import TaskData


def make_predict(model, params, batch_size: int) -> Callable[[np.ndarray], np.ndarray]:
  """A batched deterministic forward pass (the last batch is padded, so one compilation serves all)."""
  apply = parallel.compiled(("predict", model),
                            lambda: jax.jit(lambda p, x: model.apply({"params": p}, x, deterministic=True)))

  def predict(inputs: np.ndarray) -> np.ndarray:
    outs = []
    for s in range(0, len(inputs), batch_size):
      x = inputs[s:s + batch_size]
      n = len(x)
      if n < batch_size:
        x = np.concatenate([x, np.zeros((batch_size - n,) + x.shape[1:], x.dtype)])
      outs.append(np.asarray(apply(params, jnp.asarray(x)))[:n])
    return np.concatenate(outs)

  return predict


def _crop_flat(x: np.ndarray, data: TaskData) -> np.ndarray:
  ph, pw = data.flat_pad
  h, w = x.shape[1] - ph, x.shape[2] - pw
  return x[:, :h, :w]


def dense_predictions(config, data: TaskData, outputs: np.ndarray) -> dict[str, np.ndarray]:
  """Model outputs on the test set -> ``image`` (n, H, W) predictions back-projected (sphere) or cropped
  (flat), plus ``sphere`` (n, N) predictions (sphere models directly; flat ones sampled at the HEALPix
  centres, the original's ``val_iou_projected_to_hp``). Labels for segmentation, metres for depth."""
  if config.task == "segmentation":
    vals = outputs.argmax(-1).astype(np.int32)
    fill = 0
  else:
    o = outputs[..., 0].astype(np.float64)
    vals = np.exp(o) if config.loss.depth == "silog" else o * data.depth_std + data.depth_mean
    vals = np.maximum(vals, 1e-3).astype(np.float32)
    fill = np.inf
  if config.model.kind == "healswin":
    image = np.stack([p.to_image(v, fill=fill) for p, v in zip(data.projections, vals)])
    return dict(image=image, sphere=vals)
  image = _crop_flat(vals, data)
  to_sph = (lambda p, v: p.labels_to_sphere(v)) if config.task == "segmentation" else (
      lambda p, v: p.depth_to_sphere(v))
  return dict(image=image, sphere=np.stack([to_sph(p, v) for p, v in zip(data.projections, image)]))


def image_segmentation_scores(pred: np.ndarray, labels: np.ndarray, cover: np.ndarray,
                              num_classes: int) -> dict[str, float]:
  """The image-plane segmentation scores of the comparisons: predicted labels (n, H, W) (back-projected or
  cropped) against the image labels (n, H, W) on the coverage mask (n, H, W) -> ``miou_backprojected`` (with
  void), ``miou_backprojected_no_void``, ``pixel_accuracy_backprojected`` and ``iou_backprojected_class{c}``
  (classes absent from both prediction and target have none)."""
  conf = metrics_lib.confusion_matrix(pred, labels, num_classes, cover)
  out = dict(miou_backprojected=metrics_lib.mean_iou(conf),
             miou_backprojected_no_void=metrics_lib.mean_iou(conf, ignore_void=True),
             pixel_accuracy_backprojected=float(np.trace(conf) / max(conf.sum(), 1)))
  for c, v in enumerate(metrics_lib.iou_per_class(conf)):
    if np.isfinite(v):
      out[f"iou_backprojected_class{c}"] = float(v)
  return out


def evaluate(config, data: TaskData, outputs: np.ndarray) -> dict[str, float]:
  """Test metrics from the model outputs on ``data.test['inputs']``."""
  if config.task == "classification":
    return dict(test_accuracy=metrics_lib.accuracy(outputs, data.test["targets"]))
  pred = dense_predictions(config, data, outputs)
  cover = np.stack([p.image_mask for p in data.projections])  # (n, H, W) the same pixels for both geometries
  smask = data.test_sphere["sphere_mask"]
  if config.task == "segmentation":
    k = data.num_classes
    conf_sph = metrics_lib.confusion_matrix(pred["sphere"], data.test_sphere["labels"], k, smask)
    conf_all = metrics_lib.confusion_matrix(pred["sphere"], data.test_sphere["labels"], k)
    out = image_segmentation_scores(pred["image"], data.test_flat["labels"], cover, k)
    out.update(miou_sphere=metrics_lib.mean_iou(conf_sph),
               miou_sphere_no_void=metrics_lib.mean_iou(conf_sph, ignore_void=True),
               miou_sphere_all_pixels=metrics_lib.mean_iou(conf_all))
    return out
  target = data.test_flat["depth"]
  out = metrics_lib.depth_metrics(pred["image"], target, cover)
  out["num_valid"] = float(out["num_valid"])
  sph = metrics_lib.depth_metrics(pred["sphere"], data.test_sphere["depth"], smask)
  out.update({f"sphere_{k}": v for k, v in sph.items() if k != "num_valid"})
  chamfers = []  # per image (Euclidean, squared), averaged over images as in the original
  for p, pi, ti in zip(data.projections, pred["image"], target):
    rays = p.camera.pixel_rays()[0]
    m = p.image_mask & metrics_lib.valid_depth(ti)
    if m.any():
      a, b = metrics_lib.depth_to_points(pi, rays, m), metrics_lib.depth_to_points(ti, rays, m)
      chamfers.append((metrics_lib.chamfer_distance(a, b), metrics_lib.chamfer_squared(a, b)))
  out["chamfer"], out["chamfer_squared"] = (float(v) for v in np.mean(chamfers, axis=0))
  return out


def loss_summary(losses: np.ndarray) -> dict[str, float]:
  """``loss_first`` / ``loss_last``: mean training loss over the first / last 10 % of the steps (>= 1 step)."""
  w = max(1, len(losses) // 10)
  return dict(loss_first=float(np.mean(losses[:w])), loss_last=float(np.mean(losses[-w:])))
