"""Training of HEAL-SWIN (sphere) and the flat Swin baseline: ``train_and_evaluate(config, workdir)``.

The data come from :func:`healswin_jax.tasks.build_data`, the model from :func:`healswin_jax.model.build_model`
of :func:`model_config`, the loss from :func:`healswin_jax.losses.make_loss_fn`, the test metrics from
:mod:`healswin_jax.evaluation`. Three tasks (``config.task``: segmentation, depth, classification) and two
geometries (``config.model.kind``: ``"healswin"`` on HEALPix NEST maps (B, N, C), ``"flat"`` on the fisheye
images (B, H, W, C)).

Mechanics (big_vision-style): optax Adam/AdamW with linear warmup + cosine decay; the jitted, batch-sharded
step of :func:`healswin_jax.parallel.make_train_step` (dropout key of step t = ``fold_in(key, t)``); the batch
of step t is a pure function of (seed, t); orbax checkpoints every ``checkpoint_every`` steps and at the end.
Re-running with the same ``workdir`` restores the latest checkpoint (parameters, optimizer state and the loss
history) and continues, ending with the same metrics as an uninterrupted run; every checkpoint carries a stamp
of the config and one written by another config is refused before restoring, and a second live run on the same
workdir is refused by its lock (:mod:`infra.run_guard`). Losses stream to ``workdir/metrics.jsonl``; a
non-finite loss or non-finite updated parameters stop training with the step number, before any checkpoint or
evaluation. :func:`validate_config` range-checks the run settings before any data is built or compiled.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from healswin_jax import evaluation
from healswin_jax import parallel
from healswin_jax.config import FlatSwinConfig, HealSwinConfig
from healswin_jax.losses import make_loss_fn
from healswin_jax.model import build_model
from healswin_jax.tasks import TASKS, TaskData, build_data, parse_class_weights
from infra import checkpoint
from infra import mesh as mesh_lib
from infra.model_identity import model_identity
from infra import run_guard

# Config fields that may change between a run and its resumption (they do not affect the numbers).
_RESUME_FREE_FIELDS = ("checkpoint_every", "log_every", "progress", "figures")
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


# ============================================================================================================
# Model and optimizer
# ============================================================================================================


def _positive_int(config, name: str, example: int) -> None:
  v = config
  for part in name.split("."):
    v = v[part]
  if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
    raise ValueError(f"{name}={v!r} must be a positive integer. Fix: --set {name}={example}.")


def _number(config, name: str, low: float, strict: bool, example: str) -> None:
  group, field = name.split(".")
  v = config[group][field]
  ok = (not isinstance(v, bool) and isinstance(v, (int, float, np.number)) and math.isfinite(v)
        and (v > low if strict else v >= low))
  if not ok:
    raise ValueError(f"{name}={v!r} must be a finite number {'>' if strict else '>='} {low}. "
                     f"Fix: --set {name}={example}.")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Range checks of the run settings, before any data is built or anything is compiled.

  Every error names the field and the fix. The model config is checked by building its
  :class:`HealSwinConfig` (flat models are checked when built: their image size comes from the data).
  """
  if config.task not in TASKS:
    raise ValueError(f"task={config.task!r} must be one of {TASKS}. Fix: --set task=segmentation.")
  for name, example in (("num_steps", 100), ("batch_size", 4), ("eval_batch_size", 8), ("checkpoint_every", 50),
                        ("log_every", 10), ("data.num_train", 64), ("data.num_test", 16)):
    _positive_int(config, name, example)
  _number(config, "optim.lr", 0.0, True, "1e-3")
  _number(config, "optim.final_lr_ratio", 0.0, False, "0.05")
  _number(config, "optim.weight_decay", 0.0, False, "1e-4")
  _number(config, "optim.grad_clip", 0.0, False, "1.0 (0 disables clipping)")
  warmup = config.optim.warmup_steps
  if isinstance(warmup, bool) or not isinstance(warmup, (int, np.integer)) or warmup < 0:
    raise ValueError(f"optim.warmup_steps={warmup!r} must be an integer >= 0. Fix: --set optim.warmup_steps=10.")
  if config.task == "segmentation":
    parse_class_weights(config.loss.class_weights)
  if config.model.kind == "healswin":
    fields = {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in config.model.items() if k != "kind"}
    HealSwinConfig(nside=config.data.nside, faces=tuple(config.data.faces), head=config.task, in_channels=1,
                   **fields)
  elif config.model.kind != "flat":
    raise ValueError(f"model.kind={config.model.kind!r} must be 'healswin' or 'flat'. Fix: --set model.kind=healswin.")


def model_config(config: ml_collections.ConfigDict, data: TaskData) -> HealSwinConfig | FlatSwinConfig:
  """The model config of ``config.model`` (``kind`` plus the model config's fields) for ``data``'s input
  channels, classes and (flat) image size; :func:`healswin_jax.model.build_model` builds the module."""
  fields = {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in config.model.items() if k != "kind"}
  fields.update(head=config.task, in_channels=int(data.train["inputs"].shape[-1]))
  if data.num_classes is not None:
    fields["num_classes"] = data.num_classes
  if config.model.kind == "healswin":
    return HealSwinConfig(nside=config.data.nside, faces=tuple(config.data.faces), **fields)
  return FlatSwinConfig(image_size=tuple(data.train["inputs"].shape[1:3]), **fields)


def make_optimizer(optim: ml_collections.ConfigDict, num_steps: int):
  """Adam / AdamW with linear warmup to ``lr`` and cosine decay to ``lr * final_lr_ratio``, after global-norm
  clipping. Returns ``(optimizer, schedule)``."""
  warmup = int(min(optim.warmup_steps, max(num_steps - 1, 0)))
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0 if warmup else optim.lr, peak_value=optim.lr, warmup_steps=warmup,
      decay_steps=max(num_steps, warmup + 1), end_value=optim.lr * optim.final_lr_ratio)
  if optim.name == "adam":
    opt = optax.adam(schedule)
  elif optim.name == "adamw":
    opt = optax.adamw(schedule, weight_decay=optim.weight_decay)
  else:
    raise ValueError(f"optim.name={optim.name!r} must be 'adam' or 'adamw'.")
  parts = [optax.clip_by_global_norm(optim.grad_clip)] if optim.grad_clip else []
  return optax.chain(*parts, opt), schedule


def batch_indices(seed: int, step: int, num_examples: int, batch_size: int) -> np.ndarray:
  """Examples of step ``step``: epoch-wise permutations from ``default_rng([seed, epoch])`` (a pure function of
  the step, so a resumed run sees exactly the batches the uninterrupted run would)."""
  per_epoch = max(num_examples // batch_size, 1)
  epoch, k = divmod(step, per_epoch)
  perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
  idx = perm[k * batch_size:(k + 1) * batch_size]
  if len(idx) < batch_size:  # fewer examples than the batch: wrap around
    idx = np.resize(perm, batch_size)
  return idx


# ============================================================================================================
# Checkpoints and logs
# ============================================================================================================


CheckpointError = checkpoint.CheckpointError  # raised for checkpoints that exist but cannot be restored


def _checkpoint_manager(workdir: str, max_to_keep: int = 2):
  """The manager of ``workdir/checkpoints`` (:mod:`infra.checkpoint`'s layout, shared with ``ntk.ensemble``)."""
  return checkpoint.manager(os.path.join(workdir, "checkpoints"), max_to_keep=max_to_keep)


def _run_stamp(config: ml_collections.ConfigDict, model=None) -> dict[str, Any]:
  """The stamp every checkpoint carries: the config minus the fields that may change on resume, plus the model's
  identity (class, fields and the code of user-defined classes, :func:`infra.model_identity.model_identity`)."""
  fields = {k: v for k, v in json.loads(config.to_json()).items() if k not in _RESUME_FREE_FIELDS}
  if model is not None:
    fields["model_identity"] = model_identity(model)
  return run_guard.stamp(fields)


def _read_jsonl(path: str, max_step: int) -> list[dict]:
  """Records of ``path`` with step < max_step; a torn last line (killed mid-write) is dropped."""
  if not os.path.exists(path):
    return []
  out = []
  with open(path) as f:
    for line in f:
      try:
        rec = json.loads(line)
      except json.JSONDecodeError:
        continue
      if rec.get("step", math.inf) < max_step:
        out.append(rec)
  return out


# ============================================================================================================
# Training loop
# ============================================================================================================


@dataclasses.dataclass
class TrainResult:
  """What :func:`train_and_evaluate` returns.

  Attributes:
    metrics: flat ``{name: float}`` (also the last line of ``metrics.jsonl``).
    params: trained parameters.
    model: the Flax module.
    data: the :class:`TaskData` used.
    predict: ``predict(inputs) -> outputs`` (deterministic forward pass, batched, numpy in/out).
    losses: (num_steps,) training loss per step.
  """
  metrics: dict[str, float]
  params: Any
  model: Any
  data: TaskData
  predict: Callable[[np.ndarray], np.ndarray]
  losses: np.ndarray


def _mesh_for(batch_size: int):
  n = jax.device_count()
  if jax.process_count() > 1 and batch_size % n:
    raise ValueError(f"batch_size={batch_size} cannot be split over the {n} devices of {jax.process_count()} "
                     f"processes. Fix: use a batch_size divisible by {n}.")
  while batch_size % n:
    n -= 1
  return parallel.data_mesh(n)


def train(config: ml_collections.ConfigDict, workdir: str, data: TaskData, model,
          stop_after: int | None = None, loss_fn: Callable | None = None):
  """The training loop with checkpoint/resume. Returns ``(params, losses)`` or None when ``stop_after``
  (a step count, for preemption tests and time-sliced jobs) ended the run early after checkpointing.

  ``loss_fn(outputs, batch) -> scalar`` replaces the task's loss (:func:`make_loss_fn`); library users call
  :func:`healswin_jax.fit.fit` instead, which builds the config and data from arrays."""
  with run_guard.workdir_lock(workdir, "HEAL-SWIN training"):
    return _train(config, workdir, data, model, stop_after, loss_fn)


def _train(config, workdir, data, model, stop_after, loss_fn):
  """:func:`train` inside the workdir lock."""
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  num_steps, bs = int(config.num_steps), int(config.batch_size)
  optimizer, schedule = make_optimizer(config.optim, num_steps)
  opt_key = (config.optim.to_json(), num_steps)
  mesh = _mesh_for(bs)
  root = jax.random.key(config.seed)
  example = jnp.asarray(data.train["inputs"][:1])
  init = lambda k, x: parallel.init_train_state(model, optimizer, k, x)
  init_key = jax.random.fold_in(root, 0)
  losses = np.full(num_steps, np.nan, np.float32)
  mngr = _checkpoint_manager(workdir)
  start = 0
  latest = mngr.latest_step()
  run_stamp = _run_stamp(config, model)
  if latest is not None:
    # Compared before anything is restored: the stamp is stored inside the checkpoint (atomically with it).
    checkpoint.check_stamp(mngr, latest, run_stamp)
    # Restore into the abstract state: no initialisation needs compiling on resume.
    rep = parallel.replicated(mesh)
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep),
                            jax.eval_shape(init, init_key, example))
    state, losses = checkpoint.restore(mngr, latest, abstract, num_losses=len(losses))
    start = latest
  else:
    # Initialisation runs once, so compile it cheaply: XLA's optimisation passes on the per-parameter
    # threefry/truncated-normal graph cost far more compile time than they could ever save at run time.
    compiled = parallel.compiled(("init", model, opt_key, example.shape), lambda: jax.jit(init).lower(
        init_key, example).compile(compiler_options=_FAST_COMPILE))
    state = compiled(init_key, example)
    state = parallel.replicate(state, mesh)
  # Across processes, process 0 writes the log; every process trains on its own rows of each batch.
  log_path = os.path.join(workdir, "metrics.jsonl") if mesh_lib.is_primary() else os.devnull
  records = _read_jsonl(log_path, start)
  with open(log_path, "w") as f:  # drop records past the checkpoint: they will be recomputed identically
    f.writelines(json.dumps(r) + "\n" for r in records)
  rows = parallel.local_batch_rows(bs, mesh)

  loss_key = loss_fn if loss_fn is not None else (config.task, config.loss.depth)
  step_fn = parallel.compiled(("step", model, loss_key, opt_key, mesh),
                              lambda: parallel.make_train_step(model.apply, loss_fn or make_loss_fn(config), optimizer,
                                                               mesh=mesh))
  dropout_key = jax.random.fold_in(root, 1)
  n_train = len(data.train["targets"])
  t0 = time.perf_counter()
  with open(log_path, "a") as log, tqdm(total=num_steps, initial=start, desc=f"train {config.task}",
                                         disable=not config.progress, dynamic_ncols=True) as bar:
    for step in range(start, num_steps):
      idx = batch_indices(config.seed, step, n_train, bs)[rows]
      batch = mesh_lib.global_batch({k: v[idx] for k, v in data.train.items()}, parallel.batch_sharded(mesh), bs)
      state, m = step_fn(state, batch, dropout_key)
      loss = float(m["loss"])
      if not math.isfinite(loss):
        raise FloatingPointError(f"training loss is {loss} at step {step} (0-based); stopping. Fix: lower "
                                 f"optim.lr (now {config.optim.lr}) or enable optim.grad_clip.")
      if not math.isfinite(float(m["param_norm"])):  # the update itself diverged (the last one included)
        raise FloatingPointError(f"the parameters after the update of step {step} (0-based) are not finite "
                                 f"(float32 global norm {float(m['param_norm'])}); stopping before any checkpoint "
                                 f"or evaluation. Fix: lower optim.lr (now {config.optim.lr}) or enable "
                                 "optim.grad_clip.")
      losses[step] = loss
      done = step + 1
      if step % config.log_every == 0 or done == num_steps:
        rec = dict(step=step, loss=loss, grad_norm=float(m["grad_norm"]), lr=float(schedule(step)),
                   seconds=round(time.perf_counter() - t0, 3))
        log.write(json.dumps(rec) + "\n")
        log.flush()
        bar.set_postfix(loss=f"{loss:.4f}")
      bar.update(1)
      stop = stop_after is not None and done >= stop_after and done < num_steps
      if done % config.checkpoint_every == 0 or done == num_steps or stop:
        checkpoint.save(mngr, done, state, losses, run_stamp)
      if stop:
        return None
  params = state.params
  if not jax.tree.leaves(params)[0].is_fully_addressable:  # replicated over processes: evaluate locally
    params = mesh_lib.to_host(params)
  return params, losses


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, stop_after: int | None = None,
                       data: TaskData | None = None) -> TrainResult | None:
  """Builds data and model from ``config``, trains (resuming from ``workdir`` if it holds checkpoints) and
  evaluates on the test split.

  Args:
    config: see :func:`healswin_jax.run_config.base_config` for the fields.
    workdir: checkpoints (``workdir/checkpoints``, each stamped with the config) and ``metrics.jsonl`` go here;
      it is locked for the call (:func:`infra.run_guard.workdir_lock`).
    stop_after: end the run after this many steps (checkpointed); returns None. Re-running continues.
    data: the :func:`build_data` of ``config`` when the caller already has it (several seeds of one setting).

  Returns:
    A :class:`TrainResult` (metrics include ``loss_first``, ``loss_last`` and the task's test metrics).
  """
  validate_config(config)
  with run_guard.workdir_lock(workdir, "HEAL-SWIN training"):
    data = build_data(config) if data is None else data
    model = build_model(model_config(config, data))
    out = train(config, workdir, data, model, stop_after=stop_after)
    if out is None:
      return None
    params, losses = out
    predict = evaluation.make_predict(model, params, int(config.eval_batch_size))
    outputs = predict(data.test["inputs"])
    bad = ~np.isfinite(outputs)
    if bad.any():
      raise FloatingPointError(f"{100 * bad.mean():.3g} % of the test outputs are NaN/inf after {config.num_steps} "
                               f"steps; no metrics written. Fix: lower optim.lr (now {config.optim.lr}) or "
                               "enable optim.grad_clip.")
    metrics = dict(evaluation.loss_summary(losses), **evaluation.evaluate(config, data, outputs))
    if mesh_lib.is_primary():
      with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(dict(step=int(config.num_steps), final=metrics)) + "\n")
  return TrainResult(metrics=metrics, params=params, model=model, data=data, predict=predict, losses=losses)
