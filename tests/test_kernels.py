"""ntk.kernels: batched float64 kernels, predictions vs nt.predict, equivariance of mu_t under augmentation,
the GD learning rate relative to the stability limit."""

import jax
import numpy as np
import pytest

import ntk  # noqa: F401  (compat layer before neural_tangents)
import neural_tangents as nt
from neural_tangents import stax

from ntk import groups as G
from ntk import kernels as K
from ntk.architectures import ArchSpec
from ntk.metrics import orbit_equivariance_errors

TS = np.array([0.0, 1.0, 10.0, 100.0, np.inf])


def _mlp(act=stax.Erf):
  return stax.serial(stax.Flatten(), stax.Dense(64, W_std=1.5, b_std=0.1), act(),
                     stax.Dense(64, W_std=1.5, b_std=0.1), act(), stax.Dense(3, W_std=1.5, b_std=0.1))


def _cnn():
  return stax.serial(stax.Conv(8, (3, 3), padding="SAME", W_std=1.5, b_std=0.1), stax.Erf(),
                     stax.Conv(8, (3, 3), padding="SAME", W_std=1.5, b_std=0.1), stax.Erf(),
                     stax.Flatten(), stax.Dense(2, W_std=1.5, b_std=0.1))


def test_kernel_matrices_batched_equals_unbatched_and_float64():
  _, _, kernel_fn = _mlp()
  rng = np.random.default_rng(0)
  x1, x2 = rng.normal(size=(7, 3, 2)), rng.normal(size=(5, 3, 2))
  full = K.kernel_matrices(kernel_fn, x1, x2)
  tiled = K.kernel_matrices(kernel_fn, x1, x2, batch_size=2)   # 7 and 5 are padded to multiples of 2
  assert full["ntk"].dtype == np.float64 and full["ntk"].shape == (7, 5)
  for name in ("nngp", "ntk"):
    np.testing.assert_allclose(tiled[name], full[name], rtol=1e-13, atol=0)
  ref = kernel_fn(x1, x2, ("nngp", "ntk"))   # eager float32 oracle
  np.testing.assert_allclose(full["ntk"], np.asarray(ref.ntk), rtol=1e-5)
  diag = K.kernel_diagonal(kernel_fn, x1, "nngp", batch_size=3)
  np.testing.assert_allclose(diag, np.diag(K.kernel_matrices(kernel_fn, x1, None, "nngp")["nngp"]), rtol=1e-13)


@pytest.mark.parametrize("get", ["ntk", "nngp"])
def test_predictions_match_neural_tangents(get, x64):
  _, _, kernel_fn = _mlp()
  rng = np.random.default_rng(1)
  x, y, xt = rng.normal(size=(12, 5)), rng.normal(size=(12, 3)), rng.normal(size=(6, 5))
  ref = nt.predict.gradient_descent_mse_ensemble(kernel_fn, x, y, diag_reg=1e-3)
  mean_ref, cov_ref = ref(TS, xt, get, compute_cov=True)
  full = K.infinite_ensemble_predict(kernel_fn, x, y, xt, TS, get=get, diag_reg=1e-3, compute_cov="full")
  diag = K.infinite_ensemble_predict(kernel_fn, x, y, xt, TS, get=get, diag_reg=1e-3, compute_cov="diag",
                                     batch_size=4)
  assert full.mean.shape == (5, 6, 3) and full.cov.shape == (5, 6, 6) and diag.var.shape == (5, 6)
  np.testing.assert_allclose(full.mean, mean_ref, atol=1e-10)
  np.testing.assert_allclose(full.cov, cov_ref, atol=1e-10)
  np.testing.assert_allclose(diag.mean, mean_ref, atol=1e-10)
  np.testing.assert_allclose(diag.var, np.diagonal(np.asarray(cov_ref), axis1=1, axis2=2), atol=1e-10)
  np.testing.assert_array_equal(full.mean[0], 0.0)   # zero-mean ensemble at t = 0


def test_absolute_regularizer_and_time_scaling_convention(x64):
  _, _, kernel_fn = _mlp()
  rng = np.random.default_rng(2)
  x, y, xt = rng.normal(size=(8, 4)), rng.normal(size=(8, 3)), rng.normal(size=(3, 4))
  ref = nt.predict.gradient_descent_mse_ensemble(kernel_fn, x, y, diag_reg=0.05, diag_reg_absolute_scale=True,
                                                 learning_rate=2.0)
  # neural-tangents multiplies t by learning_rate: t = lr * steps.
  ours = K.infinite_ensemble_predict(kernel_fn, x, y, xt, 2.0 * np.array([3.0, 30.0]), diag_reg=0.05,
                                     diag_reg_absolute_scale=True)
  np.testing.assert_allclose(ours.mean, ref(np.array([3.0, 30.0]), xt, "ntk"), atol=1e-10)
  # Hand-rolled oracle of the time convention exp(-Θ t / y.size).
  kdd = K.kernel_matrices(kernel_fn, x, None, "ntk")["ntk"] + 0.05 * np.eye(8)
  ktd = K.kernel_matrices(kernel_fn, xt, x, "ntk")["ntk"]
  e, v = np.linalg.eigh(kdd)
  t = 7.0
  manual = ktd @ v @ np.diag((1 - np.exp(-e * t / y.size)) / e) @ v.T @ y
  np.testing.assert_allclose(K.infinite_ensemble_predict(kernel_fn, x, y, xt, t, diag_reg=0.05,
                                                         diag_reg_absolute_scale=True).mean[0], manual, atol=1e-12)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_mu_equivariant_with_full_augmentation_only(arch):
  """Gerken & Kessel's claim on the analytic side: mu_t is C4-invariant at every t, on and off manifold."""
  _, _, kernel_fn = _mlp() if arch == "mlp" else _cnn()
  shape = (6, 6, 1)
  c4 = G.rotations_c4(shape)
  rng = np.random.default_rng(3)
  x = rng.uniform(size=(6,) + shape)
  y = np.eye(3 if arch == "mlp" else 2)[np.arange(6) % (3 if arch == "mlp" else 2)]
  x_test = np.concatenate([rng.uniform(size=(3,) + shape), rng.normal(size=(3,) + shape)])   # on/off manifold
  test_orbit = c4.orbit(x_test).reshape((-1,) + shape)
  x_aug, y_aug = G.augment_full_orbit(c4, x, y)
  aug = K.infinite_ensemble_predict(kernel_fn, x_aug, y_aug, test_orbit, TS, diag_reg=1e-4)
  noaug = K.infinite_ensemble_predict(kernel_fn, x, y, test_orbit, [np.inf], diag_reg=1e-4)
  err = lambda m: orbit_equivariance_errors(m.reshape((4, 6) + m.shape[1:]), c4).max()
  aug_err = max(err(m) for m in aug.mean)
  assert aug_err < 1e-10
  assert err(noaug.mean[0]) > 1e-3


def test_bad_arguments_raise():
  _, _, kernel_fn = _mlp()
  x = np.zeros((4, 3))
  with pytest.raises(ValueError, match="get must"):
    K.infinite_ensemble_predict(kernel_fn, x, np.zeros((4, 1)), x, 1.0, get="gp")
  with pytest.raises(ValueError, match="rows"):
    K.infinite_ensemble_predict(kernel_fn, x, np.zeros((3, 1)), x, 1.0)
  with pytest.raises(ValueError, match="compute_cov"):
    K.infinite_ensemble_predict(kernel_fn, x, np.zeros((4, 1)), x, 1.0, compute_cov="yes")
  _, _, no_readout = stax.serial(stax.Conv(4, (3, 3), padding="SAME"), stax.Erf())
  with pytest.raises(ValueError, match="readout"):
    K.kernel_matrices(no_readout, np.zeros((2, 4, 4, 1)))


def test_time_factors_zero_eigenvalue_takes_its_limits():
  from ntk.kernels import time_factors
  f = time_factors(np.array([0.0, 2.0]), np.array([0.5, np.inf]), normalization=4.0)
  assert np.all(np.isfinite(f))
  np.testing.assert_allclose(f[0], [0.5 / 4.0, -np.expm1(-2.0 * 0.5 / 4.0) / 2.0])
  np.testing.assert_allclose(f[1], [0.0, 0.5])
  # Continuity at the limit: a tiny positive eigenvalue gives (almost) t/N.
  np.testing.assert_allclose(time_factors(np.array([1e-12]), np.array([0.5]), 4.0)[0, 0], 0.125, rtol=1e-9)


def test_stable_lr_is_a_fraction_of_the_gd_stability_limit(x64):
  """``stable_lr`` is ``fraction * y.size / lambda_max(Θ)``: GD on a wide linearized network (empirical NTK
  ~ the analytic one) contracts every mode for fraction 1.5 and blows up the stiffest one for fraction 3 --
  which fails if the normalization missed the number of outputs."""
  spec = ArchSpec(kind="mlp", width=2048, depth=1, out_dim=3, b_std=0.1)
  init_fn, apply_fn, kernel_fn = spec.stax()
  rng = np.random.default_rng(5)
  x = rng.normal(size=(10, 2))
  n, d = x.shape[0], 3
  lam_max = np.linalg.eigvalsh(np.asarray(kernel_fn(x, None, "ntk")))[-1]
  for fraction in (0.5, 1.0, 1.9):
    np.testing.assert_allclose(K.stable_lr(kernel_fn, x, d, fraction) * lam_max / (n * d), fraction, rtol=1e-8)
  _, params = init_fn(jax.random.PRNGKey(0), x.shape)
  theta = np.asarray(nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0)(x, None, params))  # (n, n, d, d)
  theta = theta.transpose(0, 2, 1, 3).reshape(n * d, n * d)  # residual r (n, d) flattened row-major
  eig = np.linalg.eigvalsh(theta)
  for fraction, stable in ((1.5, True), (3.0, False)):
    lr = K.stable_lr(kernel_fn, x, d, fraction)
    # One GD step on MSE ||f - y||^2 / (2 y.size) maps the residual by I - lr Θ / y.size.
    radius = np.max(np.abs(1.0 - lr * eig / (n * d)))
    assert (radius < 1.0) == stable, (fraction, radius)


def _linear_gd_oracle(k_dd, k_td, nngp_joint, y, lr, steps):
  """Explicit float64 loop of full-batch GD on the linearized model (loss ||f(X) - Y||^2 / (2 y.size)).

  f_s is affine in the initial outputs (f_0(X), f_0(x)) ~ N(0, K_joint): the loop carries the linear maps
  P (n + n_test columns) and the shift c, so mean = c and cov = P K_joint P^T, at each requested step.
  """
  n, n_test = k_dd.shape[0], k_td.shape[0]
  p_tr, p_te = np.eye(n, n + n_test), np.eye(n_test, n + n_test, k=n)
  c_tr, c_te = np.zeros_like(y), np.zeros((n_test, y.shape[1]))
  out, eta = {}, lr / y.size
  for s in range(max(steps) + 1):
    if s in steps:
      out[s] = (c_te, p_te @ nngp_joint @ p_te.T)
    p_tr, p_te = p_tr - eta * k_dd @ p_tr, p_te - eta * k_td @ p_tr
    c_tr, c_te = c_tr - eta * k_dd @ (c_tr - y), c_te - eta * k_td @ (c_tr - y)
  return out


@pytest.mark.parametrize("fraction,get", [(0.5, "ntk"), (1.0, "ntk"), (1.7, "ntk"), (1.0, "nngp")])
def test_discrete_time_mu_and_sigma_match_an_explicit_gd_loop(x64, fraction, get):
  _, _, kernel_fn = _mlp()
  rng = np.random.default_rng(5)
  x, y, xt = rng.normal(size=(8, 4)), rng.normal(size=(8, 2)), rng.normal(size=(3, 4))
  kd = K.kernel_matrices(kernel_fn, x, None)
  kt = K.kernel_matrices(kernel_fn, xt, x)
  xall = np.concatenate([x, xt])
  joint = K.kernel_matrices(kernel_fn, xall, None, "nngp")["nngp"]
  lr = fraction * y.size / np.linalg.eigvalsh(kd[get])[-1]  # 1.0: the stiffest mode leaves in one step
  steps = [0, 1, 2, 3, 10, 40]
  # get="nngp" trains the readout only: the same loop with Θ replaced by K.
  ref = _linear_gd_oracle(kd[get], kt[get], joint, y, lr, steps)
  pred = K.infinite_ensemble_predict(kernel_fn, x, y, xt, lr * np.array(steps), get=get, compute_cov="full",
                                     learning_rate=lr)
  for i, s in enumerate(steps):
    np.testing.assert_allclose(pred.mean[i], ref[s][0], atol=1e-10, err_msg=f"step {s}")
    np.testing.assert_allclose(pred.cov[i], ref[s][1], atol=1e-10, err_msg=f"step {s}")
  # At early steps the continuous-time mu_t differs from what GD does (the discretisation error it removes).
  cont = K.infinite_ensemble_predict(kernel_fn, x, y, xt, lr * np.array(steps[1:3]), get=get).mean
  assert np.abs(cont - pred.mean[1:3]).max() > 1e-2 * np.abs(pred.mean[1:3]).max()


def test_discrete_time_limits_and_bad_steps(x64):
  _, _, kernel_fn = _mlp()
  rng = np.random.default_rng(6)
  x, y, xt = rng.normal(size=(8, 4)), rng.normal(size=(8, 1)), rng.normal(size=(3, 4))
  lam = np.linalg.eigvalsh(K.kernel_matrices(kernel_fn, x, None, "ntk")["ntk"])[-1]
  # Small steps: gradient flow. t = inf: the same fixed point as continuous time.
  small = 1e-3 * y.size / lam
  t = 2000 * small
  np.testing.assert_allclose(K.infinite_ensemble_predict(kernel_fn, x, y, xt, t, learning_rate=small).mean,
                             K.infinite_ensemble_predict(kernel_fn, x, y, xt, t).mean, rtol=2e-3, atol=1e-6)
  lr = y.size / lam
  np.testing.assert_allclose(K.infinite_ensemble_predict(kernel_fn, x, y, xt, np.inf, learning_rate=lr).mean,
                             K.infinite_ensemble_predict(kernel_fn, x, y, xt, np.inf).mean, atol=1e-10)
  with pytest.raises(ValueError, match="learning_rate \\* steps"):
    K.infinite_ensemble_predict(kernel_fn, x, y, xt, 1.5 * lr, learning_rate=lr)
  with pytest.raises(ValueError, match="stability limit"):
    K.infinite_ensemble_predict(kernel_fn, x, y, xt, np.inf, learning_rate=2.5 * lr)
