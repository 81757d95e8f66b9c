"""Bring your own model: train any Flax module on arrays, with checkpoint/resume, in a few keyword arguments.

:func:`fit` is the library entry to the training loop the experiments use (:func:`healswin_jax.train.train`:
optax Adam/AdamW with warmup + cosine decay and gradient clipping, batches that are a pure function of
``(seed, step)``, orbax checkpoints under ``workdir/checkpoints`` and exact resumption). It needs no
``run_config.base_config()``, no :class:`~healswin_jax.tasks.TaskData` and no mask for uniform weights::

  result = fit(MyModel(cfg), inputs, targets, loss="mse", num_steps=200, batch_size=8, lr=1e-3,
               workdir="runs/my_model")
  outputs = result.predict(test_inputs)

Re-running the same call resumes from the latest checkpoint in ``workdir``. A run whose model or settings differ
is refused before anything is restored, naming the differing fields: the model's identity (class, fields, and
the code of your own classes, :func:`infra.model_identity.model_identity`) is part of what is compared, so a
custom head whose activation changed cannot silently continue the other head's run.

For a hand-written loop, :func:`save_checkpoint` / :func:`restore_checkpoint` read and write the same layout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from healswin_jax import evaluation
from healswin_jax import losses as losses_lib
from healswin_jax import train as train_lib
from healswin_jax.tasks import TaskData
from infra import checkpoint

_LOSSES = ("mse", "cross_entropy")


@dataclasses.dataclass
class FitResult:
  """What :func:`fit` returns.

  Attributes:
    params: trained parameters.
    losses: (num_steps,) training loss per step.
    predict: ``predict(inputs) -> outputs``: deterministic forward pass, batched, numpy in and out.
    workdir: where checkpoints and ``metrics.jsonl`` are (None when ``fit`` ran in a temporary directory).
  """
  params: Any
  losses: np.ndarray
  predict: Callable[[np.ndarray], np.ndarray]
  workdir: str | None


def _loss_fn(loss: str | Callable) -> Callable:
  """``loss_fn(outputs, batch) -> scalar`` for the training step; ``batch`` holds inputs, targets, mask."""
  if callable(loss):
    return loss
  if loss == "mse":
    return lambda out, batch: losses_lib.masked_mse(out, batch["targets"], batch.get("mask"))
  if loss == "cross_entropy":
    return lambda logits, batch: losses_lib.weighted_cross_entropy(logits, batch["targets"], None, batch.get("mask"))
  raise ValueError(f"loss={loss!r} must be 'mse', 'cross_entropy' or a function (outputs, batch) -> scalar.")


def _check_arrays(model, inputs: np.ndarray, targets: np.ndarray, mask, loss) -> None:
  if inputs.shape[0] != targets.shape[0]:
    raise ValueError(f"inputs has {inputs.shape[0]} examples but targets has {targets.shape[0]}; give one target "
                     "per input along axis 0.")
  if mask is not None and (mask.shape[0] != targets.shape[0] or mask.shape != targets.shape[:mask.ndim]):
    raise ValueError(f"mask of shape {mask.shape} must be a prefix of targets' shape {targets.shape} (one weight per "
                     "example, or per pixel).")
  out = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0],
                       jax.ShapeDtypeStruct((1,) + inputs.shape[1:], inputs.dtype))
  if loss == "mse" and tuple(out.shape[1:]) != tuple(targets.shape[1:]):
    raise ValueError(f"the model outputs (B, {', '.join(map(str, out.shape[1:]))}) but targets are (n, "
                     f"{', '.join(map(str, targets.shape[1:]))}); for loss='mse' they must match (add a trailing axis "
                     "with targets[..., None] or change the head's width).")
  if loss == "cross_entropy":
    if not np.issubdtype(targets.dtype, np.integer) or tuple(out.shape[1:-1]) != tuple(targets.shape[1:]):
      raise ValueError(f"loss='cross_entropy' needs integer targets of the outputs' shape without the class axis "
                       f"({tuple(out.shape[1:-1])}), got {targets.dtype} {tuple(targets.shape[1:])}.")


def fit(model, inputs, targets, *, num_steps: int, batch_size: int, loss: str | Callable = "mse",
        mask=None, lr: float = 1e-3, optimizer: str = "adam", weight_decay: float = 0.0, warmup_steps: int = 0,
        final_lr_ratio: float = 1.0, grad_clip: float = 0.0, seed: int = 0, workdir: str | None = None,
        checkpoint_every: int | None = None, log_every: int = 10, eval_batch_size: int | None = None,
        progress: bool = False) -> FitResult:
  """Trains ``model`` on ``(inputs, targets)``; resumes from ``workdir`` if it holds this run's checkpoints.

  Args:
    model: a Flax linen module called as ``model.apply({"params": p}, x, deterministic=...)`` (dropout rng
      ``"dropout"``), e.g. a :class:`~healswin_jax.model.HealSwinBody` with your own head.
    inputs: (n, ...) model inputs (e.g. (n, N, C) HEALPix maps in NEST order).
    targets: (n, ...) the model's output shape for ``"mse"``; integer labels without the class axis for
      ``"cross_entropy"``.
    num_steps, batch_size: optimizer steps and examples per step (epoch-wise reshuffled, seeded by ``seed``).
    loss: ``"mse"`` (``mean (f - y)² / 2``), ``"cross_entropy"`` (softmax over the last axis), or a function
      ``(outputs, batch) -> scalar`` with ``batch`` a dict of the step's ``inputs``, ``targets`` and ``mask``.
    mask: optional per-example or per-pixel loss weights, a prefix of ``targets``' shape (0 excludes).
    lr, optimizer, weight_decay, warmup_steps, final_lr_ratio, grad_clip: ``"adam"`` or ``"adamw"``; linear
      warmup to ``lr`` and cosine decay to ``lr * final_lr_ratio`` (1: constant after warmup); global-norm
      clipping when ``grad_clip > 0``.
    seed: initialization, batch order and dropout.
    workdir: checkpoints, ``metrics.jsonl`` and ``train_config.json``; None: a temporary directory (no resume).
    checkpoint_every: steps between checkpoints (default: only at the end).
    log_every: steps between ``metrics.jsonl`` records.
    eval_batch_size: batch of :attr:`FitResult.predict` (default ``batch_size``).
    progress: show a progress bar.

  Returns:
    A :class:`FitResult`.

  Raises:
    ValueError: shapes that do not fit together, or ``workdir`` holds checkpoints of another model/settings.
    FloatingPointError: the loss became non-finite (the message names the step).
  """
  inputs, targets = np.asarray(inputs), np.asarray(targets)
  mask = None if mask is None else np.asarray(mask, np.float32)
  _check_arrays(model, inputs, targets, mask, loss)
  if optimizer not in ("adam", "adamw"):
    raise ValueError(f"optimizer={optimizer!r} must be 'adam' or 'adamw'.")
  for name, value in (("num_steps", num_steps), ("batch_size", batch_size), ("log_every", log_every)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name}={value!r} must be a positive integer.")
  c = ml_collections.ConfigDict()
  c.task = "fit"
  c.loss_name = loss if isinstance(loss, str) else f"{getattr(loss, '__module__', '')}.{getattr(loss, '__qualname__', repr(loss))}"
  c.seed, c.num_steps, c.batch_size = int(seed), int(num_steps), int(batch_size)
  c.checkpoint_every = int(checkpoint_every or num_steps)
  c.log_every, c.progress = int(log_every), bool(progress)
  c.optim = ml_collections.ConfigDict(dict(name=optimizer, lr=float(lr), warmup_steps=int(warmup_steps),
                                           final_lr_ratio=float(final_lr_ratio), weight_decay=float(weight_decay),
                                           grad_clip=float(grad_clip)))
  c.data_shapes = dict(inputs=list(inputs.shape), targets=list(targets.shape))
  arrays = dict(inputs=inputs, targets=targets)
  if mask is not None:
    arrays["mask"] = mask
  data = TaskData(train=arrays, test={})
  with tempfile.TemporaryDirectory() if workdir is None else contextlib.nullcontext(workdir) as wd:
    out = train_lib.train(c, wd, data, model, loss_fn=_loss_fn(loss))
  params, losses = out
  predict = evaluation.make_predict(model, params, int(eval_batch_size or batch_size))
  return FitResult(params=params, losses=losses, predict=predict, workdir=workdir)


def save_checkpoint(workdir: str, step: int, state, losses=None) -> str:
  """Writes ``state`` (any pytree of arrays, e.g. ``{"params": ..., "opt_state": ...}``) as checkpoint ``step``
  under ``workdir/checkpoints`` (the layout of :func:`fit`, :mod:`infra.checkpoint`; the two most recent are
  kept). Returns its path."""
  mngr = train_lib._checkpoint_manager(workdir)  # pylint: disable=protected-access
  checkpoint.save(mngr, step, state, losses)
  return checkpoint.path(mngr, step)


def restore_checkpoint(workdir: str, like, step: int | None = None):
  """The checkpoint ``step`` (default: the latest) of ``workdir`` restored into the structure of ``like``.

  Args:
    workdir: as passed to :func:`save_checkpoint`.
    like: a pytree with the saved structure, shapes and dtypes (e.g. a freshly initialized state, or
      ``jax.eval_shape`` of its init).
    step: which checkpoint; None for the latest.

  Returns:
    ``(step, state, losses)``, or None when ``workdir`` holds no checkpoint.

  Raises:
    infra.checkpoint.CheckpointError (also ``healswin_jax.train.CheckpointError``): the checkpoint is
      unreadable or has another structure (the message names its path and the fix).
  """
  mngr = train_lib._checkpoint_manager(workdir)  # pylint: disable=protected-access
  step = mngr.latest_step() if step is None else int(step)
  if step is None:
    return None
  state, losses = checkpoint.restore(mngr, step, like)
  return step, state, losses
