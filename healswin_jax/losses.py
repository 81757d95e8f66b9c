"""Training losses of the HEAL-SWIN tasks and ``make_loss_fn(config)`` for :func:`parallel.make_train_step`.

- segmentation: class-weighted cross-entropy (the original's loss; the weights arrive per pixel in ``batch["mask"]``);
- depth: masked MSE on standardised depth (the original's loss) or SILog on log depth (Eigen et al. 2014,
  arXiv:1406.2283), over finite targets only;
- classification: cross-entropy.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax


def weighted_cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None,
                           mask: jax.Array | None = None) -> jax.Array:
  """Class-weighted mean cross-entropy (PyTorch ``CrossEntropyLoss(weight=w)``: sum w_y * nll / sum w_y).

  Args:
    logits: (..., K) float; labels: (...) int; weights: (K,) class weights or None; mask: (...) per-pixel
      weights (0 excludes a pixel) or None.
  """
  nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  w = jnp.ones_like(nll) if weights is None else weights[labels]
  if mask is not None:
    w = w * mask
  return jnp.sum(w * nll) / jnp.maximum(jnp.sum(w), 1e-12)


def masked_mse(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Weighted mean of 1/2 (pred - target)^2 (the original's depth loss on standardised depth).

  Args:
    pred, target: arrays of one shape (pred is computed in float32).
    mask: None (plain mean) or weights whose shape is a prefix of ``target``'s (per example, per pixel, ...;
      0 excludes an entry), broadcast over the trailing axes: sum(w * d^2) / (2 sum(w)); all-zero weights give 0.
  """
  diff2 = (pred.astype(jnp.float32) - target) ** 2
  if mask is None:
    return 0.5 * jnp.mean(diff2)
  w = jnp.broadcast_to(mask.reshape(mask.shape + (1,) * (diff2.ndim - mask.ndim)), diff2.shape)
  return 0.5 * jnp.sum(w * diff2) / jnp.maximum(jnp.sum(w), 1e-12)


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
  ``batch["mask"]``, see :class:`healswin_jax.tasks.TaskData`)."""
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
