"""Analytic NNGP/NTK kernels and infinite-ensemble predictions of gradient-descent MSE training, in float64.

An architecture enters through its neural-tangents stax ``kernel_fn`` (from the ``(init_fn, apply_fn,
kernel_fn)`` triple). For a zero-mean initialized infinite-width network trained by full-batch gradient
descent on the MSE loss, the outputs on test points x at time t are Gaussian with (Lee et al. 2019,
arXiv:1902.06720; restated in Gerken & Kessel 2024, arXiv:2403.03103)

  mu_t(x)      = Θ(x, X) Θ⁻¹ (I − e^{−Θ t / N}) Y
  Sigma_t(x,x') = K(x,x') + Θ(x,X) Θ⁻¹ T_t K T_t Θ⁻¹ Θ(X,x') − [Θ(x,X) Θ⁻¹ T_t K(X,x') + h.c.],
  T_t = I − e^{−Θ t / N},

with Θ = NTK and K = NNGP on the training inputs X (``get="ntk"``; ``get="nngp"`` is training the readout
only, with Θ replaced by K and Sigma_t = K(x,x') − K(x,X) K⁻¹(I − e^{−2Kt/N}) K(X,x')).

**Time convention** (the one finite ensembles must match): neural-tangents normalizes the loss by the
number of target entries, ``N = y_train.size`` (n_train × outputs), i.e. the loss is
``1/(2 N) · ||f(X) − Y||²`` and ``t = learning_rate × steps`` of full-batch GD. This module uses exactly
the conventions of ``nt.predict.gradient_descent_mse_ensemble`` (same eigenvalue clipping, same relative
``diag_reg = diag_reg · trace(K)/n`` unless ``diag_reg_absolute_scale``), and is tested against it.
The finite members run *discrete* GD; with ``learning_rate`` given, ``e^{−Θ t / N}`` becomes
``(I − lr Θ / N)^s`` at ``t = lr · s`` (:func:`time_factors`), tested against an explicit GD loop.

Everything is computed in float64: kernels are evaluated under ``jax.enable_x64`` and the linear algebra
runs in numpy. The linear algebra is written over *spectral blocks* (eigenvalues, eigenvectors and the
kernels projected on them) so that the group-structured solver in :mod:`ntk.blockcirc`, whose
eigendecomposition is block diagonal after an FFT over the group, reuses the same code.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

import neural_tangents as nt  # ntk/__init__ installs the compatibility layer first

CovMode = Union[bool, str]  # False | "diag" | "full" (True means "full")


# --------------------------------------------------------------------------------------------------
# Kernels.


@functools.lru_cache(maxsize=32)
def _compiled(kernel_fn, batch_size: int):
  if batch_size > 0:
    # device_count=0: never pmap (tests run with fake devices; the batches are serial by design).
    return nt.batch(kernel_fn, batch_size=batch_size, device_count=0, store_on_device=False)
  return jax.jit(kernel_fn, static_argnames=("get",))


def _pad_rows(x: np.ndarray, multiple: int) -> np.ndarray:
  r = (-x.shape[0]) % multiple
  # Pad with copies of row 0 (zeros could hit 0/0 in arc-cosine kernels); the extra rows are dropped.
  return x if r == 0 else np.concatenate([x, np.repeat(x[:1], r, axis=0)], axis=0)


def kernel_matrices(kernel_fn, x1, x2=None, get: Union[str, Sequence[str]] = ("nngp", "ntk"),
                    batch_size: int = 0) -> dict[str, np.ndarray]:
  """Analytic kernels ``k(x1, x2)`` in float64.

  Args:
    kernel_fn: a neural-tangents stax ``kernel_fn`` with scalar-per-pair output (e.g. a Flatten or Dense
      readout), so each kernel is (n1, n2).
    x1: (n1, *input_shape).
    x2: (n2, *input_shape), or None for ``x1``.
    get: ``"nngp"``, ``"ntk"`` or a tuple of them.
    batch_size: > 0 evaluates in (batch_size × batch_size) tiles with ``nt.batch`` (bounds memory, e.g. for
      CNN kernels); inputs are padded to a multiple of it. 0: one jitted call.

  Returns:
    dict ``{name: (n1, n2) float64 array}``.
  """
  names = (get,) if isinstance(get, str) else tuple(get)
  bad = set(names) - {"nngp", "ntk"}
  if bad:
    raise ValueError(f"get must contain only 'nngp'/'ntk', got {sorted(bad)}.")
  x1 = np.asarray(x1, dtype=np.float64)
  n1 = x1.shape[0]
  x2a = None if x2 is None else np.asarray(x2, dtype=np.float64)
  n2 = n1 if x2a is None else x2a.shape[0]
  if batch_size > 0:
    x1 = _pad_rows(x1, batch_size)
    x2a = None if x2a is None else _pad_rows(x2a, batch_size)
  with jax.enable_x64(True):
    out = _compiled(kernel_fn, int(batch_size))(jnp.asarray(x1), None if x2a is None else jnp.asarray(x2a),
                                                 get=names)
  res = {}
  for name, k in zip(names, out):
    k = np.asarray(k, dtype=np.float64)
    if k.ndim != 2:
      raise ValueError(f"kernel {name!r} has shape {k.shape}; expected (n1, n2). Use a readout that ends in "
                       "Flatten/GlobalAvgPool + Dense so the kernel is one number per pair of inputs.")
    res[name] = k[:n1, :n2]
  return res


def kernel_diagonal(kernel_fn, x, get: str = "nngp", batch_size: int = 64) -> np.ndarray:
  """(n,) float64 ``k(x_i, x_i)``, evaluated on diagonal tiles of at most ``batch_size`` points."""
  x = np.asarray(x, dtype=np.float64)
  step = max(1, batch_size) if batch_size > 0 else x.shape[0]
  return np.concatenate([np.diag(kernel_matrices(kernel_fn, x[s:s + step], None, get)[get])
                         for s in range(0, x.shape[0], step)])


def stable_lr(kernel_fn, x_train, n_outputs: int, fraction: float = 1.0, batch_size: int = 0) -> float:
  """A full-batch GD learning rate relative to the stability limit: ``fraction * N / lambda_max(Θ(X, X))``.

  With the MSE normalization of this module (loss ``||f(X) − Y||² / (2 N)``, ``N = y_train.size =
  n_train * n_outputs``), one GD step of the linearized network maps the residual by ``I − lr Θ / N`` (Θ the
  (n_train × n_train) analytic NTK, outputs i.i.d.), so GD is stable iff ``lr < 2 N / lambda_max``, i.e.
  ``fraction < 2``. ``fraction = 1`` removes the stiffest mode in one step; in NTK time ``t = lr * steps`` each
  step is ``Δt = N / lambda_max``.

  Args:
    kernel_fn: stax ``kernel_fn`` of the members' architecture (scalar per pair of inputs).
    x_train: ``(n_train, *input_shape)`` training inputs (e.g. the full-orbit augmented set).
    n_outputs: outputs per example (``y_train.shape[1]``).
    fraction: the learning rate in units of ``N / lambda_max``.
    batch_size: kernel tile size (:func:`kernel_matrices`).
  """
  theta = kernel_matrices(kernel_fn, x_train, None, "ntk", batch_size)["ntk"]
  return float(fraction * len(x_train) * n_outputs / np.linalg.eigvalsh(theta)[-1])


# --------------------------------------------------------------------------------------------------
# Spectral core shared with ntk.blockcirc.


@dataclasses.dataclass(frozen=True)
class EnsemblePrediction:
  """Infinite-ensemble outputs at several times.

  Attributes:
    ts: (T,) times (``t = learning_rate × steps``; ``np.inf`` allowed).
    mean: (T, n_test, *output_shape) mu_t.
    cov: (T, n_test, n_test) Sigma_t (per output channel; channels are i.i.d.), or None.
    var: (T, n_test) diagonal of Sigma_t, or None.
    get: ``"ntk"`` (all layers trained) or ``"nngp"`` (readout only).
    method: ``"dense"`` or ``"blockcirc"`` (see :mod:`ntk.blockcirc`).
    note: why a structured solve was not used, if it was requested.
  """
  ts: np.ndarray
  mean: np.ndarray
  cov: Optional[np.ndarray] = None
  var: Optional[np.ndarray] = None
  get: str = "ntk"
  method: str = "dense"
  note: str = ""


@dataclasses.dataclass(frozen=True)
class SpectralBlock:
  """One diagonal block of an eigendecomposition ``Θ_reg = V diag(e) V^H`` (a unitary V; complex allowed).

  Attributes:
    evals: (m,) real eigenvalues of the regularized train-train kernel of the ``get`` mode.
    p: (n_test, m) ``k_get(x_test, X) V``.
    vty: (m, d) ``V^H Y`` (d = flattened output size).
    p_nngp: (n_test, m) ``K(x_test, X) V`` (NTK covariance only).
    k_nngp: (m, m) ``V^H K(X, X) V`` with the unregularized NNGP (NTK covariance only).
  """
  evals: np.ndarray
  p: np.ndarray
  vty: np.ndarray
  p_nngp: Optional[np.ndarray] = None
  k_nngp: Optional[np.ndarray] = None


def hermitian_eigh(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Eigenvalues (ascending) and unitary eigenvectors of a real-symmetric or complex-Hermitian matrix.

  LAPACK's MRRR driver (``?syevr``/``?heevr``) is faster than numpy's default (divide and conquer) on the
  block sizes used here; shared by the dense and the block-circulant paths so their timings compare like with
  like.
  """
  return scipy.linalg.eigh(a, driver="evr", check_finite=False)


def regularizer(trace: float, n: int, diag_reg: float, absolute: bool) -> float:
  """The diagonal shift neural-tangents adds: ``diag_reg`` or ``diag_reg · trace/n`` (relative, default)."""
  return float(diag_reg if absolute else diag_reg * trace / n)


def check_times(ts) -> np.ndarray:
  """``ts`` as a (T,) float64 array after checking every time is >= 0 or ``+inf`` (the prediction times).

  A negative time runs the dynamics backwards (finite but meaningless outputs) and NaN poisons every output,
  so both are refused here, before any kernel is evaluated.
  """
  ts = np.atleast_1d(np.asarray(ts, dtype=np.float64))
  if ts.ndim != 1 or ts.size == 0:
    raise ValueError(f"ts must be a non-empty scalar or 1-d sequence of times, got shape {np.shape(ts)}.")
  bad = np.isnan(ts) | (ts < 0)
  if np.any(bad):
    raise ValueError(f"ts: times must be >= 0 (t = learning_rate * steps) or np.inf; got {ts[bad].tolist()}. "
                     "Pass non-negative times.")
  return ts


def time_factors(evals: np.ndarray, ts: np.ndarray, normalization: float, twice: bool = False,
                 learning_rate: Optional[float] = None) -> np.ndarray:
  """(T, m) ``Θ⁻¹ T_t`` on eigenvalues: continuous or discrete-time gradient descent on the MSE.

  - ``learning_rate=None`` (gradient flow): ``(1 − exp(−max(e,0) t/N)) / |e|`` (``1/|e|`` at t = inf);
    mirrors neural-tangents' ``-inv_expm1`` exactly.
  - ``learning_rate=eta`` (full-batch GD, what finite members run): ``t = eta · s`` with an integer step count
    s, and one step maps the train residual by ``I − eta Θ / N``, so ``T_t = I − (I − eta Θ/N)^s`` and the
    factor is ``(1 − (1 − eta max(e,0)/N)^s) / |e|``. It tends to the continuous one as eta → 0 at fixed t.
    At t = inf it is ``1/|e|`` if every mode is stable (``eta e / N < 2``), else a ValueError.

  ``twice=True`` uses 2t (2s steps; the NNGP covariance).
  """
  ts = np.asarray(ts, dtype=np.float64).reshape(-1, 1) * (2.0 if twice else 1.0)
  e = np.asarray(evals, dtype=np.float64).reshape(1, -1)
  # An eigenvalue of exactly 0 (repeated training inputs make Θ singular) takes its limits: t/N at finite t,
  # and 0 at t = inf (the pseudo-inverse; gradient descent never moves along the null space). Either way it
  # multiplies a zero test-train component, but 0/0 would turn the whole prediction into NaN.
  zero = e == 0.0
  safe_e = np.where(zero, 1.0, np.abs(e))
  t_fin = np.where(np.isinf(ts), 0.0, ts)
  e_pos = np.maximum(e, 0.0)
  if learning_rate is None:
    decayed = -np.expm1(-e_pos * t_fin / normalization)
  else:
    steps = discrete_steps(ts, learning_rate)
    x = learning_rate * e_pos / normalization
    if np.any(np.isinf(ts)) and np.any(x >= 2.0):
      raise ValueError(f"learning_rate={learning_rate} exceeds the GD stability limit 2 N / lambda_max = "
                       f"{2.0 * normalization / e.max():.4g}: the t = inf limit does not exist; lower it "
                       "(ntk.kernels.stable_lr) or drop t = inf.")
    s_fin = np.where(np.isinf(steps), 0.0, steps)
    # 1 − (1 − x)^s: via expm1/log1p where 1 − x > 0 (accurate for tiny x), by the power otherwise
    # (x >= 1: the mode is removed in one step, or oscillates).
    small = x < 1.0
    decayed = np.where(small, -np.expm1(s_fin * np.log1p(-np.where(small, x, 0.0))),
                       1.0 - np.power(1.0 - x, s_fin))
  finite = np.where(zero, t_fin / normalization, decayed / safe_e)
  return np.where(np.isinf(ts), np.where(zero, 0.0, 1.0 / safe_e), finite)


def discrete_steps(ts, learning_rate: float) -> np.ndarray:
  """Integer step counts ``s = t / learning_rate`` of times ``ts`` (inf kept); ValueError if t is not a multiple."""
  if not learning_rate > 0:
    raise ValueError(f"learning_rate={learning_rate} must be > 0 (or None for continuous time).")
  ts = np.asarray(ts, dtype=np.float64)
  t_fin = np.where(np.isinf(ts), 0.0, ts)
  steps = np.round(t_fin / learning_rate)
  if np.any(np.abs(t_fin / learning_rate - steps) > 1e-6 * np.maximum(1.0, steps)) or np.any(steps < 0):
    raise ValueError(f"discrete-time GD needs times t = learning_rate * steps with integer steps >= 0; got "
                     f"t / learning_rate = {t_fin.ravel() / learning_rate}. Pass ts = learning_rate * steps.")
  return np.where(np.isinf(ts), np.inf, steps)


def spectral_predict(blocks: Sequence[SpectralBlock], ts, normalization: float, output_shape: tuple,
                     get: str = "ntk", k_test_test: Optional[np.ndarray] = None,
                     compute_cov: CovMode = False, learning_rate: Optional[float] = None
                     ) -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
  """mu_t and Sigma_t from a (block-diagonal) eigendecomposition of the train-train kernel.

  Args:
    blocks: spectral blocks whose union is the full eigendecomposition (one block for the dense path).
    ts: (T,) times.
    normalization: N = y_train.size.
    output_shape: per-example output shape (the d of ``vty`` flattened).
    get: ``"ntk"`` or ``"nngp"``.
    k_test_test: NNGP on the test points: (n_test, n_test) for ``"full"``, (n_test,) for ``"diag"``.
    compute_cov: False, ``"diag"`` or ``"full"`` (True = ``"full"``).
    learning_rate: None: gradient flow; a float: discrete GD with this step size (:func:`time_factors`).

  Returns:
    ``(mean (T, n_test, *output_shape), cov (T, n_test, n_test) or None, var (T, n_test) or None)``.
  """
  mode = "full" if compute_cov is True else (compute_cov or None)
  ts = check_times(ts)
  n_test = blocks[0].p.shape[0]
  mean = np.zeros((len(ts), n_test, blocks[0].vty.shape[1]))
  cov = None if mode is None else np.zeros((len(ts), n_test, n_test) if mode == "full" else (len(ts), n_test))
  for b in blocks:
    g = time_factors(b.evals, ts, normalization, learning_rate=learning_rate)                              # (T, m)
    mean += np.real(np.einsum("lm,tm,md->tld", b.p, g, b.vty, optimize=True))
    if mode is None:
      continue
    if get == "nngp":
      h = time_factors(b.evals, ts, normalization, twice=True, learning_rate=learning_rate)
      if mode == "full":
        cov -= np.real(np.einsum("lm,tm,km->tlk", b.p, h, b.p.conj(), optimize=True))
      else:
        cov -= np.real(np.einsum("lm,tm,lm->tl", b.p, h, b.p.conj(), optimize=True))
      continue
    if b.p_nngp is None or b.k_nngp is None:
      raise ValueError("NTK covariance needs the NNGP projections (p_nngp, k_nngp) in every block.")
    for ti in range(len(ts)):
      pg = b.p * g[ti]                                                          # (n_test, m)
      if mode == "full":
        t2 = pg @ b.k_nngp @ pg.conj().T
        t1 = pg @ b.p_nngp.conj().T
        cov[ti] += np.real(t2 - t1 - t1.conj().T)
      else:
        t2 = np.sum((pg @ b.k_nngp) * pg.conj(), axis=-1)
        t1 = np.sum(pg * b.p_nngp.conj(), axis=-1)
        cov[ti] += np.real(t2 - 2.0 * t1)
  mean = mean.reshape((len(ts), n_test) + tuple(output_shape))
  if mode is None:
    return mean, None, None
  if k_test_test is None:
    raise ValueError("compute_cov needs k_test_test (the NNGP on the test points).")
  cov += np.asarray(k_test_test)[None]
  return (mean, cov, None) if mode == "full" else (mean, None, cov)


def dense_block(k_train_train: dict, k_test_train: dict, y_train: np.ndarray, get: str, diag_reg: float,
                diag_reg_absolute_scale: bool, with_nngp: bool) -> SpectralBlock:
  """The single spectral block of a dense eigendecomposition (real symmetric ``eigh``)."""
  k = k_train_train[get]
  n = k.shape[0]
  lam = regularizer(np.trace(k), n, diag_reg, diag_reg_absolute_scale)
  evals, v = hermitian_eigh(k + lam * np.eye(n))
  y = np.asarray(y_train, dtype=np.float64).reshape(n, -1)
  p_nngp = k_nngp = None
  if with_nngp:
    p_nngp = k_test_train["nngp"] @ v
    k_nngp = v.T @ k_train_train["nngp"] @ v
  return SpectralBlock(evals, k_test_train[get] @ v, v.T @ y, p_nngp, k_nngp)


def _check_get_cov(get: str, compute_cov: CovMode) -> tuple[str, ...]:
  if get not in ("ntk", "nngp"):
    raise ValueError(f"get must be 'ntk' or 'nngp', got {get!r}.")
  if compute_cov not in (False, True, "diag", "full"):
    raise ValueError(f"compute_cov must be False, True, 'diag' or 'full', got {compute_cov!r}.")
  return ("nngp", "ntk") if (compute_cov and get == "ntk") else (get,)


def nngp_test_test(kernel_fn, x_test, compute_cov: CovMode, batch_size: int = 0):
  """The NNGP on the test points in the shape :func:`spectral_predict` needs (None without covariance)."""
  if not compute_cov:
    return None
  if compute_cov == "diag":
    return kernel_diagonal(kernel_fn, x_test, "nngp", batch_size or 64)
  return kernel_matrices(kernel_fn, x_test, None, "nngp", batch_size)["nngp"]


def infinite_ensemble_predict(kernel_fn, x_train, y_train, x_test, ts, *, get: str = "ntk",
                              diag_reg: float = 0.0, diag_reg_absolute_scale: bool = False,
                              compute_cov: CovMode = False, batch_size: int = 0,
                              learning_rate: Optional[float] = None) -> EnsemblePrediction:
  """Mean (and covariance) of the infinite ensemble of infinite-width networks trained by GD on MSE.

  Dense path: one (n_train × n_train) eigendecomposition. For full-orbit augmented data and abelian groups
  acting by permutations/orthogonal maps, :func:`ntk.blockcirc.augmented_ensemble_predict` is much faster.

  Args:
    kernel_fn: stax ``kernel_fn``.
    x_train: (n_train, *input_shape) (e.g. the output of :func:`ntk.groups.augment_full_orbit`).
    y_train: (n_train, *output_shape) targets.
    x_test: (n_test, *input_shape).
    ts: times ``t = learning_rate × steps`` (scalar or sequence; ``np.inf`` allowed). The dynamics use
      ``exp(−Θ t / y_train.size)`` (neural-tangents' loss normalization).
    get: ``"ntk"`` (train all layers) or ``"nngp"`` (train the readout only).
    diag_reg: ridge added to the train-train kernel, relative to its mean diagonal unless
      ``diag_reg_absolute_scale`` (as in ``nt.predict.gradient_descent_mse_ensemble``).
    compute_cov: False, ``"diag"`` (variances) or ``"full"``/True (test covariance).
    batch_size: kernel tile size for ``nt.batch`` (0: unbatched).
    learning_rate: None: gradient flow, ``T_t = I − exp(−Θ t/N)`` (neural-tangents' convention). A float:
      the discrete-time GD that finite members run with this step size, ``T_t = I − (I − lr Θ/N)^s`` at
      ``t = lr · s`` (ts must be multiples of it); use it wherever members are compared with mu_t at a
      step count, so that early steps carry no discretisation error.

  Returns:
    An :class:`EnsemblePrediction` with ``mean`` (T, n_test, *output_shape) in float64.
  """
  names = _check_get_cov(get, compute_cov)
  ts = check_times(ts)
  y_train = np.asarray(y_train, dtype=np.float64)
  if y_train.shape[0] != np.shape(x_train)[0]:
    raise ValueError(f"x_train has {np.shape(x_train)[0]} rows but y_train has {y_train.shape[0]}.")
  k_dd = kernel_matrices(kernel_fn, x_train, None, names, batch_size)
  k_td = kernel_matrices(kernel_fn, x_test, x_train, names, batch_size)
  block = dense_block(k_dd, k_td, y_train, get, diag_reg, diag_reg_absolute_scale,
                      with_nngp=bool(compute_cov) and get == "ntk")
  mean, cov, var = spectral_predict([block], ts, float(y_train.size), y_train.shape[1:], get,
                                    nngp_test_test(kernel_fn, x_test, compute_cov, batch_size), compute_cov,
                                    learning_rate)
  return EnsemblePrediction(ts, mean, cov, var, get, "dense")
