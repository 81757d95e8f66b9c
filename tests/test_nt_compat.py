"""neural-tangents 0.6.5 on current JAX through ntk._nt_compat: every code path the project uses."""

import importlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntk import _nt_compat
import neural_tangents as nt
from neural_tangents import stax


def _mlp(act):
  return stax.serial(stax.Dense(256, W_std=1.5, b_std=0.1), act, stax.Dense(256, W_std=1.5, b_std=0.1), act,
                     stax.Dense(8, W_std=1.5, b_std=0.1))  # 8 outputs: 8x the MC samples per draw


def _cnn(readout):
  return stax.serial(stax.Conv(64, (3, 3), padding="SAME", W_std=1.4), stax.Relu(), readout,
                     stax.Dense(1, W_std=1.4))


@pytest.mark.parametrize("act", [stax.Relu(), stax.Erf()], ids=["relu", "erf"])
def test_analytic_mlp_kernel_matches_monte_carlo(act, key):
  init_fn, apply_fn, kernel_fn = _mlp(act)
  x1 = jax.random.normal(key, (6, 5))
  x2 = jax.random.normal(jax.random.fold_in(key, 1), (4, 5))
  analytic = kernel_fn(x1, x2, ("nngp", "ntk"))
  mc_fn = nt.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.fold_in(key, 2), n_samples=256,
                                   implementation=2, trace_axes=(-1,), device_count=0)
  mc = mc_fn(x1, x2, ("nngp", "ntk"))
  for a, m in zip(analytic, mc):
    assert float(jnp.linalg.norm(m - a) / jnp.linalg.norm(a)) < 0.1


@pytest.mark.parametrize("readout", [stax.Flatten(), stax.GlobalAvgPool()], ids=["flatten", "gap"])
def test_analytic_cnn_kernel_matches_monte_carlo(readout, key):
  init_fn, apply_fn, kernel_fn = _cnn(readout)
  x1 = jax.random.normal(key, (3, 5, 5, 2))
  x2 = jax.random.normal(jax.random.fold_in(key, 1), (2, 5, 5, 2))
  analytic = kernel_fn(x1, x2, "ntk")
  mc = nt.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.fold_in(key, 2), n_samples=128, device_count=0,
                                implementation=2)(x1, x2, "ntk")
  assert analytic.shape == (3, 2)
  np.testing.assert_allclose(mc, analytic, rtol=0.15, atol=0.15 * float(jnp.abs(analytic).max()))


def test_kernel_fn_jits(key, x64):
  _, _, kernel_fn = _mlp(stax.Relu())
  x = jax.random.normal(key, (4, 3))
  eager = kernel_fn(x, x, "ntk")
  jitted = jax.jit(kernel_fn, static_argnames="get")(x, x, get="ntk")
  # arccos near the diagonal amplifies round-off differences between XLA fusions (~1e-9 relative).
  np.testing.assert_allclose(jitted, eager, rtol=1e-7)


@pytest.mark.parametrize("t", [0.5, 10.0, None], ids=["t0.5", "t10", "t_inf"])
def test_gradient_descent_mse_ensemble_matches_dense_solve(t, key, x64):
  _, _, kernel_fn = _mlp(stax.Relu())
  x_train = jax.random.normal(key, (8, 3))
  y_train = jax.random.normal(jax.random.fold_in(key, 1), (8, 1))
  x_test = jax.random.normal(jax.random.fold_in(key, 2), (3, 3))
  predict = nt.predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y_train, diag_reg=0.0)
  mean, cov = predict(t=t, x_test=x_test, get="ntk", compute_cov=True)

  # Oracle: dense numpy formulas of Lee et al. (2019), eq. (16), with learning rate 1.
  k = {g: np.asarray(kernel_fn(a, b, g), np.float64) for g in ("ntk", "nngp")
       for a, b in [(x_train, x_train)]}
  ktt = {g: np.asarray(kernel_fn(x_test, x_train, g), np.float64) for g in ("ntk", "nngp")}
  kss = np.asarray(kernel_fn(x_test, x_test, "nngp"), np.float64)
  theta, kxx = k["ntk"], k["nngp"]
  w, v = np.linalg.eigh(theta)
  # neural-tangents normalizes the MSE loss by y_train.size: dynamics exp(-Θ t / y.size).
  decay = np.zeros_like(w) if t is None else np.exp(-w * t / y_train.size)
  # T_t = Θ⁻¹ (I − e^{−Θt})
  tt = v @ np.diag((1.0 - decay) / w) @ v.T
  mean_ref = ktt["ntk"] @ tt @ np.asarray(y_train)
  a = ktt["ntk"] @ tt
  cov_ref = kss + a @ kxx @ a.T - (a @ ktt["nngp"].T + ktt["nngp"] @ a.T)
  np.testing.assert_allclose(mean, mean_ref, rtol=1e-6, atol=1e-8)
  np.testing.assert_allclose(cov, cov_ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("implementation", [1, 2, 3])
def test_empirical_ntk_stax(implementation, key, x64):
  init_fn, apply_fn, _ = stax.serial(stax.Dense(32), stax.Relu(), stax.Dense(2))
  x1 = jax.random.normal(key, (4, 3))
  x2 = jax.random.normal(jax.random.fold_in(key, 1), (3, 3))
  _, params = init_fn(jax.random.fold_in(key, 2), x1.shape)
  ref = nt.empirical_ntk_fn(apply_fn, trace_axes=(), implementation=1)(x1, x2, params)
  got = nt.empirical_ntk_fn(apply_fn, trace_axes=(), implementation=implementation)(x1, x2, params)
  assert got.shape == (4, 3, 2, 2)
  np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
  # Oracle independent of neural-tangents: explicit Jacobian contraction.
  jac = lambda x: jax.jacobian(apply_fn)(params, x)
  j1, j2 = jac(x1), jac(x2)
  dense = sum(jnp.einsum("iaXY,jbXY->ijab", a.reshape(a.shape[:2] + (-1, 1)), b.reshape(b.shape[:2] + (-1, 1)))
              for a, b in zip(jax.tree.leaves(j1), jax.tree.leaves(j2)))
  np.testing.assert_allclose(got, dense, rtol=1e-10, atol=1e-12)


class _Tiny(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Conv(8, (3, 3))(x)
    x = nn.relu(x).reshape(x.shape[0], -1)
    return nn.Dense(2)(x)


@pytest.mark.parametrize("implementation", [1, 2, 3])
def test_empirical_ntk_flax_linen(implementation, key, x64):
  model = _Tiny()
  x1 = jax.random.normal(key, (3, 6, 6, 1))
  x2 = jax.random.normal(jax.random.fold_in(key, 1), (2, 6, 6, 1))
  params = jax.tree.map(lambda p: p.astype(jnp.float64), model.init(key, x1))
  ref = nt.empirical_ntk_fn(model.apply, implementation=1)(x1, x2, params)
  got = nt.empirical_ntk_fn(model.apply, implementation=implementation)(x1, x2, params)
  np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)
  jitted = jax.jit(nt.empirical_ntk_fn(model.apply, implementation=implementation))(x1, x2, params)
  np.testing.assert_allclose(jitted, ref, rtol=1e-10, atol=1e-10)


def test_tf_module_fails_clearly():
  mod = importlib.import_module("neural_tangents.experimental.empirical_tf.empirical")
  with pytest.raises(ImportError, match="TensorFlow"):
    mod.empirical_ntk_fn_tf(None)


def test_compat_is_noop_on_present_names():
  # Re-installing patches nothing more, and a name JAX still has keeps its own object.
  assert _nt_compat.install() == []
  import jax.interpreters.ad as ad
  assert ad.linearize is not _nt_compat._legacy_linearize  # JAX's own linearize is left untouched
  assert jax.core.ShapedArray.__module__.startswith("jax")
  assert "jax.core.ShapedArray" not in _nt_compat.PATCHED
  assert sys.modules["jax.util"].safe_map is jax._src.util.safe_map
