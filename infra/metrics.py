"""Metrics that both papers' packages use with one meaning: classification accuracy.

``healswin_jax.metrics.accuracy`` and ``ntk.metrics.accuracy`` are this function, re-exported.
"""

from __future__ import annotations

import numpy as np


def accuracy(pred, labels) -> float:
  """Fraction of correct predictions (host-side numpy).

  Args:
    pred: class scores ``(..., classes)`` (the argmax is taken; logits or probabilities) or predicted class
      indices of ``labels``' shape ``(...)``.
    labels: integer class labels ``(...)``.
  """
  pred, labels = np.asarray(pred), np.asarray(labels)
  if pred.ndim == labels.ndim + 1 and pred.shape[:-1] == labels.shape:
    pred = np.argmax(pred, axis=-1)
  if pred.shape != labels.shape:
    raise ValueError(f"accuracy needs class indices of the labels' shape {labels.shape} or class scores "
                     f"{labels.shape + ('classes',)}, got {pred.shape}.")
  return float(np.mean(pred == labels))
