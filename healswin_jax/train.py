"""Training and evaluation of HEAL-SWIN (sphere) and the flat Swin baseline: ``train_and_evaluate(config, workdir)``.

One driver for three tasks (``config.task``):

- ``"segmentation"``: class-weighted cross-entropy (HEAL-SWIN §2; weights from the training label frequencies
  with the ENet rule ``1 / ln(1.02 + f_c)``, Paszke et al. 2016, arXiv:1606.02147, or given explicitly);
- ``"depth"``: masked MSE on standardised depth (the original's loss) or SILog on log depth (Eigen et al.
  2014, arXiv:1406.2283), over finite targets only;
- ``"classification"``: cross-entropy (spherical MNIST).

and two geometries (``config.model.kind``): ``"healswin"`` on HEALPix NEST maps (B, N, C) and ``"flat"`` on the
fisheye images (B, H, W, C). Both are evaluated on the same image pixels: sphere predictions are back-projected
with :meth:`SphereProjection.to_image` and every score is restricted to the projection's coverage mask.

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

import ast
import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from healswin_jax import metrics as metrics_lib
from healswin_jax import parallel
from healswin_jax.config import FlatSwinConfig, HealSwinConfig
from healswin_jax.data.fisheye import FisheyeCamera, SphereProjection, make_projection
from infra import run_guard

TASKS = ("segmentation", "depth", "classification")
# Config fields that may change between a run and its resumption (they do not affect the numbers).
_RESUME_FREE_FIELDS = ("checkpoint_every", "log_every", "progress", "figures")
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
# Jitted init / step / predict functions, reused by later runs in the same process with the same model,
# optimizer and mesh (a resumed run, the settings of one experiment, tests): compiling dominates small runs.
_COMPILED: dict[Any, Any] = {}


def _cached(key, build: Callable[[], Any]):
  if key not in _COMPILED:
    if len(_COMPILED) >= 32:
      _COMPILED.clear()
    _COMPILED[key] = build()
  return _COMPILED[key]


# ============================================================================================================
# Data
# ============================================================================================================


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


def synthetic_camera(width: int, height: int) -> FisheyeCamera:
  """The WoodScape-FV-like camera of the synthetic scenes at (width, height) (any height; the principal
  point stays at the image centre plus the scaled FV offset)."""
  return dataclasses.replace(FisheyeCamera.woodscape_fv(width), height=int(height))


def _load_dense(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Flat and sphere arrays for the dense tasks from ``config.data.source``."""
  d = config.data
  faces = tuple(d.faces)
  if d.source == "synthetic":
    from healswin_jax.data import synthetic  # pylint: disable=g-import-not-at-top
    cam = synthetic_camera(d.image_width, d.image_height)
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
  if isinstance(config.optim.warmup_steps, bool) or not isinstance(config.optim.warmup_steps, (int, np.integer)) \
      or config.optim.warmup_steps < 0:
    raise ValueError(f"optim.warmup_steps={config.optim.warmup_steps!r} must be an integer >= 0. "
                     "Fix: --set optim.warmup_steps=10.")
  if config.task == "segmentation":
    parse_class_weights(config.loss.class_weights)
  if config.model.kind == "healswin":
    fields = {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in config.model.items() if k != "kind"}
    HealSwinConfig(nside=config.data.nside, faces=tuple(config.data.faces), head=config.task, in_channels=1,
                   **fields)
  elif config.model.kind != "flat":
    raise ValueError(f"model.kind={config.model.kind!r} must be 'healswin' or 'flat'. Fix: --set model.kind=healswin.")


def build_data(config: ml_collections.ConfigDict) -> TaskData:
  """Builds :class:`TaskData` for ``config.task`` / ``config.data`` / ``config.model.kind``."""
  task, kind = config.task, config.model.kind
  if task not in TASKS:
    raise ValueError(f"task={task!r} must be one of {TASKS}.")
  if kind not in ("healswin", "flat"):
    raise ValueError(f"model.kind={kind!r} must be 'healswin' or 'flat'.")
  if task == "classification":
    if config.data.source != "spherical_mnist" or kind != "healswin":
      raise ValueError("task='classification' is implemented for data.source='spherical_mnist' with "
                       "model.kind='healswin'.")
    from healswin_jax.data import spherical_mnist  # pylint: disable=g-import-not-at-top
    d = config.data
    z = spherical_mnist.make_spherical_mnist(d.nside, d.num_train, d.num_test, d.setting, seed=d.seed,
                                             faces=tuple(d.faces), half_extent_deg=d.half_extent_deg)
    return TaskData(train=dict(inputs=normalize_inputs(z["x_train"]), targets=z["y_train"]),
                    test=dict(inputs=normalize_inputs(z["x_test"]), targets=z["y_test"]), num_classes=10)

  raw = _load_dense(config)
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
      getattr(data, part).update(inputs=_pad_flat(normalize_inputs(z["rgb"]), data.flat_pad),
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


# ============================================================================================================
# Model, losses, optimizer
# ============================================================================================================


def build_model(config: ml_collections.ConfigDict, data: TaskData):
  """The Flax module for ``config.model`` (``kind`` plus the model config's fields)."""
  from healswin_jax import flat_swin, model as model_lib  # pylint: disable=g-import-not-at-top
  fields = {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in config.model.items() if k != "kind"}
  head = {"segmentation": "segmentation", "depth": "depth", "classification": "classification"}[config.task]
  fields.update(head=head, in_channels=int(data.train["inputs"].shape[-1]))
  if data.num_classes is not None:
    fields["num_classes"] = data.num_classes
  if config.model.kind == "healswin":
    cfg = HealSwinConfig(nside=config.data.nside, faces=tuple(config.data.faces), **fields)
    return model_lib.build_model(cfg)
  cfg = FlatSwinConfig(image_size=tuple(data.train["inputs"].shape[1:3]), **fields)
  return flat_swin.FlatSwinClassifier(cfg) if head == "classification" else flat_swin.FlatSwinUNet(cfg)


def weighted_cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None,
                           mask: jax.Array | None = None) -> jax.Array:
  """Class-weighted mean cross-entropy (PyTorch ``CrossEntropyLoss(weight=w)``: sum w_y * nll / sum w_y).

  Args:
    logits: (..., K) float; labels: (...) int; weights: (K,) class weights or None; mask: (...) per-pixel
      weights (0 excludes a pixel) or None.
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
  w = jnp.ones_like(nll) if weights is None else weights[labels]
  if mask is not None:
    w = w * mask
  return jnp.sum(w * nll) / jnp.maximum(jnp.sum(w), 1e-12)


def masked_mse(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of 1/2 (pred - target)^2 over mask (the original's depth loss on standardised depth)."""
  return 0.5 * jnp.sum(mask * (pred - target) ** 2) / jnp.maximum(jnp.sum(mask), 1.0)


def silog_loss(log_pred: jax.Array, log_target: jax.Array, mask: jax.Array, lam: float = 0.85) -> jax.Array:
  """Scale-invariant log loss per example, averaged: sqrt(mean d^2 - lam (mean d)^2), d = log p - log t.

  Args: (B, ...) arrays; ``mask`` (B, ...) selects valid targets.
  """
  axes = tuple(range(1, log_pred.ndim))
  n = jnp.maximum(jnp.sum(mask, axis=axes), 1.0)
  d = (log_pred - log_target) * mask
  m1 = jnp.sum(d, axis=axes) / n
  m2 = jnp.sum(d * d, axis=axes) / n
  return jnp.mean(jnp.sqrt(jnp.maximum(m2 - lam * m1 * m1, 1e-12)))


def make_loss_fn(config: ml_collections.ConfigDict) -> Callable:
  """``loss_fn(outputs, batch) -> loss`` for :func:`parallel.make_train_step` (class weights arrive in
  ``batch["mask"]``, see :class:`TaskData`)."""
  if config.task == "classification":
    return lambda logits, batch: optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), batch["targets"]).mean()
  if config.task == "segmentation":
    return lambda logits, batch: weighted_cross_entropy(logits, batch["targets"], None, batch["mask"])
  if config.loss.depth == "mse":
    return lambda out, batch: masked_mse(out[..., 0], batch["targets"], batch["mask"])
  if config.loss.depth == "silog":
    return lambda out, batch: silog_loss(out[..., 0], batch["targets"], batch["mask"])
  raise ValueError(f"loss.depth={config.loss.depth!r} must be 'mse' or 'silog'.")


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


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be restored."""


def _checkpoint_manager(workdir: str, max_to_keep: int = 2):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                               options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                                    enable_async_checkpointing=False),
                               item_handlers=ocp.StandardCheckpointHandler())


def _save(mngr, step: int, state, losses: np.ndarray, run_stamp: Mapping[str, Any]) -> None:
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  mngr.save(step, args=ocp.args.StandardSave(dict(state=state, losses=losses)), force=True,
            custom_metadata={"run_stamp": run_stamp})
  mngr.wait_until_finished()


def _unreadable(path: str, e: Exception) -> CheckpointError:
  return CheckpointError(
      f"checkpoint {path} cannot be restored ({type(e).__name__}: {str(e)[:300]}). It is corrupt or was "
      f"written by a different model/config. Fix: delete {path} to resume from an earlier checkpoint, or "
      f"start over with a fresh --workdir.")


def _check_checkpoint_stamp(mngr, step: int, run_stamp: Mapping[str, Any]) -> None:
  """Compares the stamp stored inside checkpoint ``step`` with this run's, before anything is restored."""
  path = os.path.join(str(mngr.directory), str(step))
  try:
    saved = (mngr.metadata(step).custom_metadata or {}).get("run_stamp")
  except Exception as e:  # pylint: disable=broad-except  (unreadable metadata = corrupt checkpoint)
    raise _unreadable(path, e) from None
  run_guard.check_stamp(saved, run_stamp, path)


def _restore(mngr, step: int, state, losses: np.ndarray):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  path = os.path.join(str(mngr.directory), str(step))
  try:
    out = mngr.restore(step, args=ocp.args.StandardRestore(dict(state=state, losses=losses)))
  except Exception as e:  # orbax raises many types for unreadable files; all mean the same to the user
    # "from None": orbax's own chained tracebacks run to thousands of lines and bury this message.
    raise _unreadable(path, e) from None
  if int(out["state"].step) != step:
    raise CheckpointError(f"checkpoint {path} holds step {int(out['state'].step)}, not {step}; it is corrupt. "
                          f"Fix: delete {path} or use a fresh --workdir.")
  return out["state"], np.asarray(out["losses"])


def _run_stamp(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The stamp every checkpoint carries: the config minus the fields that may change on resume."""
  return run_guard.stamp({k: v for k, v in json.loads(config.to_json()).items() if k not in _RESUME_FREE_FIELDS})


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
  while batch_size % n:
    n -= 1
  return parallel.data_mesh(n)


def train(config: ml_collections.ConfigDict, workdir: str, data: TaskData, model,
          stop_after: int | None = None):
  """The training loop with checkpoint/resume. Returns ``(params, losses)`` or None when ``stop_after``
  (a step count, for preemption tests and time-sliced jobs) ended the run early after checkpointing."""
  with run_guard.workdir_lock(workdir, "HEAL-SWIN training"):
    return _train(config, workdir, data, model, stop_after)


def _train(config, workdir, data, model, stop_after):
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
  run_stamp = _run_stamp(config)
  if latest is not None:
    _check_checkpoint_stamp(mngr, latest, run_stamp)
    # Restore into the abstract state: no initialisation needs compiling on resume.
    rep = parallel.replicated(mesh)
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep),
                            jax.eval_shape(init, init_key, example))
    state, losses = _restore(mngr, latest, abstract, losses)
    start = latest
  else:
    # Initialisation runs once, so compile it cheaply: XLA's optimisation passes on the per-parameter
    # threefry/truncated-normal graph cost more (~10 s on 2 CPU cores) than they could ever save.
    compiled = _cached(("init", model, opt_key, example.shape), lambda: jax.jit(init).lower(
        init_key, example).compile(compiler_options=_FAST_COMPILE))
    state = compiled(init_key, example)
    state = parallel.replicate(state, mesh)
  log_path = os.path.join(workdir, "metrics.jsonl")
  records = _read_jsonl(log_path, start)
  with open(log_path, "w") as f:  # drop records past the checkpoint: they will be recomputed identically
    f.writelines(json.dumps(r) + "\n" for r in records)

  step_fn = _cached(("step", model, config.task, config.loss.depth, opt_key, mesh),
                    lambda: parallel.make_train_step(model.apply, make_loss_fn(config), optimizer, mesh=mesh))
  dropout_key = jax.random.fold_in(root, 1)
  n_train = len(data.train["targets"])
  t0 = time.perf_counter()
  with open(log_path, "a") as log, tqdm(total=num_steps, initial=start, desc=f"train {config.task}",
                                         disable=not config.progress, dynamic_ncols=True) as bar:
    for step in range(start, num_steps):
      idx = batch_indices(config.seed, step, n_train, bs)
      batch = parallel.shard_batch({k: v[idx] for k, v in data.train.items()}, mesh)
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
        _save(mngr, done, state, losses, run_stamp)
      if stop:
        return None
  return state.params, losses


def make_predict(model, params, batch_size: int) -> Callable[[np.ndarray], np.ndarray]:
  """A batched deterministic forward pass (the last batch is padded, so one compilation serves all)."""
  apply = _cached(("predict", model), lambda: jax.jit(lambda p, x: model.apply({"params": p}, x, deterministic=True)))

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


# ============================================================================================================
# Evaluation
# ============================================================================================================


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


def evaluate(config, data: TaskData, outputs: np.ndarray) -> dict[str, float]:
  """Test metrics from the model outputs on ``data.test['inputs']``."""
  if config.task == "classification":
    return dict(test_accuracy=metrics_lib.accuracy(outputs.argmax(-1), data.test["targets"]))
  pred = dense_predictions(config, data, outputs)
  cover = np.stack([p.image_mask for p in data.projections])  # (n, H, W) the same pixels for both geometries
  smask = data.test_sphere["sphere_mask"]
  if config.task == "segmentation":
    k = data.num_classes
    conf_img = metrics_lib.confusion_matrix(pred["image"], data.test_flat["labels"], k, cover)
    conf_sph = metrics_lib.confusion_matrix(pred["sphere"], data.test_sphere["labels"], k, smask)
    conf_all = metrics_lib.confusion_matrix(pred["sphere"], data.test_sphere["labels"], k)
    out = dict(miou_backprojected=metrics_lib.mean_iou(conf_img),
               miou_backprojected_no_void=metrics_lib.mean_iou(conf_img, ignore_void=True),
               miou_sphere=metrics_lib.mean_iou(conf_sph),
               miou_sphere_no_void=metrics_lib.mean_iou(conf_sph, ignore_void=True),
               miou_sphere_all_pixels=metrics_lib.mean_iou(conf_all),
               pixel_accuracy_backprojected=float(np.trace(conf_img) / max(conf_img.sum(), 1)))
    for c, v in enumerate(metrics_lib.iou_per_class(conf_img)):
      if np.isfinite(v):  # classes absent from both prediction and target have no IoU
        out[f"iou_backprojected_class{c}"] = float(v)
    return out
  target = data.test_flat["depth"]
  out = metrics_lib.depth_metrics(pred["image"], target, cover)
  out["num_valid"] = float(out["num_valid"])
  sph = metrics_lib.depth_metrics(pred["sphere"], data.test_sphere["depth"], smask)
  out.update({f"sphere_{k}": v for k, v in sph.items() if k != "num_valid"})
  chamfers = []
  for p, pi, ti in zip(data.projections, pred["image"], target):
    rays = p.camera.pixel_rays()[0]
    m = p.image_mask & metrics_lib.valid_depth(ti)
    if m.any():
      chamfers.append(metrics_lib.chamfer_distance(metrics_lib.depth_to_points(pi, rays, m),
                                                   metrics_lib.depth_to_points(ti, rays, m)))
  out["chamfer"] = float(np.mean(chamfers))
  return out


def loss_summary(losses: np.ndarray) -> dict[str, float]:
  """``loss_first`` / ``loss_last``: mean training loss over the first / last 10 % of the steps (>= 1 step)."""
  w = max(1, len(losses) // 10)
  return dict(loss_first=float(np.mean(losses[:w])), loss_last=float(np.mean(losses[-w:])))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_after: int | None = None) -> TrainResult | None:
  """Builds data and model from ``config``, trains (resuming from ``workdir`` if it holds checkpoints) and
  evaluates on the test split.

  Args:
    config: see :func:`base_config` for the fields.
    workdir: checkpoints (``workdir/checkpoints``, each stamped with the config) and ``metrics.jsonl`` go here;
      it is locked for the call (:func:`infra.run_guard.workdir_lock`).
    stop_after: end the run after this many steps (checkpointed); returns None. Re-running continues.

  Returns:
    A :class:`TrainResult` (metrics include ``loss_first``, ``loss_last`` and the task's test metrics).
  """
  validate_config(config)
  with run_guard.workdir_lock(workdir, "HEAL-SWIN training"):
    data = build_data(config)
    model = build_model(config, data)
    out = train(config, workdir, data, model, stop_after=stop_after)
    if out is None:
      return None
    params, losses = out
    predict = make_predict(model, params, int(config.eval_batch_size))
    outputs = predict(data.test["inputs"])
    bad = ~np.isfinite(outputs)
    if bad.any():
      raise FloatingPointError(f"{100 * bad.mean():.3g} % of the test outputs are NaN/inf after {config.num_steps} "
                               f"steps; no metrics written. Fix: lower optim.lr (now {config.optim.lr}) or "
                               "enable optim.grad_clip.")
    metrics = dict(loss_summary(losses), **evaluate(config, data, outputs))
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
      f.write(json.dumps(dict(step=int(config.num_steps), final=metrics)) + "\n")
  return TrainResult(metrics=metrics, params=params, model=model, data=data, predict=predict, losses=losses)


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by the experiments (each experiment overrides what it needs)."""
  c = ml_collections.ConfigDict()
  c.task = "segmentation"
  c.seed = 0
  c.num_steps = 200
  c.batch_size = 4
  c.eval_batch_size = 8
  c.checkpoint_every = 50
  c.log_every = 10
  c.progress = True
  c.data = ml_collections.ConfigDict(dict(
      source="synthetic", num_train=64, num_test=16, seed=0, nside=16, faces=tuple(range(8)), image_width=128,
      image_height=96, root="", cache_dir="", cam_pos="", num_classes=8, setting="nr_nr",
      half_extent_deg=45.0))
  c.model = ml_collections.ConfigDict(dict(
      kind="healswin", embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 8), patch_size=4, window_size=4,
      shift_strategy="grid", attention="v2", rel_pos_bias=True, mlp_ratio=2.0, drop_rate=0.0,
      attn_drop_rate=0.0, drop_path_rate=0.0, dtype="float32", remat=False))
  c.optim = ml_collections.ConfigDict(dict(name="adamw", lr=2e-3, warmup_steps=10, final_lr_ratio=0.05,
                                           weight_decay=1e-4, grad_clip=1.0))
  # outside_image: sphere pixels that see no image are void; "void" keeps them in the segmentation loss (the
  # original), "ignore" drops them (the flat model never sees them either, so comparisons are like for like).
  c.loss = ml_collections.ConfigDict(dict(class_weights="enet", depth="mse", outside_image="ignore"))
  return c


def flat_model_config(sphere_model: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """The flat Swin matching a HEAL-SWIN model config: same widths/depths/heads/attention; patch and window
  given as sides (sqrt of the NEST counts), so a flat token covers the same number of pixels."""
  m = dict(sphere_model)
  m.pop("shift_strategy", None)
  m.update(kind="flat", patch_size=math.isqrt(int(m["patch_size"])), window_size=math.isqrt(int(m["window_size"])),
           shift=True)
  return ml_collections.ConfigDict(m)
