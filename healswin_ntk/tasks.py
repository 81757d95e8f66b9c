"""Spherical learning problems with their exact HEALPix symmetry group, and full-orbit augmentation.

Spherical MNIST (:mod:`healswin_jax.data.spherical_mnist`, digits centred on the north pole) as an invariant
classification or an equivariant segmentation (each pixel's label is ``1 + digit`` where the digit has ink, 0
elsewhere), with the group (:func:`healswin_ntk.groups.healpix_group`) acting on inputs ``(n, N, 1)`` and on
per-pixel outputs. Shapes: inputs ``(n, N, C)`` with ``N = len(faces) * nside**2`` (NEST order on ``faces``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from healswin_ntk.groups import healpix_group
from ntk import groups as ntk_groups

# The two kinds of output action: invariant (rho_Y trivial) and equivariant (rho_Y permutes output pixels).
# Not healswin_jax.tasks.TASKS (what the training loop can fit), which also has depth.
KINDS = ("classification", "segmentation")


@dataclasses.dataclass(frozen=True, eq=False)
class SphereTask:
  """A spherical learning problem with its symmetry group.

  Attributes:
    kind: ``"classification"`` (invariant) or ``"segmentation"`` (equivariant).
    nside, faces: the HEALPix grid of the maps.
    num_classes: classes of the outputs (10 digits; 11 = background + 10 digits for segmentation).
    x_train, x_test: (n, N, 1) float32 maps, standardized with the training set's pixel mean and std.
    y_train, y_test: (n,) int labels, or (n, N) int per-pixel labels.
    x_ood: (n_ood, N, 1) off-manifold inputs (standard Gaussian noise maps, the data's unit scale).
    group: the HEALPix group acting on inputs (and on per-pixel outputs of ``num_classes`` channels).
    label_group: the same group acting on per-pixel labels ``(n, N, 1)`` (segmentation) or None.
    standardization: ``(mean, std)`` of the raw training pixels; maps are ``(raw - mean) / std``.
  """
  kind: str
  nside: int
  faces: tuple[int, ...]
  num_classes: int
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  x_ood: np.ndarray
  group: ntk_groups.FiniteGroup
  label_group: ntk_groups.FiniteGroup | None = None
  standardization: tuple[float, float] = (0.0, 1.0)


def spherical_mnist_task(kind: str, nside: int, num_train: int, num_test: int, num_ood: int = 8, *,
                         reflection: bool = True, seed: int = 0, ink_threshold: float = 0.3,
                         half_extent_deg: float = 60.0) -> SphereTask:
  """Spherical MNIST (non-rotated digits at the north pole, all 12 faces) as an invariant or equivariant task.

  Args:
    kind: ``"classification"`` (label = digit, rho_Y trivial) or ``"segmentation"`` (pixel label = 1 + digit
      where the map exceeds ``ink_threshold``, else 0; rho_Y permutes output pixels like rho_X).
    nside: HEALPix resolution.
    num_train, num_test: digits (balanced, disjoint).
    num_ood: Gaussian-noise maps for the off-manifold evaluation.
    reflection: group C4 x Z2 (order 8: 90-degree polar rotations and the equatorial reflection) instead of C4.
    seed: digit subset and noise seed.
    ink_threshold: segmentation foreground threshold on the raw [0, 1] pixel values.
    half_extent_deg: the digit spans +-this angle around the pole (60: a 2 x 60 degree square, about 17 x 17
      pixels at nside 8, enough for a small model to read it).
  """
  if kind not in KINDS:
    raise ValueError(f"kind={kind!r} must be one of {KINDS}.")
  from healswin_jax.data.spherical_mnist import make_spherical_mnist  # pylint: disable=g-import-not-at-top
  faces = tuple(range(12))
  data = make_spherical_mnist(nside, num_train, num_test, "nr_nr", seed=seed, faces=faces,
                              half_extent_deg=half_extent_deg)
  # Standardize with scalars of the training set: a scalar affine map commutes with every pixel permutation, so
  # it keeps the symmetry, and unit-scale inputs let the small model learn in a few hundred steps.
  mu, sd = float(data["x_train"].mean()), float(data["x_train"].std())
  x_train, x_test = [((data[k] - mu) / sd).astype(np.float32) for k in ("x_train", "x_test")]
  x_ood = np.random.default_rng(seed + 7).normal(size=(num_ood,) + x_train.shape[1:]).astype(np.float32)
  if kind == "classification":
    group = healpix_group(nside, faces, reflection=reflection, channels=1)
    return SphereTask(kind, nside, faces, 10, x_train, data["y_train"], x_test, data["y_test"], x_ood, group,
                      standardization=(mu, sd))

  def pixel_labels(x, y):
    return np.where(x[..., 0] > ink_threshold, 1 + y[:, None], 0).astype(np.int32)

  group = healpix_group(nside, faces, reflection=reflection, channels=1, equivariant_output=True, out_channels=11)
  label_group = healpix_group(nside, faces, reflection=reflection, channels=1, equivariant_output=True,
                              out_channels=1)
  return SphereTask(kind, nside, faces, 11, x_train, pixel_labels(data["x_train"], data["y_train"]),
                    x_test, pixel_labels(data["x_test"], data["y_test"]), x_ood, group, label_group, (mu, sd))


def augment(task: SphereTask, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Full-orbit augmentation of (x, y), group-major (``ntk.groups.augment_full_orbit``); labels too."""
  if task.kind == "classification":
    return ntk_groups.augment_full_orbit(task.group, x, y)
  x_aug = np.asarray(task.group.orbit(x)).reshape((-1,) + x.shape[1:])            # group-major, as above
  y_aug = np.asarray(task.label_group.orbit_y(y[..., None])).reshape(-1, y.shape[1])
  return x_aug, y_aug
