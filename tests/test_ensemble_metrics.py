"""Ensemble metrics in ntk.metrics: orbit spread / invariance error, OSP, symmetrized KL, accuracy."""

import numpy as np
import pytest
from scipy.special import rel_entr, softmax

from ntk import ensemble as ens
from ntk import groups, metrics


@pytest.fixture
def c4():
  return groups.rotations_c4((3, 3))


def test_orbit_spread_zero_for_invariant_and_equivariant_predictors(c4):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((5, 3, 3))
  inv = lambda z: np.stack([z.sum((1, 2)), (z**2).sum((1, 2))], -1)  # C4-invariant features
  np.testing.assert_allclose(metrics.orbit_spread(inv(c4.orbit(x).reshape(-1, 3, 3)).reshape(4, 5, 2), c4),
                             0, atol=1e-12)
  # Equivariant: 2-D points, outputs rotate with the inputs.
  g = groups.rotations_2d_points(4, equivariant_outputs=True)
  p = rng.standard_normal((6, 2))
  f = lambda z: 3.0 * z * np.linalg.norm(z, axis=-1, keepdims=True)
  np.testing.assert_allclose(metrics.orbit_spread(f(g.orbit(p).reshape(-1, 2)).reshape(4, 6, 2), g), 0, atol=1e-12)
  # ... while the same f is not invariant under the invariant version of the group.
  g_inv = groups.rotations_2d_points(4)
  assert np.all(metrics.orbit_spread(f(g_inv.orbit(p).reshape(-1, 2)).reshape(4, 6, 2), g_inv) > 1e-3)


def test_orbit_spread_value_by_hand(c4):
  f_orbit = np.zeros((4, 1, 1))
  f_orbit[:, 0, 0] = [1.0, -1.0, 1.0, -1.0]  # mean 0, every deviation 1
  np.testing.assert_allclose(metrics.orbit_spread(f_orbit, c4), [1.0])
  np.testing.assert_allclose(metrics.invariance_error(f_orbit, c4, scale=2.0), 0.5)
  np.testing.assert_allclose(metrics.invariance_error(f_orbit, c4), 1.0)  # own RMS is 1


def test_invariance_error_of_ensemble_mean_falls_as_inverse_sqrt_m(c4):
  """i.i.d. non-invariant 'members' (invariant signal + noise): the mean's error ~ M^-1/2 (Lemma B.4)."""
  rng = np.random.default_rng(1)
  members = 1.0 + rng.standard_normal((256, 4, 200, 3))
  ms = [1, 4, 16, 64]
  errs = [np.mean([metrics.invariance_error(e, c4, 1.0) for e in ens.sub_ensemble_means(members, m)]) for m in ms]
  slope = np.polyfit(np.log(ms), np.log(errs), 1)[0]
  assert abs(slope + 0.5) < 0.03, slope


def test_infinite_ensemble_invariance_error_removes_the_finite_m_floor(c4):
  """Members = a fixed non-invariant mean + i.i.d. noise: the sub-ensemble estimate recovers the mean's RMS
  error (the naive error of the M-member mean sits on the noise floor), and equals the plain RMS error for
  noise-free copies."""
  rng = np.random.default_rng(2)
  mean = 1.0 + 0.05 * rng.standard_normal((4, 100, 3))  # RMS invariance error ~0.05 * sqrt(3/4) / scale
  truth = metrics.rms_invariance_error(mean, c4, 1.0)
  members = mean + rng.standard_normal((256, 4, 100, 3))
  subs = ens.sub_ensemble_means(members, 32)  # 8 sub-ensembles
  est = metrics.infinite_ensemble_invariance_error(subs, c4, 1.0)
  naive = metrics.rms_invariance_error(members.mean(0), c4, 1.0)
  assert abs(est - truth) < 0.1 * truth, (est, truth)
  assert naive > 1.2 * truth, (naive, truth)
  np.testing.assert_allclose(metrics.infinite_ensemble_invariance_error(np.stack([mean] * 3), c4, 2.0),
                             truth / 2.0, rtol=1e-12)
  assert metrics.infinite_ensemble_invariance_error(np.ones((4, 4, 5, 1)), c4, 1.0) == 0.0
  with pytest.raises(ValueError, match="sub_ensemble_means"):
    metrics.infinite_ensemble_invariance_error(mean[None], c4, 1.0)


def test_osp_counts(c4):
  logits = np.zeros((4, 3, 2))
  logits[:, 0, 0] = 1          # invariant prediction: OSP 4
  logits[:, 1, 0] = [1, 1, -1, 1]  # one rotation flips it: 3
  logits[:, 2, 0] = [1, -1, -1, -1]  # only the identity agrees: 1 (the minimum)
  np.testing.assert_array_equal(metrics.orbit_same_predictions_per_input(logits), [4, 3, 1])
  mean, std = metrics.orbit_same_predictions(logits)
  assert mean == pytest.approx(8 / 3) and std == pytest.approx(np.std([4, 3, 1]))


def test_symmetrized_kl_matches_scipy():
  rng = np.random.default_rng(2)
  logits = rng.standard_normal((4, 5, 6)) * 2
  p = softmax(logits, axis=-1)
  expected = np.mean([rel_entr(p[0], p[g]).sum(-1) + rel_entr(p[g], p[0]).sum(-1) for g in range(4)], axis=0)
  np.testing.assert_allclose(metrics.symmetrized_kl_per_input(logits), expected, rtol=1e-10)
  mean, mx = metrics.symmetrized_kl(logits)
  assert mean == pytest.approx(expected.mean()) and mx == pytest.approx(expected.max())
  np.testing.assert_allclose(metrics.symmetrized_kl_per_input(np.broadcast_to(logits[:1], logits.shape)), 0,
                             atol=1e-15)


def test_accuracy_and_relative_error():
  assert metrics.accuracy(np.array([[0.1, 0.9], [2.0, 1.0], [0.0, 1.0]]), np.array([1, 0, 0])) == pytest.approx(2 / 3)
  assert metrics.relative_error(np.array([3.0, 4.0]) * 1.1, np.array([3.0, 4.0])) == pytest.approx(0.1)


def test_bad_shapes_raise(c4):
  with pytest.raises(ValueError, match="order"):
    metrics.orbit_same_predictions(np.zeros((4, 3)))
  with pytest.raises(ValueError, match="orbit elements"):
    metrics.orbit_spread(np.zeros((3, 2, 1)), c4)
  with pytest.raises(ValueError, match="labels"):
    metrics.accuracy(np.zeros((3, 2)), np.zeros((2,), int))
  with pytest.raises(ValueError, match="shapes differ"):
    metrics.relative_error(np.zeros(3), np.ones(2))
  with pytest.raises(ValueError, match="size"):
    ens.sub_ensemble_means(np.zeros((4, 2)), 5)
