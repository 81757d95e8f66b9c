"""ntk.blockcirc: the FFT-over-the-group solve equals the dense solve on augmented data (float64, <= 1e-8)."""

import warnings

import numpy as np
import pytest

import ntk  # noqa: F401  (compat layer before neural_tangents)
from neural_tangents import stax

from ntk import blockcirc as B
from ntk import groups as G

TS = np.array([0.0, 1.0, 10.0, 100.0, np.inf])


def _mlp(out=3, act=stax.Erf):
  return stax.serial(stax.Flatten(), stax.Dense(32, W_std=1.5, b_std=0.1), act(),
                     stax.Dense(32, W_std=1.5, b_std=0.1), act(), stax.Dense(out, W_std=1.5, b_std=0.1))[2]


CASES = {
    "shifts_z6": lambda: G.cyclic_shifts_1d(6),
    "c4_images": lambda: G.rotations_c4((4, 4)),
    "translations_z3xz3": lambda: G.ising_lattice_group(3, rotations=False, translations=True),
    "c4_x_spinflip": lambda: G.product_group(G.ising_lattice_group(3), G.spin_flip((3, 3))),
    "c5_points_equivariant": lambda: G.rotations_2d_points(5, equivariant_outputs=True),
}


def _data(group, n=5, n_test=4, seed=0):
  rng = np.random.default_rng(seed)
  out = 2 if group.output_shape else 3
  return (rng.normal(size=(n,) + group.input_shape), rng.normal(size=(n, out)),
          rng.normal(size=(n_test,) + group.input_shape), out)


@pytest.mark.parametrize("case,get,cov", [(c, "ntk", "diag") for c in sorted(CASES)] + [
    ("c4_x_spinflip", "ntk", "full"), ("c5_points_equivariant", "ntk", "full"),
    ("c4_images", "nngp", "full"), ("translations_z3xz3", "nngp", "diag")])
def test_blockcirc_matches_dense(case, get, cov):
  group = CASES[case]()
  x, y, xt, out = _data(group)
  kernel_fn = _mlp(out)
  fast = B.augmented_ensemble_predict(kernel_fn, group, x, y, xt, TS, get=get, diag_reg=1e-4, compute_cov=cov,
                                      method="blockcirc")
  dense = B.augmented_ensemble_predict(kernel_fn, group, x, y, xt, TS, get=get, diag_reg=1e-4, compute_cov=cov,
                                       method="dense")
  assert fast.method == "blockcirc" and dense.method == "dense"
  assert fast.mean.shape == (len(TS), 4, out)
  np.testing.assert_allclose(fast.mean, dense.mean, rtol=0, atol=1e-8)
  np.testing.assert_allclose(fast.var if cov == "diag" else fast.cov, dense.var if cov == "diag" else dense.cov,
                             rtol=0, atol=1e-8)
  assert np.max(np.abs(dense.mean[-1])) > 0.1   # the comparison is not between zeros


def test_orbit_kernel_blocks_are_the_augmented_kernel():
  """Block (a, b) of the (|G|n)^2 augmented kernel is C[b - a] (the structure the FFT relies on)."""
  from ntk import kernels as K  # pylint: disable=g-import-not-at-top
  group = G.ising_lattice_group(3, rotations=False, translations=True)
  x, y, _, _ = _data(group, n=3)
  kernel_fn = _mlp()
  c = B.orbit_kernel_blocks(kernel_fn, group, x, "ntk")["ntk"]
  x_aug, _ = G.augment_full_orbit(group, x, y)
  full = K.kernel_matrices(kernel_fn, x_aug, None, "ntk")["ntk"].reshape(9, 3, 9, 3)
  for a in range(9):
    for b in range(9):
      np.testing.assert_allclose(full[a, :, b], c[group.compose(group.inverse(a), b)], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("group_fn,reason", [
    (lambda: G.rotations_ck(8, (5, 5)), "not an exact"),
    (lambda: G.dihedral_d4((4, 4)), "not a product of cyclic"),
])
def test_falls_back_to_dense_and_says_why(group_fn, reason):
  group = group_fn()
  x, y, xt, _ = _data(group, n=3, n_test=2)
  kernel_fn = _mlp()
  with pytest.warns(UserWarning, match="falling back"):
    pred = B.augmented_ensemble_predict(kernel_fn, group, x, y, xt, TS, diag_reg=1e-4)
  assert pred.method == "dense" and reason in pred.note
  with pytest.raises(ValueError, match=reason):
    B.augmented_ensemble_predict(kernel_fn, group, x, y, xt, TS, diag_reg=1e-4, method="blockcirc")


def test_non_invariant_kernel_is_detected():
  """A kernel that is not G-invariant (inputs scaled per coordinate) must not use the circulant solve."""
  group = G.cyclic_shifts_1d(4)
  x, y, xt, _ = _data(group, n=3, n_test=2)
  _, _, kf = stax.serial(stax.Dense(16, W_std=1.5), stax.Erf(), stax.Dense(3))
  scale = np.array([[1.0, 2.0, 3.0, 4.0]])
  skewed = lambda x1, x2=None, get=None, **kw: kf(x1 * scale, None if x2 is None else x2 * scale, get, **kw)
  assert B.invariance_defect(skewed, group, x) > 1e-3
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    pred = B.augmented_ensemble_predict(skewed, group, x, y, xt, TS, diag_reg=1e-4)
  assert pred.method == "dense" and "not Z4 (cyclic shifts)-invariant" in pred.note


def test_relu_ntk_agrees_to_its_kernel_round_off():
  """ReLU's NTK has sqrt(eps) noise on coincident inputs (arccos near 1); fast vs dense still agree to ~1e-7."""
  group = G.rotations_c4((4, 4))
  x, y, xt, _ = _data(group)
  kernel_fn = _mlp(act=stax.Relu)
  fast = B.augmented_ensemble_predict(kernel_fn, group, x, y, xt, TS, diag_reg=1e-3, method="blockcirc")
  dense = B.augmented_ensemble_predict(kernel_fn, group, x, y, xt, TS, diag_reg=1e-3, method="dense")
  np.testing.assert_allclose(fast.mean, dense.mean, rtol=0, atol=1e-6)


def test_benchmark_smoke(tmp_path):
  """benchmarks.augmented_kernel at tiny sizes: writes its metrics and fast == dense."""
  import json, os  # pylint: disable=g-import-not-at-top,multiple-imports
  from benchmarks import augmented_kernel
  from infra import cli
  sets = ["n_compare=8", "n_large=12", "n_test=5", "batch_size=16"]
  cli.main(augmented_kernel.get_config, augmented_kernel.run, name="augmented_kernel",
           argv=["--quick", "--workdir", str(tmp_path)] + [a for s in sets for a in ("--set", s)])
  with open(os.path.join(tmp_path, "metrics.json")) as f:
    m = json.load(f)
  assert m["maxabs_fast_vs_dense_n128"] <= 1e-8
  assert m["speedup_vs_dense_n128"] > 0 and m["fast_seconds_c16_n12"] > 0 and m["finite_c16_n12"] == 1


@pytest.mark.parametrize("get", ["ntk", "nngp"])
def test_blockcirc_discrete_time_matches_dense(get):
  group = CASES["c4_images"]()
  x, y, xt, out = _data(group)
  kernel_fn = _mlp(out)
  lr = 0.7
  ts = lr * np.array([0.0, 1.0, 3.0, 50.0, np.inf])
  kw = dict(get=get, diag_reg=1e-4, compute_cov="full", learning_rate=lr)
  fast = B.augmented_ensemble_predict(kernel_fn, group, x, y, xt, ts, method="blockcirc", **kw)
  dense = B.augmented_ensemble_predict(kernel_fn, group, x, y, xt, ts, method="dense", **kw)
  cont = B.augmented_ensemble_predict(kernel_fn, group, x, y, xt, ts, method="dense", get=get, diag_reg=1e-4)
  np.testing.assert_allclose(fast.mean, dense.mean, atol=1e-8)
  np.testing.assert_allclose(fast.cov, dense.cov, atol=1e-8)
  assert np.abs(dense.mean[1] - cont.mean[1]).max() > 1e-6  # discrete differs from gradient flow at step 1
