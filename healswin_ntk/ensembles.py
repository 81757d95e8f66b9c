"""Vmapped HEAL-SWIN deep ensembles with or without full-orbit augmentation, their orbit predictions, and the
equivariance metrics of members vs ensemble means (Gerken & Kessel, ICML 2024, arXiv:2403.03103).

Members are trained at once by ``ntk.ensemble.train_classifiers`` (one jitted step for all members, snapshots
of the predictions during training); orbit predictions (``ntk.ensemble.orbit_logits``) have shape
``(M, |G|, n, ...)`` (members, group-major orbit, inputs); metrics come from :mod:`ntk.metrics`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from healswin_jax.config import HealSwinConfig
from healswin_jax.model import build_model
from healswin_ntk.tasks import SphereTask, augment
from ntk import ensemble as ens
from ntk import groups as ntk_groups
from ntk import metrics as ntk_metrics


@dataclasses.dataclass(frozen=True)
class EnsembleRun:
  """A trained ensemble: the module, stacked params (leaves ``(M, ...)``), per-step member losses ``(steps, M)``
  and ``snapshots``: ``{step: (M, |G|, n, *output_shape)}`` orbit predictions recorded during training."""
  model: nn.Module
  params: object
  losses: np.ndarray
  augmented: bool
  snapshots: dict = dataclasses.field(default_factory=dict)


def train_ensemble(task: SphereTask, config: HealSwinConfig, *, members: int, steps: int, augmented: bool,
                   learning_rate: float = 3e-3, batch_size: int = 64, key: jax.Array | None = None,
                   steps_per_call: int = 10, snapshot_steps: Sequence[int] = (), snapshot_x=None,
                   chunk: int = 64, progress: bool | str = False) -> EnsembleRun:
  """Trains M HEAL-SWIN members at once on ``task`` (``ntk.ensemble.train_classifiers``: vmapped over members,
  one jitted ``lax.scan`` per call), recording orbit predictions at chosen steps.

  Args:
    task: the data and group.
    config: the model (:func:`healswin_ntk.models.small_config`).
    members: M.
    steps: Adam steps (minibatches of ``batch_size`` drawn per member and epoch).
    augmented: train on the full orbit of every training input (Gerken & Kessel's full augmentation) rather
      than the plain training set (the control).
    learning_rate: Adam step size.
    batch_size: minibatch size (clipped to the training set size).
    key: PRNG key (member m is initialized from ``fold_in(key, m)``).
    steps_per_call: optimizer steps per jitted dispatch (must divide ``steps`` and every snapshot segment).
    snapshot_steps: increasing step counts in ``[0, steps]`` (0 = initialization) at which every member's
      predictions on the group-major orbit of ``snapshot_x`` (n, N, C) are recorded (``run.snapshots``).
    chunk: inputs per evaluation call of the snapshots.
    progress: tqdm bar.
  """
  key = jax.random.PRNGKey(0) if key is None else key
  if snapshot_steps and snapshot_x is None:
    raise ValueError("snapshot_steps given without snapshot_x (the inputs whose orbit predictions are recorded).")
  x, y = (augment(task, task.x_train, task.y_train) if augmented else (task.x_train, task.y_train))
  model = build_model(config)
  loss_fn = ens.cross_entropy_loss  # per example or per pixel, from the labels' shape
  snapshots = {}

  def record(step, params):
    snapshots[step] = ens.orbit_logits(model, params, task.group, snapshot_x, chunk)

  params, losses = ens.train_classifiers(
      model, x, y, members, key, learning_rate=learning_rate, batch_size=min(batch_size, x.shape[0]), steps=steps,
      loss_fn=loss_fn, steps_per_call=steps_per_call, snapshot_steps=snapshot_steps,
      on_snapshot=record if snapshot_steps else None, progress=progress)
  return EnsembleRun(model, params, losses, augmented, snapshots)


def ensemble_metrics(preds: np.ndarray, group: ntk_groups.FiniteGroup, labels: np.ndarray | None = None,
                     sizes: Sequence[int] | None = None) -> dict[str, float]:
  """Equivariance of members vs ensemble means (logit averages) from orbit predictions.

  The invariance/equivariance error is ``ntk.metrics.invariance_error`` (mean over inputs of the orbit spread
  of the canonicalized outputs ``rho_Y(g)^-1 f(rho_X(g) x)``), in units of the members' output RMS so that
  members and ensembles are measured in one unit; for an ensemble of M i.i.d. members it falls like M^-1/2 down
  to the non-equivariance of the infinite ensemble (0 in the NTK limit with full augmentation).

  Args:
    preds: (M, |G|, n, *output_shape) member predictions on orbits (``ntk.ensemble.orbit_logits``).
    group: the group.
    labels: (n,) or (n, N) int labels for accuracies (optional).
    sizes: ensemble sizes for the curve (default 1, 2, 4, ..., M).

  Returns:
    ``inv_err_member`` (mean over members), ``inv_err_ensemble`` (all M), ``ensemble_invariance_gain``,
    ``inv_err_ensemble_M{m}`` (mean over the ``M // m`` disjoint sub-ensembles of m members,
    ``ntk.ensemble.sub_ensemble_means``), and for classifiers ``osp_member``/``osp_ensemble`` (orbit same predictions,
    |G| = perfectly invariant), ``skl_member``/``skl_ensemble`` (symmetrized KL); with labels
    ``acc_member``/``acc_ensemble`` on the untransformed inputs (per-pixel for segmentation) and, for
    classifiers, ``acc_member_orbit``/``acc_ensemble_orbit`` on all |G| transformed copies.
  """
  preds = np.asarray(preds, np.float64)
  m = preds.shape[0]
  sizes = sizes or [s for s in (1, 2, 4, 8, 16, 32, 64, 128) if s <= m]
  scale = float(np.sqrt(np.mean(np.sum(preds.reshape(preds.shape[:3] + (-1,)) ** 2, axis=-1))))
  member_err = [ntk_metrics.invariance_error(p, group, scale) for p in preds]
  out = {"inv_err_member": float(np.mean(member_err)), "inv_err_member_std": float(np.std(member_err))}
  for s in sizes:
    out[f"inv_err_ensemble_M{s}"] = float(np.mean([ntk_metrics.invariance_error(e, group, scale)
                                                   for e in ens.sub_ensemble_means(preds, s)]))
  out["inv_err_ensemble"] = ntk_metrics.invariance_error(preds.mean(0), group, scale)
  out["ensemble_invariance_gain"] = out["inv_err_member"] / max(out["inv_err_ensemble"], 1e-300)
  mean = preds.mean(0)
  if group.invariant:  # classification: (M, |G|, n, classes)
    out["osp_member"] = float(np.mean([ntk_metrics.orbit_same_predictions(p)[0] for p in preds]))
    out["osp_ensemble"], out["osp_ensemble_std"] = ntk_metrics.orbit_same_predictions(mean)
    out["skl_member"] = float(np.mean([ntk_metrics.symmetrized_kl(p)[0] for p in preds]))
    out["skl_ensemble"] = ntk_metrics.symmetrized_kl(mean)[0]
  if labels is not None:
    def pooled_accuracy(scores):  # every (..., classes) row of scores against labels broadcast over the leading axes
      return ntk_metrics.accuracy(scores.reshape(-1, scores.shape[-1]),
                                  np.broadcast_to(labels, scores.shape[:-1]).reshape(-1))

    if group.invariant:
      out["acc_member"] = float(np.mean([ntk_metrics.accuracy(p[0], labels) for p in preds]))
      out["acc_ensemble"] = ntk_metrics.accuracy(mean[0], labels)
      out["acc_member_orbit"] = pooled_accuracy(preds)
      out["acc_ensemble_orbit"] = pooled_accuracy(mean)
    else:
      out["acc_member"] = pooled_accuracy(preds[:, 0])
      out["acc_ensemble"] = pooled_accuracy(mean[0])
  return out


def snapshot_schedule(steps: int, count: int, unit: int) -> tuple[int, ...]:
  """``count`` training-time checkpoints from initialization to the end: 0, then roughly geometric step counts
  from ``unit`` to ``steps`` (early training changes the members fastest), each a multiple of ``unit`` (the
  steps per jitted call); fewer when ``steps / unit`` is too small to give ``count`` distinct values."""
  if count < 2 or steps < unit or steps % unit:
    raise ValueError(f"steps={steps}, count={count}, unit={unit}: need count >= 2 and steps a positive multiple of "
                     "unit (steps_per_call).")
  grid = np.unique(np.round(np.geomspace(1, steps // unit, count - 1)).astype(int)) * unit
  return (0,) + tuple(int(s) for s in grid)
