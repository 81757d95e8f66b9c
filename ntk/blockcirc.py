"""Group-structured (block-circulant) infinite-ensemble predictions on full-orbit augmented data.

Let G = Z_{k_1} × ... × Z_{k_m} act on inputs by an exact permutation/orthogonal representation rho_X and
let the kernel be G-invariant, ``k(rho(g)x, rho(g)x') = k(x, x')`` (true for the NNGP/NTK of any network
whose first layer has i.i.d. zero-mean weights applied to x, e.g. MLPs, and for CNN kernels under
rotations of square images by 90°). With the group-major ordering of
:func:`ntk.groups.augment_full_orbit` (row ``(a, i)`` = ``g_a x_i``) the augmented kernel matrix is
block-circulant over G:

  K_aug[(a, i), (b, j)] = k(g_a x_i, g_b x_j) = k(x_i, g_{b−a} x_j) = C[b − a][i, j],   C[c] = k(X, g_c X).

Only the |G| blocks C[c] (|G|·n² kernel entries instead of (|G|n)²) are evaluated. The characters
``chi_w(a) = exp(2πi w·a/k)`` diagonalize it: ``K_aug (chi_w ⊗ u) = chi_w ⊗ (Ĉ_w u)`` with the Hermitian
n×n blocks ``Ĉ_w = sum_c C[c] chi_w(c) = |G| · ifftn(C)[w]`` (Hermitian because ``C[−c] = C[c]^T``). If
``Ĉ_w = V_w diag(e_w) V_w^H`` then ``K_aug`` has eigenvalues ``e_w`` with unit eigenvectors
``chi_w(a) V_w[i, :] / sqrt(|G|)``: |G| Hermitian n×n eigensolves (about half of them, since
``Ĉ_{−w} = conj(Ĉ_w)``) replace one (|G|n)×(|G|n) eigensolve. The
test-train kernels and targets are projected with FFTs over the group axes and the rest is the same spectral
formula as the dense path (:func:`ntk.kernels.spectral_predict`), for mu_t and Sigma_t (diagonal or full)
at any t, including t = inf.

Numerics: with smooth activations (Erf, Gelu) fast and dense agree to ~1e-12 in float64. The ReLU NTK has a
``sqrt(eps)`` sensitivity at coincident inputs (``arccos`` of a correlation that rounds to 1 ± eps), so its
diagonal carries ~1e-9 relative noise that depends on the summation order of the permuted inputs; fast vs
dense then agree only to ~1e-8 and the invariance check uses a 1e-6 tolerance.

When the structure does not hold (a non-abelian group such as D4 or the cube group, an interpolated
rotation that is not a representation, or a kernel that is not G-invariant on the data) the solver falls
back to the dense path on the augmented data and says so in ``EnsemblePrediction.note`` (and a warning).
"""

from __future__ import annotations

import concurrent.futures
import os
import warnings
from typing import Optional

import numpy as np
import threadpoolctl  # ships with scikit-learn (a dependency); controls OpenBLAS threads at run time

from ntk import kernels as K
from ntk.groups import FiniteGroup, augment_full_orbit, homomorphism_violation


def structure_problem(group: FiniteGroup) -> Optional[str]:
  """Why the block-circulant solve does not apply to ``group`` (None when it does)."""
  if group.cyclic_factors is None:
    if group.is_abelian:
      return (f"{group.name} has no cyclic_factors, so the augmented kernel is not known to be block-circulant "
              "(fix: list the elements in multi-index order of Z_k1 × ... × Z_km and pass cyclic_factors=(k1, ..., "
              "km) to FiniteGroup, or build it with FiniteGroup.cyclic(generator, ...))")
    return (f"{group.name} is non-abelian, so the augmented kernel is not block-circulant (pass method='dense' "
            "to choose the dense solve without this warning)")
  if not group.exact:
    return (f"{group.name} is not an exact permutation/orthogonal representation (interpolated rotations), so "
            "the kernel is only approximately invariant")
  return homomorphism_defect(group)


def homomorphism_defect(group: FiniteGroup, tol: float = 1e-9) -> Optional[str]:
  """Why rho_X / rho_Y of a cyclic-product group are not homomorphisms for its table (None when they are).

  The fast path's block-circulant structure ``C[b − a]`` rests on ``rho(a ∘ b) = rho(a) rho(b)``; the check is
  :func:`ntk.groups.homomorphism_violation` (generators against all elements on a random probe), repeated here
  because a group's representation can be replaced after construction.
  """
  found = homomorphism_violation(group, tol)
  if found is None:
    return None
  which, s, b, err = found
  return (f"{which} of {group.name} is not a homomorphism for its multiplication table: "
          f"rho(g{s} o g{b}) differs from rho(g{s}) rho(g{b}) by {err:.2e} on a random probe, so the "
          "augmented kernel is not block-circulant (fix the representation or the table)")


def orbit_kernel_blocks(kernel_fn, group: FiniteGroup, x, get=("nngp", "ntk"),
                        batch_size: int = 0) -> dict[str, np.ndarray]:
  """``C[c] = k(X, rho_X(g_c) X)`` for all c: dict of (order, n, n) float64 (|G|·n² kernel entries)."""
  x = np.asarray(x, dtype=np.float64)
  n, k = x.shape[0], group.order
  orbit = np.asarray(group.orbit(x)).reshape((k * n,) + x.shape[1:])
  mats = K.kernel_matrices(kernel_fn, x, orbit, get, batch_size)           # (n, k*n)
  return {name: m.reshape(n, k, n).transpose(1, 0, 2) for name, m in mats.items()}


def invariance_defect(kernel_fn, group: FiniteGroup, x, num_points: int = 8, batch_size: int = 0) -> float:
  """max_g max |k(g X_s, g X_s) − k(X_s, X_s)| / max |k(X_s, X_s)| on the first ``num_points`` inputs (NTK).

  A cheap check (|G|·s² entries) that the kernel is G-invariant on this data; float64 round-off gives
  ~1e-15 for an invariant kernel.
  """
  xs = np.asarray(x, dtype=np.float64)[:num_points]
  ref = K.kernel_matrices(kernel_fn, xs, None, "ntk", batch_size)["ntk"]
  worst = 0.0
  for g in range(1, group.order):
    xg = np.asarray(group.act_x(g, xs))
    worst = max(worst, float(np.max(np.abs(K.kernel_matrices(kernel_fn, xg, None, "ntk", batch_size)["ntk"] - ref))))
  return worst / max(float(np.max(np.abs(ref))), 1e-300)


def _group_fft_axes(group: FiniteGroup) -> tuple[tuple[int, ...], tuple[int, ...]]:
  factors = tuple(group.cyclic_factors)
  return factors, tuple(range(len(factors)))


def _hat_blocks(c: np.ndarray, group: FiniteGroup) -> np.ndarray:
  """(order, n, n) C[c] -> (order, n, n) Hermitian Ĉ_w = |G| ifftn(C)[w] (symmetrized against round-off)."""
  factors, axes = _group_fft_axes(group)
  n = c.shape[-1]
  hat = np.fft.ifftn(c.reshape(factors + (n, n)), axes=axes).reshape(group.order, n, n) * group.order
  return 0.5 * (hat + np.conj(np.swapaxes(hat, -1, -2)))


def _negated_frequency(group: FiniteGroup) -> np.ndarray:
  """(order,) index of −w for every frequency w (multi-index order)."""
  factors = np.asarray(group.cyclic_factors)
  mi = np.stack(np.unravel_index(np.arange(group.order), tuple(factors)), -1)
  return np.ravel_multi_index(tuple(((-mi) % factors).T), tuple(factors))


def _eigh_blocks(hat: np.ndarray, lam: float, neg: np.ndarray) -> tuple[list, list]:
  """Eigendecompositions of Ĉ_w + lam I; Ĉ_{−w} = conj(Ĉ_w) reuses conj(V_w), self-conjugate w are real.

  The independent n×n eigensolves run in parallel threads (LAPACK releases the GIL) with single-threaded
  BLAS: for these sizes threading *inside* one small eigh gains little, and when the cores are shared
  OpenBLAS' spinning worker threads make each small solve far slower.
  """
  n = hat.shape[-1]
  reps = [w for w in range(len(hat)) if neg[w] >= w]      # one of each conjugate pair

  def solve(w):
    if neg[w] == w:   # real symmetric block (e.g. w = 0 and w = k/2)
      e, v = K.hermitian_eigh(np.real(hat[w]) + lam * np.eye(n))
      return e, v.astype(np.complex128)
    return K.hermitian_eigh(hat[w] + lam * np.eye(n))

  workers = max(1, min(len(reps), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                       else (os.cpu_count() or 1)))
  with threadpoolctl.threadpool_limits(1, user_api="blas"):
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      solved = dict(zip(reps, pool.map(solve, reps)))
  evals, evecs = [None] * len(hat), [None] * len(hat)
  for w, (e, v) in solved.items():
    evals[w], evecs[w] = e, v
    evals[neg[w]], evecs[neg[w]] = e, np.conj(v)
  return evals, evecs


def augmented_ensemble_predict(kernel_fn, group: FiniteGroup, x_train, y_train, x_test, ts, *,
                               get: str = "ntk", diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False,
                               compute_cov: K.CovMode = False, batch_size: int = 0, method: str = "auto",
                               check_invariance: bool = True, invariance_tol: float = 1e-6,
                               learning_rate: Optional[float] = None) -> K.EnsemblePrediction:
  """Infinite-ensemble mu_t (and Sigma_t) after training on the full G-orbit of (x_train, y_train).

  Same numbers as ``ntk.kernels.infinite_ensemble_predict(kernel_fn, *augment_full_orbit(group, x, y), ...)``
  (same time convention: ``N = y_aug.size = |G|·y_train.size``; same relative ``diag_reg``), computed
  with the block-circulant solve when the structure holds.

  Args:
    kernel_fn: stax ``kernel_fn`` (G-invariant for the fast path).
    group: the group; its ``act_y`` gives the augmented targets.
    x_train: (n, *input_shape) un-augmented inputs.
    y_train: (n, *output_shape) un-augmented targets.
    x_test: (n_test, *input_shape).
    ts: times (``np.inf`` allowed).
    get, diag_reg, diag_reg_absolute_scale, compute_cov, batch_size, learning_rate: as in
      :func:`ntk.kernels.infinite_ensemble_predict`.
    method: ``"auto"`` (block-circulant when possible, else dense with a warning), ``"blockcirc"`` (raise
      if the structure does not hold) or ``"dense"``.
    check_invariance: verify kernel invariance on a few training points first (:func:`invariance_defect`).
    invariance_tol: relative tolerance for that check.

  Returns:
    :class:`ntk.kernels.EnsemblePrediction` with ``method`` set to ``"blockcirc"`` or ``"dense"`` and
    ``note`` explaining a fallback.
  """
  if method not in ("auto", "blockcirc", "dense"):
    raise ValueError(f"method must be 'auto', 'blockcirc' or 'dense', got {method!r}.")
  names = K._check_get_cov(get, compute_cov)  # pylint: disable=protected-access
  for what, x in (("x_train", x_train), ("x_test", x_test)):
    if tuple(np.shape(x)[1:]) != tuple(group.input_shape):
      raise ValueError(f"{what} has shape {tuple(np.shape(x))} but {group.name} acts on inputs (n, "
                       f"{', '.join(map(str, group.input_shape))}); flatten an orbit (order, n, ...) to rows with "
                       "x.reshape((-1,) + group.input_shape).")
  y_raw = np.asarray(y_train)
  if y_raw.ndim == 1 and np.issubdtype(y_raw.dtype, np.integer):
    warnings.warn(f"y_train is 1-D with integer dtype {y_raw.dtype} (class labels?): it is regressed as one scalar "
                  "output per example. For classification pass one-hot targets, e.g. np.eye(num_classes)[y_train].",
                  stacklevel=2)
  ts = K.check_times(ts)
  x_train = np.asarray(x_train, dtype=np.float64)
  y_train = np.asarray(y_raw, dtype=np.float64)
  if x_train.shape[0] != y_train.shape[0]:
    raise ValueError(f"x_train has {x_train.shape[0]} rows but y_train has {y_train.shape[0]}.")
  note = ""
  if method != "dense":
    note = structure_problem(group) or ""
    if not note and check_invariance:
      defect = invariance_defect(kernel_fn, group, x_train, batch_size=batch_size)
      if defect > invariance_tol:
        note = (f"the kernel is not {group.name}-invariant on these inputs (relative defect {defect:.2e} > "
                f"{invariance_tol:.0e})")
    if note and method == "blockcirc":
      raise ValueError(f"block-circulant solve impossible: {note}. Use method='dense' or 'auto'.")
    if note:
      warnings.warn(f"ntk.blockcirc: {note}; falling back to the dense (|G|n)^2 solve.", stacklevel=2)
  if method == "dense" or note:
    x_aug, y_aug = augment_full_orbit(group, x_train, y_train)
    pred = K.infinite_ensemble_predict(kernel_fn, x_aug, y_aug, x_test, ts, get=get, diag_reg=diag_reg,
                                       diag_reg_absolute_scale=diag_reg_absolute_scale, compute_cov=compute_cov,
                                       batch_size=batch_size, learning_rate=learning_rate)
    return K.EnsemblePrediction(pred.ts, pred.mean, pred.cov, pred.var, get, "dense", note)

  k, n = group.order, x_train.shape[0]
  factors, axes = _group_fft_axes(group)
  with_nngp = bool(compute_cov) and get == "ntk"
  c = orbit_kernel_blocks(kernel_fn, group, x_train, names, batch_size)                  # (k, n, n)
  orbit = np.asarray(group.orbit(x_train)).reshape((k * n,) + x_train.shape[1:])
  r = K.kernel_matrices(kernel_fn, x_test, orbit, names, batch_size)                      # (n_test, k*n)
  n_test = r[get].shape[0]

  def test_hat(m):  # sqrt|G| ifftn over the group axes of R[t, a, i] = k(x_t, g_a x_i): (k, n_test, n)
    m = np.moveaxis(m.reshape((n_test,) + factors + (n,)), 0, -2)
    return np.fft.ifftn(m, axes=axes).reshape(k, n_test, n) * np.sqrt(k)

  hat = _hat_blocks(c[get], group)
  lam = K.regularizer(k * np.trace(c[get][0]), k * n, diag_reg, diag_reg_absolute_scale)
  evals, evecs = _eigh_blocks(hat, lam, _negated_frequency(group))
  y_orbit = np.asarray(group.orbit_y(y_train)).reshape((k, n, -1))
  y_hat = np.fft.fftn(y_orbit.reshape(factors + y_orbit.shape[1:]), axes=axes).reshape(y_orbit.shape) / np.sqrt(k)
  r_hat = test_hat(r[get])
  if with_nngp:
    k_hat = _hat_blocks(c["nngp"], group)
    rk_hat = test_hat(r["nngp"])
  blocks = []
  for w in range(k):
    v = evecs[w]
    vh = v.conj().T
    blocks.append(K.SpectralBlock(evals[w], r_hat[w] @ v, vh @ y_hat[w],
                                  rk_hat[w] @ v if with_nngp else None,
                                  vh @ k_hat[w] @ v if with_nngp else None))
  mean, cov, var = K.spectral_predict(blocks, ts, float(k * y_train.size), y_train.shape[1:], get,
                                      K.nngp_test_test(kernel_fn, x_test, compute_cov, batch_size), compute_cov,
                                      learning_rate)
  return K.EnsemblePrediction(ts, mean, cov, var, get, "blockcirc", "")
