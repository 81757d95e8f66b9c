"""Spherical MNIST from the bundled MNIST-5k: digits projected onto HEALPix NEST maps, optionally rotated.

A digit is placed on the tangent plane at the north pole and mapped to the sphere by the gnomonic
projection: a direction ``d`` (in the digit frame) with ``d_z > 0`` reads the digit at plane coordinates
``(d_x / d_z, d_y / d_z) / tan(half_extent)`` in [-1, 1]^2 (bilinear, 0 outside). "Rotated" digits are read
in the frame ``R^T d`` for a Haar-random ``R`` in SO(3) (Cohen et al. 2018, arXiv:1801.10130, use the same
NR/R protocol). Each HEALPix pixel averages ``4**supersample`` samples at its NEST children's centres (the
children of a NEST pixel are contiguous, so this is a reshape + mean), which removes aliasing at low nside.

Settings: NR/NR (train and test non-rotated), R/R (both rotated), NR/R (train non-rotated, test rotated).
"""

from __future__ import annotations

from typing import Sequence

import healpy as hp
import numpy as np

from healswin_jax.healpix import topology

SETTINGS = {"nr_nr": (False, False), "r_r": (True, True), "nr_r": (False, True)}
BASELINES = ("logreg", "logreg_sorted", "mlp")


def random_rotations(n: int, seed: int | Sequence[int], max_angle_deg: float | None = None) -> np.ndarray:
  """(n, 3, 3) random rotations, deterministic by seed (an int or a sequence of ints, as
  ``numpy.random.default_rng`` takes).

  ``max_angle_deg=None``: Haar-uniform (normalised Gaussian quaternions). Otherwise small rotations: a uniform
  random axis and an angle uniform in ``[0, max_angle_deg]`` (a digit at the north pole is then turned in its
  plane and moved on the sphere by at most that angle).
  """
  rng = np.random.default_rng(seed)
  if max_angle_deg is None:
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
  else:
    if not 0 < max_angle_deg <= 180:
      raise ValueError(f"max_angle_deg={max_angle_deg!r} must be in (0, 180].")
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    half = np.deg2rad(rng.uniform(0.0, max_angle_deg, n))[:, None] / 2
    q = np.concatenate([np.cos(half), np.sin(half) * axis], axis=1)
  w, x, y, z = q.T
  return np.stack([
      np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
      np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
      np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1)], axis=1)


def project_digits(images: np.ndarray, nside: int, rotations: np.ndarray | None = None,
                   faces: Sequence[int] = tuple(range(12)), half_extent_deg: float = 45.0,
                   supersample: int = 1, chunk: int = 256) -> np.ndarray:
  """Projects digits onto the HEALPix NEST pixels of ``faces``.

  Args:
    images: (n, h, w) float images.
    nside: output resolution (power of 2).
    rotations: (n, 3, 3) digit-to-sphere rotations, or None for the digit centred on the north pole.
    faces: used base pixels (default all 12; rotated digits can land anywhere).
    half_extent_deg: the digit's square spans +-this angle from its centre (gnomonic), < 90.
    supersample: average over 4**supersample sub-pixel samples.
    chunk: digits processed at once (bounds memory).

  Returns:
    (n, len(faces) * nside**2, 1) float32 maps, in the model's (B, N, C) layout.
  """
  images = np.asarray(images, np.float32)
  if images.ndim != 3:
    raise ValueError(f"images must be (n, h, w), got shape {images.shape}.")
  if not 0 < half_extent_deg < 90:
    raise ValueError(f"half_extent_deg={half_extent_deg} must be in (0, 90) for the gnomonic projection.")
  n, h, w = images.shape
  if rotations is not None and np.shape(rotations) != (n, 3, 3):
    raise ValueError(f"rotations must be ({n}, 3, 3), got {np.shape(rotations)}.")
  fine = topology.check_nside(nside) * 2 ** supersample
  vec = np.stack(hp.pix2vec(fine, topology.token_to_nest(fine, faces), nest=True), -1)  # (M, 3)
  scale = 1.0 / np.tan(np.deg2rad(half_extent_deg))
  flat = images.reshape(n, h * w)
  out = []
  for s in range(0, n, chunk):
    e = min(n, s + chunk)
    # Digit-frame directions R^T d: (b, M, 3).
    d = np.broadcast_to(vec, (e - s,) + vec.shape) if rotations is None else np.einsum(
        "mi,bij->bmj", vec, np.asarray(rotations[s:e], np.float64))
    front = d[..., 2] > 1e-6
    z = np.where(front, d[..., 2], 1.0)
    a = d[..., 0] / z * scale  # in [-1, 1] on the digit
    b = -d[..., 1] / z * scale  # image rows grow downwards
    col = (a + 1) * (w / 2) - 0.5
    row = (b + 1) * (h / 2) - 0.5
    inside = front & (col > -1) & (col < w) & (row > -1) & (row < h)
    c0 = np.floor(col)
    r0 = np.floor(row)
    fc = col - c0
    fr = row - r0
    vals = np.zeros(d.shape[:2], np.float32)
    for dr, dc, wt in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
      rr = r0 + dr
      cc = c0 + dc
      ok = inside & (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
      idx = np.where(ok, rr * w + cc, 0).astype(np.int64)
      vals += np.where(ok, np.take_along_axis(flat[s:e], idx, axis=1) * wt, 0.0).astype(np.float32)
    out.append(vals.reshape(e - s, -1, 4 ** supersample).mean(-1))
  return np.concatenate(out)[..., None].astype(np.float32)


def make_spherical_mnist(nside: int, num_train: int, num_test: int, setting: str = "nr_nr", seed: int = 0,
                         supersample: int = 1, half_extent_deg: float = 45.0,
                         faces: Sequence[int] = tuple(range(12)), train_rotations: int = 1,
                         jitter_deg: float = 0.0) -> dict[str, np.ndarray]:
  """A spherical MNIST split from MNIST-5k (balanced, disjoint train/test digits).

  Args:
    nside: HEALPix resolution.
    num_train, num_test: sizes (num_train + num_test <= 5000).
    setting: ``"nr_nr"``, ``"r_r"`` or ``"nr_r"`` (train/test rotation).
    seed: digit subset and rotation seed.
    train_rotations: rotated training settings only: each training digit is projected under this many
      independent Haar-random rotations (rotation augmentation; 1 = one fixed rotation per digit). Copy ``k``
      of all digits comes after copy ``k - 1``; copy 0 is the un-augmented training set. A training run that
      shows each example at most once then sees every digit under a fresh rotation each time.
      Non-rotated training settings take ``train_rotations > 1`` only with ``jitter_deg > 0``.
    jitter_deg: non-rotated training settings only: the copies ``1 .. train_rotations - 1`` are projected
      under small random rotations of at most this angle (:func:`random_rotations` with ``max_angle_deg``), the
      spherical counterpart of small shifts and turns of a flat digit; copy 0 and the test digits stay
      unrotated. 0 = no jitter.

  Returns:
    dict ``x_train`` (train_rotations * num_train, N, 1), ``y_train`` (train_rotations * num_train,),
    ``x_test`` (num_test, N, 1), ``y_test`` (num_test,) with ``N = len(faces) * nside**2``.
  """
  if setting not in SETTINGS:
    raise ValueError(f"setting={setting!r} must be one of {sorted(SETTINGS)}.")
  if isinstance(train_rotations, bool) or not isinstance(train_rotations, (int, np.integer)) or train_rotations < 1:
    raise ValueError(f"train_rotations={train_rotations!r} must be an integer >= 1 (rotated copies of each "
                     "training digit). Fix: e.g. --set data.train_rotations=8.")
  if not jitter_deg >= 0 or (jitter_deg > 0 and SETTINGS[setting][0]):  # `not >=` also refuses NaN
    raise ValueError(f"jitter_deg={jitter_deg!r} must be >= 0, and 0 for setting={setting!r} whose training digits "
                     "are already Haar-rotated. Fix: jitter_deg=0 or a non-rotated training setting ('nr_nr').")
  if train_rotations > 1 and not SETTINGS[setting][0] and jitter_deg == 0:
    raise ValueError(f"train_rotations={train_rotations} needs rotated or jittered training digits, but "
                     f"setting={setting!r} trains on non-rotated digits and jitter_deg=0 (the copies would be "
                     "identical). Fix: train_rotations=1, jitter_deg > 0 or setting='r_r'.")
  from infra.bundled_data import load_mnist5k  # pylint: disable=g-import-not-at-top
  if num_train < 1 or num_test < 1:
    raise ValueError(f"num_train={num_train}, num_test={num_test}: both must be >= 1. Fix: e.g. "
                     "--set data.num_train=600 --set data.num_test=200.")
  if num_train + num_test > 5000:
    raise ValueError(f"num_train + num_test = {num_train + num_test} > 5000 (MNIST-5k).")
  images, labels = load_mnist5k(num_train + num_test, seed=seed)
  rot_train, rot_test = SETTINGS[setting]
  rots = random_rotations(num_train + num_test, seed + 1)
  kw = dict(nside=nside, faces=faces, supersample=supersample, half_extent_deg=half_extent_deg)
  x_train = project_digits(images[:num_train], rotations=rots[:num_train] if rot_train else None, **kw)
  x_test = project_digits(images[num_train:], rotations=rots[num_train:] if rot_test else None, **kw)
  # Augmentation copies draw their rotations from their own seeds, so copy 0 (and the test set) do not depend
  # on train_rotations.
  max_angle = jitter_deg if jitter_deg > 0 else None
  extra = [project_digits(images[:num_train], rotations=random_rotations(num_train, [seed + 1, k], max_angle),
                          **kw) for k in range(1, train_rotations)]
  return dict(x_train=np.concatenate([x_train, *extra]), y_train=np.tile(labels[:num_train], train_rotations),
              x_test=x_test, y_test=labels[num_train:])


def planar_digits(num_train: int, num_test: int, seed: int = 0, multiple: int = 1) -> dict[str, np.ndarray]:
  """The digits of :func:`make_spherical_mnist`'s split (copy 0 and the test digits, same order), kept flat.

  The reference for what the sphere costs: a flat model trained on these sees the digits of the NR/NR setting
  without the projection or the HEALPix faces.

  Args:
    num_train, num_test: sizes, as in :func:`make_spherical_mnist`.
    seed: digit subset seed, as in :func:`make_spherical_mnist`.
    multiple: each side is zero-padded (background), evenly on both sides where it can be, to a multiple of
      this (a flat Swin needs patch x window x 2^(stages-1)).

  Returns:
    dict ``x_train`` (num_train, H, W, 1), ``y_train``, ``x_test`` (num_test, H, W, 1), ``y_test``, intensities in
    [0, 1].
  """
  from infra.bundled_data import load_mnist5k  # pylint: disable=g-import-not-at-top
  if num_train < 1 or num_test < 1 or num_train + num_test > 5000:
    raise ValueError(f"num_train={num_train}, num_test={num_test}: both must be >= 1 and sum to <= 5000 "
                     "(MNIST-5k).")
  if isinstance(multiple, bool) or not isinstance(multiple, (int, np.integer)) or multiple < 1:
    raise ValueError(f"multiple={multiple!r} must be a positive integer.")
  images, labels = load_mnist5k(num_train + num_test, seed=seed)
  h, w = images.shape[1:]
  ph, pw = -h % multiple, -w % multiple
  images = np.pad(np.asarray(images, np.float32), ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)))
  return dict(x_train=images[:num_train, ..., None], y_train=labels[:num_train],
              x_test=images[num_train:, ..., None], y_test=labels[num_train:])


def sorted_pixels(x: np.ndarray, k: int) -> np.ndarray:
  """(n, N, C) maps -> (n, k) their k largest pixel values in decreasing order: a rotation-invariant feature
  (up to resampling), the trivial baseline for rotated digits."""
  flat = np.asarray(x, np.float32).reshape(len(x), -1)
  if not 0 < k <= flat.shape[1]:
    raise ValueError(f"k={k} must be in 1..{flat.shape[1]} (pixels per map).")
  return -np.sort(-flat, axis=1)[:, :k]


def baseline_accuracies(x_train: np.ndarray, y_train: np.ndarray,
                        tests: dict[str, tuple[np.ndarray, np.ndarray]], num_sorted: int = 300,
                        seed: int = 0, models: Sequence[str] = BASELINES) -> dict[str, float]:
  """Accuracies of trivial classifiers trained on ``(x_train, y_train)`` and scored on each of ``tests``.

  Models: ``logreg`` (logistic regression on the raw pixels), ``logreg_sorted`` (logistic regression on
  :func:`sorted_pixels`, ``num_sorted`` values) and ``mlp`` (one hidden layer of 256 ReLU units, Adam, on the
  raw pixels), all scikit-learn; ``models`` selects among them. Inputs are (n, N, C) maps as returned by
  :func:`make_spherical_mnist`.

  Returns:
    ``{f"{model}_train": ..., f"{model}_{name}": ...}`` for every selected model and test set name.
  """
  unknown = sorted(set(models) - set(BASELINES))
  if unknown:
    raise ValueError(f"models={list(models)}: unknown baseline(s) {unknown}; choose from {BASELINES}.")
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  from sklearn.neural_network import MLPClassifier  # pylint: disable=g-import-not-at-top
  k = min(num_sorted, int(np.prod(np.shape(x_train)[1:])))
  features = {"logreg": lambda x: np.asarray(x, np.float32).reshape(len(x), -1),
              "logreg_sorted": lambda x: sorted_pixels(x, k)}
  features["mlp"] = features["logreg"]
  # Iteration caps bound the cost on 2 cores (thousands of 3,072-pixel maps); a capped fit is still a valid
  # (if slightly weaker) baseline.
  make = {"logreg": lambda: LogisticRegression(max_iter=300),
          "logreg_sorted": lambda: LogisticRegression(max_iter=300),
          "mlp": lambda: MLPClassifier((256,), max_iter=60, random_state=seed)}
  out = {}
  for name in models:
    model, f = make[name](), features[name]
    model.fit(f(x_train), y_train)
    out[f"{name}_train"] = float(model.score(f(x_train), y_train))
    for test_name, (x, y) in tests.items():
      out[f"{name}_{test_name}"] = float(model.score(f(x), y))
  return out
