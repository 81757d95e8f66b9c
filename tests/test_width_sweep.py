"""experiments.width_sweep and the read-in networks behind it.

Exact claims (float64): mu_t is invariant for the rot90-symmetric support, for the asymmetric support under
circular padding, and for the linear read-in under exact 45-degree rotations, and not for the zero-padded
asymmetric support; GD on the full orbit maps the member with read-in ``W0`` onto the member with ``R^T W0``
(a Python loop of GD steps, both members), a map that keeps the normal law (same density) and leaves the
uniform law's support. Statistical claim: a sparse (high-kurtosis) linear read-in makes the narrow ensemble
measurably non-invariant while the Gaussian control stays at the estimator's noise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import width_sweep
from ntk import groups, kernels, metrics
from ntk.architectures import ReadInSpec
from tests.test_paper_experiments import _cfg, _pngs, _run


@pytest.mark.slow
def test_width_sweep_tiny(tmp_path):
  m = _run(width_sweep, "width_sweep", tmp_path, settings=("asym", "asym_circ", "readin_sparse", "relu_sparse"),
           seeds=(0, 1), n_train=2, n_test=3, widths=(4,), n_members=8, sub_ensemble=4, steps=2,
           readin_n_train=3, readin_n_test=4, readin_widths=(8,), readin_members=8, readin_steps=2)
  for name in ("asym", "readin_sparse", "relu_sparse"):
    for key in ("inv_err_wmin", "inv_err_wmax", "inv_err_wmax_std", "inv_err_wmin_seed1", "naive_inv_err_w4"
                if name == "asym" else "member_inv_err_w8"):
      assert np.isfinite(m[f"{name}_{key}"]), (name, key)
  assert m["asym_circ_mu_inv_err"] < 1e-6  # circular padding: symmetric init and invariant NTK
  assert m["mu_inv_err"] > 1e-3           # zero-padded asymmetric support: neither
  assert m["readin_mu_inv_err"] < 1e-6    # linear read-in: the NTK sees x only through x.x'
  assert "relu_sparse_ens_vs_mu_w8" not in m  # no analytic limit for a non-Gaussian non-linear read-in
  assert _pngs(tmp_path) == ["width_sweep.png"]


def test_width_sweep_bad_settings(tmp_path):
  with pytest.raises(ValueError, match="unknown settings"):
    width_sweep.run(_cfg(width_sweep, settings=("sym", "hexagonal")), str(tmp_path))
  with pytest.raises(ValueError, match="multiple of sub_ensemble"):
    width_sweep.run(_cfg(width_sweep, n_members=20, sub_ensemble=16), str(tmp_path))
  with pytest.raises(ValueError, match="readin_members"):
    width_sweep.run(_cfg(width_sweep, readin_members=24, sub_ensemble=16), str(tmp_path))


def test_readin_spec_refuses():
  with pytest.raises(ValueError, match="readin_law"):
    ReadInSpec(readin_law="laplace")
  with pytest.raises(ValueError, match="no stax kernel"):
    ReadInSpec(readin_law="uniform", linear_readin=False).stax()


def _orbit_problem(n=4, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, 2))
  group = groups.rotations_2d_points(8)
  x_aug, y_aug = groups.augment_full_orbit(group, x, np.cos(2 * np.linalg.norm(x, axis=1, keepdims=True)))
  return group, np.asarray(x_aug), np.asarray(y_aug), rng.standard_normal((5, 2))


def test_readin_mu_exactly_invariant(x64):
  group, x_aug, y_aug, x_te = _orbit_problem()
  kernel_fn = ReadInSpec(out_dim=1).stax()[2]
  lr = kernels.stable_lr(kernel_fn, x_aug, 1)
  mu = kernels.infinite_ensemble_predict(kernel_fn, x_aug, y_aug, np.asarray(group.orbit(x_te)).reshape(-1, 2),
                                         lr * 50, learning_rate=lr).mean[0]
  # 1e-7, not 1e-15: the orbit holds antipodal pairs (cos = -1), where the ReLU arc-cosine kernel keeps only
  # half of float64's digits; a non-invariant kernel is off by ~1e-2 here.
  assert metrics.rms_invariance_error(mu.reshape(8, 5, 1), group, 1.0) < 1e-7
  # the non-linear read-in's Gaussian kernel is invariant too: it is the non-Gaussian law that is not
  ntk_fn = ReadInSpec(out_dim=1, linear_readin=False).stax()[2]
  r = group.matrix_x(1)
  np.testing.assert_allclose(ntk_fn(x_te @ r.T, x_aug @ r.T, "ntk"), ntk_fn(x_te, x_aug, "ntk"), atol=1e-7)


def test_gd_maps_readin_member_onto_rotated_member(x64):
  """Member (W0, rest) trained on the full orbit, evaluated at R x, equals member (R^T W0, rest) at x, at every
  step (Python loop of full-batch GD steps on both). The normal law gives both inits the same density, so the
  infinite Gaussian ensemble is exactly invariant at this width; the uniform law's support does not contain
  R^T W0 (45 degrees), so the uniform ensemble need not be."""
  group, x_aug, y_aug, x_te = _orbit_problem()
  r = group.matrix_x(1)  # 45 degrees; rho(g) x = x @ r.T on row vectors
  model = ReadInSpec(width=6, out_dim=1).flax()
  params = jax.tree.map(lambda a: a.astype(jnp.float64), model.init(jax.random.PRNGKey(3), x_aug)["params"])
  rotated = jax.tree.map(lambda a: a, params)
  rotated["ReadIn"] = {"kernel": r.T @ params["ReadIn"]["kernel"]}
  loss = lambda p: 0.5 * jnp.mean((model.apply({"params": p}, x_aug) - y_aug) ** 2)
  step = jax.jit(lambda p: jax.tree.map(lambda a, g: a - 0.5 * g, p, jax.grad(loss)(p)))
  for _ in range(20):
    params, rotated = step(params), step(rotated)
  np.testing.assert_allclose(model.apply({"params": params}, x_te @ r.T), model.apply({"params": rotated}, x_te),
                             rtol=1e-10, atol=1e-12)
  w0 = np.asarray(model.init(jax.random.PRNGKey(3), x_aug)["params"]["ReadIn"]["kernel"], np.float64)
  assert np.isclose(np.sum((r.T @ w0) ** 2), np.sum(w0 ** 2))  # same normal density
  uniform = ReadInSpec(width=64, out_dim=1, readin_law="uniform").flax()
  w0u = np.asarray(uniform.init(jax.random.PRNGKey(3), x_aug)["params"]["ReadIn"]["kernel"], np.float64)
  assert np.abs(w0u).max() <= np.sqrt(3) and np.abs(r.T @ w0u).max() > np.sqrt(3)  # leaves the support


def test_sparse_readin_ensemble_measurably_not_invariant():
  """Width 8, M = 512: the sparse read-in's M -> inf invariance error stands above the Gaussian control's."""
  c = width_sweep.get_config(quick=True)
  c.readin_widths, c.readin_members, c.readin_steps = (8,), 512, 100
  err = {name: width_sweep._one_seed(c, name, 0, 0)["inv_err_w8"] for name in ("readin_gauss", "readin_sparse")}
  assert err["readin_sparse"] > 0.01 and err["readin_sparse"] > 2 * err["readin_gauss"], err


@pytest.mark.parametrize("law, kurtosis", [("normal", 0.0), ("uniform", -1.2), ("sparse", 13.0)])
def test_readin_laws_unit_variance(law, kurtosis):
  model = ReadInSpec(width=4000, out_dim=1, readin_law=law).flax()
  w = np.asarray(model.init(jax.random.PRNGKey(0), np.zeros((1, 50), np.float32))["params"]["ReadIn"]["kernel"], np.float64)
  assert abs(w.mean()) < 0.01 and abs(w.var() - 1) < 0.02
  assert abs(np.mean(w ** 4) / w.var() ** 2 - 3 - kurtosis) < 0.1 * (1 + abs(kurtosis))
