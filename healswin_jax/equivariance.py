"""Emergent equivariance on the sphere: HEAL-SWIN deep ensembles and HEAL-SWIN's empirical NTK under the exact
HEALPix symmetry group.

Gerken & Kessel (ICML 2024, arXiv:2403.03103) show that the mean of an ensemble of networks trained with full
data augmentation over a group G is G-equivariant -- exactly in the infinite-width (NTK) limit, at all training
times and off the data manifold -- while its members are not. On HEALPix, the 90-degree rotation about the
polar axis and the equatorial reflection permute NEST pixels exactly (:mod:`healswin_jax.healpix.symmetry`),
so the theorem applies to HEAL-SWIN without interpolation error. This module provides:

1. **Tasks** on spherical MNIST (``healswin_jax.data.spherical_mnist``, digits centred on the north pole):
   invariant classification, and an equivariant segmentation (each pixel's label is ``1 + digit`` where the
   digit has ink, 0 elsewhere), with the group acting on inputs ``(n, N, 1)`` and on per-pixel outputs.
2. **Vmapped HEAL-SWIN ensembles** trained by ``ntk.ensemble`` (one jitted step for all members) with or without
   full-orbit augmentation (``ntk.groups.augment_full_orbit``), and their orbit predictions.
3. **Equivariance metrics** of members vs ensemble means vs ensemble size (``ntk.metrics``).
4. The **empirical NTK** of HEAL-SWIN (``nt.empirical_ntk_fn`` / ``nt.monte_carlo_kernel_fn`` on the linen
   ``apply``), its invariance under G for single initializations and in Monte-Carlo expectation, and kernel
   regression with it on augmented data (``ntk.kernels`` solve).

The model's own symmetry matters for the reading of the results: every HEAL-SWIN layer acts per token or per
window with shared weights, and the windows, patch merging and the **grid** shift commute with the polar
rotation r (spec ``healswin.md`` §5 #11), so a grid-shift (or unshifted) HEAL-SWIN is *exactly* C4-equivariant
for every parameter value: there is nothing left to emerge under C4. The **ring** shift (a roll along the RING
spiral) commutes with r only approximately, and no HEAL-SWIN commutes with the reflection s (it maps the
in-window (row, col) layout to its transpose-complement, which the relative position bias and the patch
embedding see, and the grid shift by (-h, -h) to a shift by (+h, +h)). Those are the symmetries whose
equivariance must emerge from augmentation.

Shapes: inputs ``(n, N, C)`` with ``N = len(faces) * nside**2`` (NEST order on ``faces``); classification
outputs ``(n, classes)``; segmentation outputs ``(n, N, classes)``; orbit predictions ``(M, |G|, n, ...)``
(members, group-major orbit, inputs).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import ntk  # noqa: F401  (installs the neural-tangents compatibility layer before neural_tangents)
import neural_tangents as nt  # pylint: disable=g-bad-import-order
from ntk import ensemble as ens
from ntk import groups as ntk_groups
from ntk import kernels as ntk_kernels
from ntk import metrics as ntk_metrics
from healswin_jax.config import HealSwinConfig
from healswin_jax.healpix.symmetry import healpix_group
from healswin_jax.model import build_model

TASKS = ("classification", "segmentation")


# -------------------------------------------------------------------------------------------------------------
# Tasks.


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
  if kind not in TASKS:
    raise ValueError(f"kind={kind!r} must be one of {TASKS}.")
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


# -------------------------------------------------------------------------------------------------------------
# Models.


def small_config(task: SphereTask, shift_strategy: str = "grid", embed_dim: int = 16, **overrides
                 ) -> HealSwinConfig:
  """A small HEAL-SWIN for ``task``: patch 4 (2x2 pixels), windows of 4 tokens, one stage of a plain and a
  shifted block, Swin-V1 attention, no dropout (``overrides`` replace any field, e.g. ``depths=(2, 2)``).

  The classifier is the encoder + max pool + Linear; segmentation uses the U-Net. V1 (pre-norm, scaled dot
  product) because at this size the V2 cosine-attention blocks did not reduce the loss within a few hundred
  Adam steps on spherical MNIST (measured: cross-entropy still ln 10 after 150 steps at lr 1e-3, embed 16/32).
  """
  kw = dict(nside=task.nside, faces=task.faces, in_channels=1, embed_dim=embed_dim, depths=(2,),
            num_heads=(2,), patch_size=4, window_size=4, shift_strategy=shift_strategy, head=task.kind,
            num_classes=task.num_classes, drop_path_rate=0.0, mlp_ratio=2.0, attention="v1")
  kw.update(overrides)
  return HealSwinConfig(**kw)


def model_equivariance_errors(model: nn.Module, params, group: ntk_groups.FiniteGroup, x) -> np.ndarray:
  """Per-element relative equivariance error of ONE network, ``max_i ||f(g x_i) - g f(x_i)|| / ||f(x_i)||``.

  Args:
    model: a HEAL-SWIN module; params: its ``params``.
    group: the group (rho_Y trivial for classifiers, the pixel permutation for dense heads).
    x: (n, N, C) inputs.

  Returns:
    (|G|,) errors; entry 0 (the identity) is 0. For a grid-shift model the rotations r^k give float round-off
    (~1e-7 in float32, exactly 0 for dense heads, whose outputs are the same numbers permuted).
  """
  apply = jax.jit(lambda p, z: model.apply({"params": p}, z))
  orbit = group.orbit(jnp.asarray(x))
  k, n = orbit.shape[:2]
  out = np.asarray(apply(params, orbit.reshape((k * n,) + orbit.shape[2:])), np.float64)
  return ntk_metrics.orbit_equivariance_errors(out.reshape((k, n) + out.shape[1:]), group).max(axis=1)


# -------------------------------------------------------------------------------------------------------------
# Vmapped ensembles.


def pixel_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean per-pixel softmax cross-entropy; ``logits (B, N, classes)``, integer ``labels (B, N)``."""
  if labels.shape != logits.shape[:-1]:
    raise ValueError(f"per-pixel labels {labels.shape} must be logits.shape[:-1] = {logits.shape[:-1]}.")
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


@dataclasses.dataclass(frozen=True)
class EnsembleRun:
  """A trained ensemble: the module, stacked params (leaves ``(M, ...)``) and per-step member losses."""
  model: nn.Module
  params: object
  losses: np.ndarray
  augmented: bool


def train_ensemble(task: SphereTask, config: HealSwinConfig, *, members: int, steps: int, augmented: bool,
                   learning_rate: float = 3e-3, batch_size: int = 64, key: jax.Array | None = None,
                   steps_per_call: int = 10, progress: bool | str = False) -> EnsembleRun:
  """Trains M HEAL-SWIN members at once (``ntk.ensemble``: vmapped over members, one jitted ``lax.scan``).

  Args:
    task: the data and group.
    config: the model (:func:`small_config`).
    members: M.
    steps: Adam steps (minibatches of ``batch_size`` drawn per member and epoch).
    augmented: train on the full orbit of every training input (Gerken & Kessel's full augmentation) rather
      than the plain training set (the control).
    learning_rate: Adam step size.
    batch_size: minibatch size (clipped to the training set size).
    key: PRNG key (member m is initialized from ``fold_in(key, m)``).
    steps_per_call: optimizer steps per jitted dispatch (must divide ``steps``).
    progress: tqdm bar.
  """
  key = jax.random.PRNGKey(0) if key is None else key
  x, y = (augment(task, task.x_train, task.y_train) if augmented else (task.x_train, task.y_train))
  model = build_model(config)
  loss_fn = ens.cross_entropy_loss if task.kind == "classification" else pixel_cross_entropy
  tx = optax.adam(learning_rate)
  state = ens.init_state(model, tx, key, jnp.asarray(x[:1]), members)
  step = ens.make_member_step(model, tx, loss_fn, batch_size=min(batch_size, x.shape[0]))
  ensemble_step = ens.make_ensemble_step(step, steps_per_call=steps_per_call)
  state, losses = ens.train(state, ensemble_step, jnp.asarray(x), jnp.asarray(y), steps, progress=progress)
  return EnsembleRun(model, state.params, losses, augmented)


def orbit_predictions(run: EnsembleRun, group: ntk_groups.FiniteGroup, x, chunk: int = 64) -> np.ndarray:
  """Every member's predictions on the group-major orbit of ``x``: ``(M, |G|, n, *output_shape)`` float64."""
  orbit = group.orbit(jnp.asarray(x))
  k, n = orbit.shape[:2]
  out = np.asarray(ens.predict(run.model, run.params, orbit.reshape((k * n,) + orbit.shape[2:]), chunk),
                   np.float64)
  return out.reshape((out.shape[0], k, n) + out.shape[2:])


def ensemble_metrics(preds: np.ndarray, group: ntk_groups.FiniteGroup, labels: np.ndarray | None = None,
                     sizes: Sequence[int] | None = None) -> dict[str, float]:
  """Equivariance of members vs ensemble means (logit averages) from orbit predictions.

  The invariance/equivariance error is ``ntk.metrics.invariance_error`` (mean over inputs of the orbit spread
  of the canonicalized outputs ``rho_Y(g)^-1 f(rho_X(g) x)``), in units of the members' output RMS so that
  members and ensembles are measured in one unit; for an ensemble of M i.i.d. members it falls like M^-1/2 down
  to the non-equivariance of the infinite ensemble (0 in the NTK limit with full augmentation).

  Args:
    preds: (M, |G|, n, *output_shape) member predictions on orbits (:func:`orbit_predictions`).
    group: the group.
    labels: (n,) or (n, N) int labels for accuracies (optional).
    sizes: ensemble sizes for the curve (default 1, 2, 4, ..., M).

  Returns:
    ``inv_err_member`` (mean over members), ``inv_err_ensemble`` (all M), ``ensemble_invariance_gain``,
    ``inv_err_ensemble_M{m}``, and for classifiers ``osp_member``/``osp_ensemble`` (orbit same predictions,
    |G| = perfectly invariant), ``skl_member``/``skl_ensemble`` (symmetrized KL); with labels
    ``acc_member``/``acc_ensemble`` (per-pixel for segmentation).
  """
  m = preds.shape[0]
  sizes = sizes or [s for s in (1, 2, 4, 8, 16, 32, 64, 128) if s <= m]
  scale = float(np.sqrt(np.mean(np.sum(preds.reshape(preds.shape[:3] + (-1,)) ** 2, axis=-1))))
  member_err = [ntk_metrics.invariance_error(p, group, scale) for p in preds]
  out = {"inv_err_member": float(np.mean(member_err)), "inv_err_member_std": float(np.std(member_err))}
  for s in sizes:
    out[f"inv_err_ensemble_M{s}"] = ntk_metrics.invariance_error(preds[:s].mean(0), group, scale)
  out["inv_err_ensemble"] = ntk_metrics.invariance_error(preds.mean(0), group, scale)
  out["ensemble_invariance_gain"] = out["inv_err_member"] / max(out["inv_err_ensemble"], 1e-300)
  mean = preds.mean(0)
  if group.invariant:  # classification: (M, |G|, n, classes)
    out["osp_member"] = float(np.mean([ntk_metrics.orbit_same_predictions(p)[0] for p in preds]))
    out["osp_ensemble"], out["osp_ensemble_std"] = ntk_metrics.orbit_same_predictions(mean)
    out["skl_member"] = float(np.mean([ntk_metrics.symmetrized_kl(p)[0] for p in preds]))
    out["skl_ensemble"] = ntk_metrics.symmetrized_kl(mean)[0]
  if labels is not None:
    if group.invariant:
      out["acc_member"] = float(np.mean([ntk_metrics.accuracy(p[0], labels) for p in preds]))
      out["acc_ensemble"] = ntk_metrics.accuracy(mean[0], labels)
    else:
      out["acc_member"] = float(np.mean(np.argmax(preds[:, 0], -1) == labels[None]))
      out["acc_ensemble"] = float(np.mean(np.argmax(mean[0], -1) == labels))
  return out


# -------------------------------------------------------------------------------------------------------------
# Empirical NTK.


def _apply_fn(model: nn.Module) -> Callable:
  return lambda params, x: model.apply({"params": params}, x)


def entk_fn(model: nn.Module) -> Callable:
  """``nt.empirical_ntk_fn`` of the linen ``apply``: ``(x1 (n1, N, C), x2, params) -> (n1, n2)``.

  The output axis is traced (``trace_axes=(-1,)``: the kernel is averaged over logits), as for the scalar
  kernels of neural-tangents' stax; segmentation models would also need the pixel axis traced or kept.
  """
  return jax.jit(nt.empirical_ntk_fn(_apply_fn(model), trace_axes=(-1,), vmap_axes=0,
                                     implementation=nt.NtkImplementation.JACOBIAN_CONTRACTION))


def mc_entk(model: nn.Module, x, key: jax.Array, n_samples: Sequence[int], batch_size: int = 0
            ) -> dict[int, np.ndarray]:
  """Monte-Carlo mean of the empirical NTK over initializations, ``E_theta[Theta_theta(x, x)]``.

  Uses ``nt.monte_carlo_kernel_fn`` (the oracle for finite-network kernels) with the linen ``init``/``apply``;
  seed s initializes from neural-tangents' split of ``key``.

  Args:
    model: the module; x: (n, N, C) inputs (the kernel is (n, n)).
    key: PRNG key.
    n_samples: increasing seed counts S; the estimate after each is returned.
    batch_size: ``nt.batch`` tile (0: none).

  Returns:
    ``{S: (n, n) float64}``.
  """
  x = jnp.asarray(x)

  def init_fn(k, input_shape):
    del input_shape
    return None, model.init(k, x[:1])["params"]

  def apply_fn(params, z, rng=None):  # neural-tangents passes a dropout ``rng``; the model is deterministic
    del rng
    return model.apply({"params": params}, z)

  fn = nt.monte_carlo_kernel_fn(init_fn, apply_fn, key, tuple(n_samples), batch_size=batch_size,
                                device_count=0, trace_axes=(-1,), vmap_axes=0, implementation=1)
  out = {}
  for s, k in zip(n_samples, fn(x, None, "ntk")):
    out[int(s)] = np.asarray(k, np.float64)
  return out


def orbit_index(group: ntk_groups.FiniteGroup, n: int) -> np.ndarray:
  """(|G|, |G| n) int: row-index permutation of a group-major orbit set ``Z = group.orbit(x).reshape(-1, ...)``.

  Row ``a n + i`` of Z is ``g_a x_i``; acting with ``g_b`` sends it to row ``(b∘a) n + i``. Returned is the
  gather ``idx[b]`` with ``Z'[j] = Z[idx[b, j]]`` for ``Z' = rho_X(g_b) Z`` (so kernels on ``rho(g_b) Z`` are
  ``K[idx[b]][:, idx[b]]``).
  """
  k = group.order
  a = np.arange(k)
  # rho(g_b) Z row (a n + i) = g_b g_a x_i = row ((b∘a) n + i) of Z.
  dest = group.table[:, a]                                              # (b, a) -> b∘a
  rows = (dest[:, :, None] * n + np.arange(n)[None, None, :]).reshape(k, k * n)
  return rows


def kernel_invariance_error(kernel: np.ndarray, group: ntk_groups.FiniteGroup, n: int) -> float:
  """``max_g ||K(gZ, gZ) - K(Z, Z)||_F / ||K(Z, Z)||_F`` for a kernel on a group-major orbit set of n inputs."""
  idx = orbit_index(group, n)
  base = np.linalg.norm(kernel)
  return float(max(np.linalg.norm(kernel[np.ix_(i, i)] - kernel) for i in idx) / base)


def group_average_kernel(kernel: np.ndarray, group: ntk_groups.FiniteGroup, n: int) -> np.ndarray:
  """``K_G(z, z') = (1/|G|) sum_g K(g z, g z')`` on a group-major orbit set (an exactly G-invariant kernel).

  If the initialization distribution is invariant (``Theta_{g.theta}(g z, g z') = Theta_theta(z, z')`` for
  a measure-preserving action on parameters), averaging the Monte-Carlo estimate over the orbit of the seeds
  is an unbiased estimate of ``E_theta Theta`` that is invariant for every finite number of seeds. The
  summands are the same matrix entries permuted, accumulated in float64, so the result is invariant to the
  last bit whenever the entries come from float32 (then every partial sum is exact).
  """
  idx = orbit_index(group, n)
  out = np.zeros(kernel.shape, np.float64)
  for i in idx:
    out += np.asarray(kernel, np.float64)[np.ix_(i, i)]
  return out / group.order


def kernel_regression(kernel: np.ndarray, train: np.ndarray, test: np.ndarray, y_train: np.ndarray,
                      t: float = np.inf, diag_reg: float = 1e-6) -> np.ndarray:
  """NTK mean prediction ``mu_t(test) = K(test, X) K^-1 (I - e^{-K t / N}) Y`` (float64, ``ntk.kernels``).

  Args:
    kernel: a kernel matrix on a set Z; train, test: row indices of X and of the test points in Z.
    y_train: (n_train, d) targets. t: training time (``inf``: kernel ridge-less regression).
    diag_reg: ridge relative to the mean diagonal (neural-tangents' convention).

  Returns:
    (n_test, d) predictions.
  """
  kernel = np.asarray(kernel, np.float64)
  k_dd = {"ntk": kernel[np.ix_(train, train)]}
  k_td = {"ntk": kernel[np.ix_(test, train)]}
  y = np.asarray(y_train, np.float64)
  block = ntk_kernels.dense_block(k_dd, k_td, y, "ntk", diag_reg, False, with_nngp=False)
  mean, _, _ = ntk_kernels.spectral_predict([block], [t], float(y.size), y.shape[1:], "ntk")
  return mean[0]


@dataclasses.dataclass(frozen=True)
class EntkResult:
  """The empirical-NTK measurements of :func:`entk_study` (all float64)."""
  widths: tuple[int, ...]
  seeds: tuple[int, ...]
  invariance_single: dict            # width -> max_g rel. error of one seed's eNTK (mean over seeds)
  invariance_mc: dict                # width -> {S: rel. error of the S-seed MC mean}
  invariance_by_element: dict        # width -> (|G|,) rel. error of the largest-S MC mean per element
  regression_equiv_err: float        # symmetrized MC eNTK, augmented data: max rel. equivariance error
  regression_equiv_err_noaug: float  # same kernel, plain training data (control)
  regression_equiv_err_raw: float    # un-symmetrized MC eNTK, augmented data


def entk_study(task: SphereTask, widths: Sequence[int], seeds: Sequence[int], num_train: int, num_test: int, *,
               shift_strategy: str = "grid", key: jax.Array | None = None, diag_reg: float = 1e-6
               ) -> EntkResult:
  """Invariance of HEAL-SWIN's empirical NTK under the task's group, and kernel regression with it.

  The kernel is evaluated once on the closed set Z = orbit(train) ∪ orbit(test) (group-major), so every
  invariance statement is an index permutation of one matrix. For each width: the eNTK of single seeds and the
  Monte-Carlo means over S seeds (``nt.monte_carlo_kernel_fn``); ``||K(gZ, gZ) - K(Z, Z)|| / ||K||`` falls like
  S^-1/2 if the expectation is invariant. For the largest width and S: kernel regression (t = inf) on the
  augmented training set with the group-averaged MC kernel (exactly invariant) -- its predictions on the test
  orbits must be invariant to float64 round-off -- and two controls: the same kernel without augmentation,
  and the raw (un-averaged) MC kernel with augmentation.

  Args:
    task: an invariant task (classification); the first ``num_train`` training and ``num_test`` test inputs
      are used, targets are one-hot labels minus 0.1 (zero-mean-ish regression targets).
    widths: embed dims to probe.
    seeds: increasing Monte-Carlo seed counts S.
    num_train, num_test: sizes (the kernel is (|G| (num_train + num_test))^2).
    shift_strategy: ``"grid"`` or ``"ring"``.
    key: PRNG key for the initializations.
    diag_reg: relative ridge of the regression.
  """
  if task.kind != "classification":
    raise ValueError("entk_study needs an invariant (classification) task; use spherical_mnist_task"
                     "('classification', ...).")
  key = jax.random.PRNGKey(1) if key is None else key
  group = task.group
  x = np.concatenate([task.x_train[:num_train], task.x_test[:num_test]])
  n = x.shape[0]
  z = np.asarray(group.orbit(x)).reshape((-1,) + x.shape[1:])                   # (|G| n, N, 1) group-major
  rows = np.arange(group.order * n).reshape(group.order, n)
  train_aug, train_plain, test = rows[:, :num_train].reshape(-1), rows[0, :num_train], rows[:, num_train:]
  inv_single, inv_mc, inv_elem, kernels = {}, {}, {}, {}
  for w in widths:
    model = build_model(small_config(task, shift_strategy, embed_dim=w))
    k_by_s = mc_entk(model, z, jax.random.fold_in(key, w), seeds)
    kernels[w] = k_by_s[max(seeds)]
    inv_mc[w] = {s: kernel_invariance_error(k, group, n) for s, k in k_by_s.items()}
    fn = entk_fn(model)
    single = []
    for s in range(min(2, max(seeds))):
      params = model.init(jax.random.fold_in(jax.random.fold_in(key, 10_000 + w), s), z[:1])["params"]
      single.append(kernel_invariance_error(np.asarray(fn(z, None, params), np.float64), group, n))
    inv_single[w] = float(np.mean(single))
    idx = orbit_index(group, n)
    kw = kernels[w]
    inv_elem[w] = np.array([np.linalg.norm(kw[np.ix_(i, i)] - kw) / np.linalg.norm(kw) for i in idx])
  kernel = kernels[max(widths)]
  sym = group_average_kernel(kernel, group, n)
  y = np.eye(10)[np.concatenate([task.y_train[:num_train]] * group.order)] - 0.1

  def equiv_err(k, train_rows, y_rows):
    pred = kernel_regression(k, train_rows, test.reshape(-1), y_rows, diag_reg=diag_reg)
    pred = pred.reshape(group.order, num_test, -1)                             # group-major test orbit
    num = np.linalg.norm(pred - pred[:1], axis=-1)
    return float(np.max(num / np.maximum(np.linalg.norm(pred[:1], axis=-1), 1e-300)))

  return EntkResult(
      widths=tuple(widths), seeds=tuple(seeds), invariance_single=inv_single, invariance_mc=inv_mc,
      invariance_by_element=inv_elem,
      regression_equiv_err=equiv_err(sym, train_aug, y),
      regression_equiv_err_noaug=equiv_err(sym, train_plain, y[:num_train]),
      regression_equiv_err_raw=equiv_err(kernel, train_aug, y))
