"""ArchSpec: the Flax view equals the stax view, zero-mean init, and the finite NTK converges to stax's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax.linen as nn

from ntk.architectures import ArchSpec, NTKDense, empirical_ntk_relerr, stax_params_to_flax

SPECS = [
    ArchSpec(kind="mlp", width=32, depth=2, out_dim=2),
    ArchSpec(kind="mlp", width=32, depth=1, out_dim=1, activation="erf", b_std=0.3),
    ArchSpec(kind="mlp", width=32, depth=3, out_dim=3, activation="gelu", b_std=0.1, parameterization="standard"),
    ArchSpec(kind="cnn", width=6, depth=2, out_dim=3, b_std=0.2, padding="CIRCULAR"),
    ArchSpec(kind="cnn", width=6, depth=1, out_dim=2, readout="gap", activation="erf", kernel_size=5),
    ArchSpec(kind="cnn", width=6, depth=2, out_dim=1, padding="VALID", parameterization="standard", b_std=0.5),
    ArchSpec(kind="cnn", width=6, depth=2, out_dim=2, pool=2, b_std=0.1),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.kind}-{s.activation}-{s.parameterization}-{s.padding}")
def test_flax_equals_stax_on_identical_params(spec, keys, x64):
  init_fn, apply_fn, _ = spec.stax()
  side = 8 if spec.pool > 1 else 7  # pooled twice: sides divisible by 4
  x = jax.random.normal(next(keys), (5, side, side, 1), jnp.float64)
  _, stax_params = init_fn(next(keys), x.shape)
  model = spec.flax()
  params = stax_params_to_flax(spec, stax_params)
  # Same tree (names, shapes) as the module's own init.
  ref = model.init(next(keys), x)["params"]
  assert jax.tree.map(jnp.shape, ref) == jax.tree.map(jnp.shape, params)
  np.testing.assert_allclose(model.apply({"params": params}, x), apply_fn(stax_params, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("change, match", [
    (dict(pool=0), "pool"),
    (dict(kind="rnn"), "kind"), (dict(activation="tanh"), "activation"), (dict(width=0), "width"),
    (dict(depth=1.5), "depth"), (dict(readout="max"), "readout"), (dict(parameterization="mup"), "parameterization"),
    (dict(W_std=-1.0), "W_std"), (dict(b_std=-0.1), "b_std"), (dict(padding="same"), "padding"),
])
def test_spec_validation(change, match):
  with pytest.raises(ValueError, match=match):
    ArchSpec(**change)


def test_cnn_rejects_non_nhwc_input(key):
  model = ArchSpec(kind="cnn", width=4, depth=1).flax()
  with pytest.raises(ValueError, match="NHWC"):
    model.init(key, jnp.ones((2, 8, 8)))


@pytest.mark.parametrize("spec", [ArchSpec(kind="mlp", width=64, depth=2, b_std=0.5),
                                  ArchSpec(kind="cnn", width=8, depth=1, b_std=0.5, parameterization="standard")],
                         ids=["mlp-ntk", "cnn-standard"])
def test_zero_mean_init_and_nngp_variance(spec, keys):
  """Over initializations, f_0(x) has mean 0 (zero-mean init) and variance ~ the NNGP K(x, x)."""
  x = jax.random.normal(next(keys), (3, 6, 6, 1))
  model = spec.flax()
  n = 2000
  outs = jax.vmap(lambda k: model.apply(model.init(k, x), x))(jax.random.split(next(keys), n))[..., 0]  # (n, 3)
  nngp = np.diag(spec.stax()[2](x, None, "nngp"))
  mean, var = np.asarray(outs.mean(0)), np.asarray(outs.var(0))
  assert np.all(np.abs(mean) < 5 * np.sqrt(nngp / n)), (mean, nngp)
  # Finite width perturbs the variance at O(1/width); the Monte-Carlo error is ~ sqrt(2/n) ~ 3 %.
  np.testing.assert_allclose(var, nngp, rtol=0.15)


def test_empirical_ntk_converges_to_analytic(key):
  """The issue's criterion: error decreasing with width, <= 5 % at width 2048 (MLP, mean over 3 seeds)."""
  x = jax.random.normal(jax.random.fold_in(key, 1), (8, 16))
  errs = {w: empirical_ntk_relerr(ArchSpec(kind="mlp", width=w, depth=2), x, key, n_seeds=3) for w in (128, 2048)}
  assert errs[2048] < errs[128]
  assert errs[2048] <= 0.05, errs


def test_empirical_cnn_ntk_close_to_analytic(key):
  spec = ArchSpec(kind="cnn", width=256, depth=1, padding="CIRCULAR")
  x = jax.random.normal(jax.random.fold_in(key, 1), (4, 5, 5, 1))
  assert empirical_ntk_relerr(spec, x, key, n_seeds=3) <= 0.1


class _OwnMLP(nn.Module):
  """A user's own module: Erf MLP from NTKDense layers (``readout_W_std`` lets a test break the match)."""
  width: int
  readout_W_std: float = 1.5

  @nn.compact
  def __call__(self, x):
    h = jax.scipy.special.erf(NTKDense(self.width, W_std=1.5, b_std=0.1, name="hidden")(x.reshape(x.shape[0], -1)))
    return NTKDense(2, W_std=self.readout_W_std, name="readout")(h)


def test_empirical_ntk_relerr_takes_any_module_or_apply_fn(key):
  from neural_tangents import stax
  kernel_fn = stax.serial(stax.Flatten(), stax.Dense(512, W_std=1.5, b_std=0.1), stax.Erf(),
                          stax.Dense(2, W_std=1.5))[2]
  x = jax.random.normal(jax.random.fold_in(key, 1), (6, 5))
  module = _OwnMLP(1024)
  err = empirical_ntk_relerr(module, x, key, n_seeds=2, kernel_fn=kernel_fn)
  assert err <= 0.1, err
  # The same network as a plain apply function with its init: the same number.
  apply_fn = lambda p, v: module.apply({"params": p}, v)
  init_fn = lambda k: module.init(k, x)["params"]
  assert empirical_ntk_relerr(apply_fn, x, key, n_seeds=2, kernel_fn=kernel_fn, init_fn=init_fn) == pytest.approx(err)
  # A readout scale that differs from the kernel's is detected (the error does not fall with width).
  assert empirical_ntk_relerr(_OwnMLP(1024, readout_W_std=3.0), x, key, n_seeds=2, kernel_fn=kernel_fn) > 0.5
  with pytest.raises(ValueError, match="kernel_fn="):
    empirical_ntk_relerr(module, x, key)
  with pytest.raises(ValueError, match="init_fn="):
    empirical_ntk_relerr(apply_fn, x, key, kernel_fn=kernel_fn)
