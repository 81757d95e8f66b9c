"""The empirical NTK of HEAL-SWIN and its invariance under the HEALPix symmetry group.

``nt.empirical_ntk_fn`` / ``nt.monte_carlo_kernel_fn`` on the linen ``apply``; invariance of the kernel on a
group-major orbit set for single initializations and in Monte-Carlo expectation; the group-averaged kernel;
kernel regression with it on augmented data (``ntk.kernels`` solve); :func:`entk_study` runs all of it.
Shapes: inputs ``(n, N, C)``; kernels ``(n1, n2)`` with the output axis traced.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import ntk  # noqa: F401  (installs the neural-tangents compatibility layer before neural_tangents)
import neural_tangents as nt  # pylint: disable=g-bad-import-order
from healswin_jax.model import build_model
from healswin_ntk.models import small_config
from healswin_ntk.tasks import SphereTask
from ntk import groups as ntk_groups
from ntk import kernels as ntk_kernels


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
