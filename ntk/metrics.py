"""Metrics for ensembles and their infinite-width limits.

Equivariance (Gerken & Kessel, ICML 2024, arXiv:2403.03103): a predictor f is G-equivariant when
``f(rho_X(g) x) = rho_Y(g) f(x)`` for all g and x (invariant when rho_Y is trivial).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from infra.metrics import accuracy  # noqa: F401  (re-exported: one definition for both packages)
from ntk.groups import FiniteGroup, split_orbit


def orbit_equivariance_errors(f_orbit, group: FiniteGroup, eps: float = 1e-12) -> np.ndarray:
  """Relative equivariance errors from predictions on a group-major orbit.

  Args:
    f_orbit: (order, n, *output_shape) predictions ``f(rho_X(g_a) x_i)``; element 0 is the identity, so
      ``f_orbit[0]`` is ``f(x)``.
    group: the group (its rho_Y maps ``f(x)`` to the expected ``rho_Y(g) f(x)``).
    eps: floor for ``||f(x)||`` (a constant-zero predictor, e.g. the ensemble mean at t = 0, has error 0).

  Returns:
    (order, n) array ``||f(rho_X(g)x_i) − rho_Y(g) f(x_i)|| / max(||f(x_i)||, eps)`` (norms over all
    output axes).
  """
  f_orbit = np.asarray(f_orbit)
  if f_orbit.ndim < 2 or f_orbit.shape[0] != group.order:
    raise ValueError(f"f_orbit of shape {f_orbit.shape} must be (order={group.order}, n, *output_shape).")
  k, n = f_orbit.shape[:2]
  fx = f_orbit[0]
  diff = (f_orbit - np.asarray(group.orbit_y(fx))).reshape(k, n, -1)  # orbit_y checks the output shape
  num = np.sqrt(np.sum(diff**2, axis=-1))
  den = np.maximum(np.sqrt(np.sum(fx.reshape(1, n, -1)**2, axis=-1)), eps)
  return num / den


def equivariance_error(f: Callable, group: FiniteGroup, x, eps: float = 1e-12) -> float:
  """Max over g and inputs of ``||f(rho_X(g) x) − rho_Y(g) f(x)|| / ||f(x)||``.

  Args:
    f: any predictor mapping a batch (B, *input_shape) to a batch (B, *output_shape); it is called once,
      on the whole group-major orbit (order*n rows).
    group: the group.
    x: (n, *input_shape) inputs (on- or off-manifold).
    eps: floor for ``||f(x)||``.

  Returns:
    The maximal relative equivariance error (0 for an exactly equivariant predictor).
  """
  orbit = group.orbit(x)
  k, n = orbit.shape[0], orbit.shape[1]
  out = np.asarray(f(orbit.reshape((k * n,) + tuple(orbit.shape[2:]))))
  return float(np.max(orbit_equivariance_errors(split_orbit(out, k), group, eps)))


# --------------------------------------------------------------------------------------------------
# Ensemble metrics: orbit spread, orbit same predictions, symmetrized KL, accuracy. All take
# group-major orbit predictions ``(order, n, ...)`` with element 0 the identity (``group.orbit`` order).


def _check_orbit(f_orbit, what: str = "f_orbit") -> np.ndarray:
  f_orbit = np.asarray(f_orbit)
  if f_orbit.ndim < 2:
    raise ValueError(f"{what} of shape {f_orbit.shape} must be (order, n, ...): predictions on group-major orbits.")
  return f_orbit


def orbit_spread(f_orbit, group: FiniteGroup) -> np.ndarray:
  """Per-input spread of the canonicalized predictions over the orbit (an absolute equivariance error).

  With ``u_{g,i} = rho_Y(g)^{-1} f(rho_X(g) x_i)`` (constant in g for an equivariant f),
  ``spread_i = sqrt(mean_g ||u_{g,i} - mean_g' u_{g',i}||^2)``. Unlike :func:`orbit_equivariance_errors`
  it does not divide by ``||f(x_i)||``, which is small and noisy for some inputs; and for an ensemble mean of
  M i.i.d. members it falls as ``sqrt(mean member variance / M)`` (Gerken & Kessel, Lemma B.4).

  Args:
    f_orbit: (order, n, *output_shape) predictions ``f(rho_X(g_a) x_i)``.
    group: the group (rho_Y is inverted with ``group.inverse``).

  Returns:
    (n,) spreads (0 for an exactly equivariant predictor).
  """
  u = _orbit_deviations(f_orbit, group)
  return np.sqrt(np.mean(np.sum(u ** 2, axis=-1), axis=0))


def _orbit_deviations(f_orbit, group: FiniteGroup) -> np.ndarray:
  """(order, n, d) ``u_{g,i} - mean_g' u_{g',i}`` with ``u_{g,i} = rho_Y(g)^{-1} f(rho_X(g) x_i)`` flattened."""
  f_orbit = _check_orbit(f_orbit)
  if f_orbit.shape[0] != group.order:
    raise ValueError(f"f_orbit has {f_orbit.shape[0]} orbit elements, the group {group.order}.")
  if group.invariant:
    u = f_orbit
  else:
    u = np.stack([np.asarray(group.act_y(group.inverse(a), f_orbit[a])) for a in range(group.order)])
  k, n = u.shape[:2]
  u = np.asarray(u, dtype=np.float64).reshape(k, n, -1)
  return u - u.mean(0, keepdims=True)


def infinite_ensemble_invariance_error(sub_orbits, group: FiniteGroup, scale: float) -> float:
  """RMS invariance error of the M -> infinity ensemble, estimated from K independent sub-ensemble means.

  A finite ensemble mean is ``E f + noise`` with independent zero-mean noise per disjoint sub-ensemble, so
  its squared orbit deviation is biased upwards by the noise's (the finite-M floor, ~1/M). The cross
  products of *different* sub-ensembles' deviations are unbiased for the squared deviation of ``E f``:
  ``U = (||sum_k u_k||^2 - sum_k ||u_k||^2) / (K (K - 1))`` (a U-statistic), averaged over inputs and group
  elements. Returns ``sqrt(max(U, 0)) / scale``; for K identical, noise-free inputs it equals
  :func:`rms_invariance_error`.

  Args:
    sub_orbits: ``(K, order, n, *output_shape)`` orbit predictions of K >= 2 disjoint sub-ensembles
      (:func:`ntk.ensemble.sub_ensemble_means` of the members' orbit predictions).
    group: the group.
    scale: the unit (e.g. the training targets' RMS).
  """
  sub_orbits = np.asarray(sub_orbits)
  if sub_orbits.ndim < 3 or sub_orbits.shape[0] < 2:
    raise ValueError(f"sub_orbits of shape {sub_orbits.shape} must be (K >= 2, order, n, ...): several "
                     "independent sub-ensembles (use ntk.ensemble.sub_ensemble_means).")
  u = np.stack([_orbit_deviations(o, group) for o in sub_orbits])  # (K, order, n, d)
  kk = u.shape[0]
  cross = (np.sum(u.sum(0) ** 2, axis=-1) - np.sum(u ** 2, axis=(0, -1))) / (kk * (kk - 1))  # (order, n)
  return float(np.sqrt(max(float(np.mean(cross)), 0.0)) / scale)


def rms_invariance_error(f_orbit, group: FiniteGroup, scale: float) -> float:
  """``sqrt(mean_{g,i} ||u_{g,i} - mean_g u||^2) / scale``: the RMS counterpart of :func:`invariance_error`."""
  return float(np.sqrt(np.mean(np.sum(_orbit_deviations(f_orbit, group) ** 2, axis=-1))) / scale)


def invariance_error(f_orbit, group: FiniteGroup, scale: float | None = None) -> float:
  """Mean over inputs of :func:`orbit_spread`, in units of ``scale``.

  Args:
    f_orbit: (order, n, *output_shape) orbit predictions.
    group: the group.
    scale: the unit (e.g. the RMS of the training targets, so that members, ensemble means and mu_t are
      measured in the same unit); default: the RMS norm of ``f_orbit`` itself, ``sqrt(mean_{g,i} ||f||^2)``.
  """
  f_orbit = _check_orbit(f_orbit)
  if scale is None:
    k, n = f_orbit.shape[:2]
    scale = float(np.sqrt(np.mean(np.sum(f_orbit.reshape(k, n, -1) ** 2, axis=-1))))
  if not scale > 0:
    raise ValueError(f"scale={scale} must be positive (a constant-zero predictor has no relative error).")
  return float(np.mean(orbit_spread(f_orbit, group)) / scale)


def orbit_same_predictions_per_input(logits_orbit) -> np.ndarray:
  """OSP(x_i) = #{g : argmax f(rho(g) x_i) = argmax f(x_i)}, in 1..|G| (|G| = perfectly invariant).

  Args:
    logits_orbit: (order, n, classes) logits (or probabilities) on group-major orbits; element 0 = identity.

  Returns:
    (n,) int counts.
  """
  logits_orbit = _check_orbit(logits_orbit, "logits_orbit")
  if logits_orbit.ndim != 3:
    raise ValueError(f"logits_orbit must be (order, n, classes), got {logits_orbit.shape}.")
  pred = np.argmax(logits_orbit, axis=-1)  # (order, n)
  return np.sum(pred == pred[:1], axis=0)


def orbit_same_predictions_pooled(logits) -> tuple[float, float]:
  """Mean and std over inputs of :func:`orbit_same_predictions_per_input`, pooled over the leading member axis
  of ``(M, order, n, classes)`` logits (for an ensemble mean pass ``mean(0, keepdims=True)``)."""
  per = np.concatenate([orbit_same_predictions_per_input(l) for l in logits])
  return float(per.mean()), float(per.std())


def orbit_same_predictions(logits_orbit) -> tuple[float, float]:
  """(mean, std over inputs) of :func:`orbit_same_predictions_per_input`: the OSP of Gerken & Kessel (ICML 2024,
  arXiv:2403.03103), whose tables report it in this form, e.g. 3.85±0.12."""
  osp = orbit_same_predictions_per_input(logits_orbit)
  return float(np.mean(osp)), float(np.std(osp))


def _log_softmax(z: np.ndarray) -> np.ndarray:
  z = z - np.max(z, axis=-1, keepdims=True)
  return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def symmetrized_kl_per_input(logits_orbit) -> np.ndarray:
  """D(x) = (1/|G|) sum_g [KL(p(x) || p(gx)) + KL(p(gx) || p(x))] of the softmax outputs p (float64).

  Args:
    logits_orbit: (order, n, classes) logits on group-major orbits (average *logits* over members before
      calling this for an ensemble: the paper and Nordenfors & Flinth average logits).

  Returns:
    (n,) divergences (0 for an invariant predictor).
  """
  logits_orbit = _check_orbit(logits_orbit, "logits_orbit").astype(np.float64)
  if logits_orbit.ndim != 3:
    raise ValueError(f"logits_orbit must be (order, n, classes), got {logits_orbit.shape}.")
  logp = _log_softmax(logits_orbit)
  lp0 = logp[:1]
  # KL(p||q) + KL(q||p) = sum (p - q)(log p - log q).
  d = np.sum((np.exp(lp0) - np.exp(logp)) * (lp0 - logp), axis=-1)  # (order, n)
  return np.mean(d, axis=0)


def symmetrized_kl(logits_orbit) -> tuple[float, float]:
  """(mean, max over inputs) of :func:`symmetrized_kl_per_input`."""
  d = symmetrized_kl_per_input(logits_orbit)
  return float(np.mean(d)), float(np.max(d))


def relative_error(prediction, reference) -> float:
  """``||prediction - reference|| / ||reference||`` (Frobenius over all axes), e.g. ensemble mean vs mu_t."""
  prediction, reference = np.asarray(prediction, np.float64), np.asarray(reference, np.float64)
  if prediction.shape != reference.shape:
    raise ValueError(f"shapes differ: {prediction.shape} vs {reference.shape}.")
  return float(np.linalg.norm(prediction - reference) / np.linalg.norm(reference))


def member_and_ensemble(metric: Callable, member_orbits, *args, **kwargs) -> dict[str, float]:
  """A metric of every member and of the ensemble mean, from member predictions on group-major orbits.

  Args:
    metric: a function of orbit predictions ``(order, n, ...)`` (and ``*args, **kwargs``) returning a number,
      or a tuple whose first entry is the headline number (as :func:`orbit_same_predictions` and
      :func:`symmetrized_kl` return ``(mean, ...)``), e.g. ``invariance_error`` with ``group`` in ``args``.
    member_orbits: ``(M, order, n, ...)`` predictions of M members (logits for classification: the ensemble
      averages logits, as the paper does).
    *args, **kwargs: passed on to ``metric``.

  Returns:
    ``{"member_mean": mean_m metric(f_m), "member_std": std_m metric(f_m), "ensemble": metric(mean_m f_m)}``.
  """
  member_orbits = np.asarray(member_orbits)
  if member_orbits.ndim < 3:
    raise ValueError(f"member_orbits of shape {member_orbits.shape} must be (M, order, n, ...): one group-major "
                     "orbit prediction per member (split (M, order*n, ...) with ntk.groups.split_orbit(f, order, 1)).")

  def value(f) -> float:
    r = metric(f, *args, **kwargs)
    return float(r[0] if isinstance(r, tuple) else r)

  per_member = np.array([value(f) for f in member_orbits])
  return {"member_mean": float(np.mean(per_member)), "member_std": float(np.std(per_member)),
          "ensemble": value(member_orbits.mean(0))}


def so3_equivariance_error(f_rot, f_x, rots, scale: float) -> float:
  """``mean_{r, n} ||f(rho_X(R_r) x_n) - R_r f(x_n)|| / scale`` for vector outputs that rotate with ``R``.

  Args:
    f_rot: ``(r, n, 3)`` predictions on the rotated inputs.
    f_x: ``(n, 3)`` predictions on the inputs themselves.
    rots: ``(r, 3, 3)`` rotation matrices (e.g. Haar-random, ``scipy.spatial.transform.Rotation.random``).
    scale: the unit (e.g. the target RMS).
  """
  expected = np.einsum("rij,nj->rni", rots, f_x)
  return float(np.mean(np.linalg.norm(f_rot - expected, axis=-1)) / scale)
