"""Segmentation / depth / Chamfer / accuracy metrics against hand-computed and brute-force values."""

import numpy as np
import pytest

from healswin_jax import metrics


def test_confusion_and_iou_by_hand():
  target = np.array([0, 0, 1, 1, 2, 2, 2])
  pred = np.array([0, 1, 1, 1, 2, 0, 2])
  conf = metrics.confusion_matrix(pred, target, 4)
  assert conf.sum() == 7 and conf[2, 0] == 1 and conf[0, 1] == 1
  iou = metrics.iou_per_class(conf)
  # class 0: tp 1, fp 1 (2->0), fn 1 (0->1) -> 1/3; class 1: tp 2, fp 1 -> 2/3; class 2: 2/3; class 3 absent.
  np.testing.assert_allclose(iou[:3], [1 / 3, 2 / 3, 2 / 3])
  assert np.isnan(iou[3])
  assert metrics.mean_iou(conf) == pytest.approx((1 / 3 + 4 / 3) / 3)
  assert metrics.mean_iou(conf, ignore_void=True) == pytest.approx(2 / 3)


def test_confusion_mask_and_label_check():
  target = np.array([[1, 2], [3, 0]])
  pred = np.array([[1, 1], [3, 3]])
  mask = np.array([[True, False], [True, False]])
  conf = metrics.confusion_matrix(pred, target, 4, mask)
  assert conf.sum() == 2 and metrics.mean_iou(conf) == 1.0
  with pytest.raises(ValueError, match="outside 0..3"):
    metrics.confusion_matrix(pred + 1, target, 4)


def test_depth_metrics_known_values():
  target = np.array([1.0, 2.0, 4.0, np.inf, 0.0])
  pred = np.array([1.1, 2.0, 2.0, 5.0, 3.0])
  m = metrics.depth_metrics(pred, target)
  assert m["num_valid"] == 3
  assert m["abs_rel"] == pytest.approx((0.1 + 0 + 0.5) / 3)
  assert m["rmse"] == pytest.approx(np.sqrt((0.01 + 4.0) / 3))
  assert m["log_rmse"] == pytest.approx(np.sqrt((np.log(1.1) ** 2 + np.log(2.0) ** 2) / 3))
  assert m["delta1"] == pytest.approx(2 / 3)
  with pytest.raises(ValueError, match="no valid"):
    metrics.depth_metrics(pred, np.full(5, np.inf))


def test_chamfer_matches_brute_force_and_is_zero_on_equal_sets():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(50, 3)), rng.normal(size=(70, 3))
  d = np.linalg.norm(a[:, None] - b[None], axis=-1)
  assert metrics.chamfer_distance(a, b) == pytest.approx(d.min(1).mean() + d.min(0).mean())
  assert metrics.chamfer_distance(a, a[::-1]) == 0.0


def test_chamfer_squared_matches_brute_force_oracle():
  """The original's definition: squared nearest-neighbour distances, mean each way, summed (a numpy loop)."""
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(40, 3)), 2.0 + rng.normal(size=(25, 3))

  def oracle(x, y):
    return float(np.mean([min(float(np.sum((p - q) ** 2)) for q in y) for p in x]))

  assert metrics.chamfer_squared(a, b) == pytest.approx(oracle(a, b) + oracle(b, a), rel=1e-12)
  # Not the Euclidean one: the two differ on any set whose distances are not all 0 or 1.
  assert metrics.chamfer_squared(a, b) != pytest.approx(metrics.chamfer_distance(a, b), rel=1e-3)
  # Two points at distance 2: each direction contributes 4 m^2 (Euclidean: 2 m).
  assert metrics.chamfer_squared(np.zeros((1, 3)), np.array([[0.0, 0, 2]])) == 8.0
  assert metrics.chamfer_squared(a, a[::-1]) == 0.0
  with pytest.raises(ValueError, match="chamfer_squared needs two non-empty"):
    metrics.chamfer_squared(a, np.zeros((0, 3)))


def test_depth_to_points_uses_valid_rays():
  rays = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
  pts = metrics.depth_to_points(np.array([2.0, np.inf, 3.0]), rays)
  np.testing.assert_array_equal(pts, [[2.0, 0, 0], [0, 0, 3.0]])


def test_accuracy():
  assert metrics.accuracy(np.array([1, 2, 3]), np.array([1, 0, 3])) == pytest.approx(2 / 3)
  logits = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # argmax 1, 2, 0
  assert metrics.accuracy(logits, np.array([1, 0, 0])) == pytest.approx(2 / 3)
  with pytest.raises(ValueError, match="class indices"):
    metrics.accuracy(logits, np.array([1, 0]))
