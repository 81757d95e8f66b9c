"""Smoke tests of the paper's experiments (experiments/{toy2d, ising, cross_product, continuous_rotations,
rotated_digits, histology}.py) at tiny ``--set`` sizes: they run end to end through ``cli.main``, write
metrics/figures/summary, and their exact claims hold (mu_t invariance, G-CNN/canonicalization OSP = |G|).
The statistical claims at realistic sizes are checked by the slow quick-mode tests at the end."""

import json
import os

import numpy as np
import pytest

from experiments import (continuous_rotations, cross_product, histology, ising, rotated_digits,
                         toy2d)
from infra import cli
from ntk import groups


def _run(module, name, workdir, quick=True, variant=None, **overrides):
  argv = ["--workdir", str(workdir)] + (["--quick"] if quick else []) + (["--variant", variant] if variant else [])
  for k, v in overrides.items():
    argv += ["--set", f"{k}={v!r}" if not isinstance(v, str) else f"{k}={v}"]
  metrics = cli.main(module.get_config, module.run, name=name, argv=argv,
                     variants=getattr(module, "VARIANTS", (cli.DEFAULT_VARIANT,)))
  with open(os.path.join(workdir, "metrics.json")) as f:
    assert json.load(f) == pytest.approx(metrics, nan_ok=True)
  assert os.path.exists(os.path.join(workdir, "summary.md"))
  return metrics


def _pngs(workdir):
  return sorted(f for f in os.listdir(workdir) if f.endswith(".png"))


def test_toy2d_tiny(tmp_path):
  m = _run(toy2d, "toy2d", tmp_path, n_points=4, width=64, n_members=16, grid=11, n_far=8,
           steps=(0, 1, 2, 3, 2000))
  for key in ("inv_err_member_step2000", "inv_err_ensemble_step2000", "inv_err_mu_step2000"):
    assert np.isfinite(m[key])
  assert m["inv_err_mu_step2000"] < 1e-10 and m["inv_err_mu_step0"] == 0.0
  assert m["inv_err_ensemble_step2000"] < m["inv_err_member_step2000"]
  assert _pngs(tmp_path) == ["toy2d_grid.png", "toy2d_invariance_vs_step.png"]


def test_ising_tiny(tmp_path):
  m = _run(ising, "ising", tmp_path, L=3, n_train=16, n_test=16, n_ood=16, burn_in=30, n_members=4,
           steps=(0, 3, 10))
  for key in ("inv_err_ood_ntk", "inv_err_ood_w512", "inv_err_ood_w1024", "inv_err_ood_w2048", "test_rmse_ensemble"):
    assert np.isfinite(m[key]), key
  assert m["inv_err_ood_ntk"] < 1e-10 and m["inv_err_test_ntk"] < 1e-10
  assert m["inv_err_ood_w512"] < m["inv_err_ood_member_w512"]
  assert _pngs(tmp_path) == ["ising_invariance_vs_time.png"]


def test_cross_product_tiny(tmp_path):
  m = _run(cross_product, "cross_product", tmp_path, n_train=4, n_test=8, n_rotations=4, width=64, n_members=8,
           steps=(0, 10, 100))
  assert m["equiv_err_ensemble"] < m["equiv_err_member"] and m["equiv_err_ensemble_ood"] < m["equiv_err_member_ood"]
  assert m["equiv_err_cube_mu"] < 1e-10 and m["equiv_err_cube_mu_ood"] < 1e-10
  assert m["equiv_err_mu"] > 1e-6  # the cube group is not SO(3): Haar rotations are only approximately respected


def test_continuous_rotations_tiny(tmp_path):
  m = _run(continuous_rotations, "continuous_rotations", tmp_path, n_points=4, n_eval=8, n_angles=16, width=64,
           n_members=8, steps=50, n_datasets=1)
  assert all(np.isfinite(m[f"inv_err_so2_k{k}"]) for k in (2, 4, 8, 16))
  assert m["inv_err_so2_k16"] < m["inv_err_so2_k2"]
  # mu_t is exact on its own subgroup, up to the float32 rounding of the rotated evaluation points
  # (rotations by multiples of 45 degrees are not exact in floating point): ~1e-8.
  assert max(m[f"inv_err_ck_mu_k{k}"] for k in (2, 4, 8, 16)) < 1e-6
  assert m["inv_err_so2_k16"] < 1e-6  # C16 is the whole probe when n_angles = 16


def _write_tiny_fashion(folder, n_train=60, n_test=30):
  """The four IDX files (random images) in the published format."""
  import struct
  rng = np.random.default_rng(0)
  for prefix, n in (("train", n_train), ("t10k", n_test)):
    for kind, arr in (("images-idx3", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                      ("labels-idx1", rng.integers(0, 10, n, dtype=np.uint8))):
      head = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
      (folder / f"{prefix}-{kind}-ubyte").write_bytes(head + arr.tobytes())


@pytest.mark.slow
def test_rotated_digits_tiny_on_local_fashion_mnist(tmp_path):
  data = tmp_path / "fashion"
  data.mkdir()
  _write_tiny_fashion(data)
  m = _run(rotated_digits, "rotated_digits", tmp_path / "run", dataset="fashion_mnist", data_dir=str(data),
           n_train=60, n_test=30, n_ood=10, n_so2=5, so2_angles=8, n_runs=2, cnn_width=4, n_members=3, steps=2,
           baseline_steps=3, lr_schedule="cosine", batch_size=30, steer_channels=(4, 4, 8), canon_scorer_channels=4)
  for method in ("ens", "single", "steerable", "canon"):
    assert f"test_accuracy_{method}_c4" in m and 1.0 <= m[f"osp_ood_{method}_c4_mean"] <= 4.0
    assert 0.0 <= m[f"ood_pred_entropy_{method}_c4"] <= np.log2(10) + 1e-9
    assert 1.0 <= m[f"so2_osp64_{method}_c4_mean"] <= 8.0
  # Exactly C4-invariant models, on every set and every run (so the spread over runs is 0).
  for method in ("steerable", "canon"):
    for s in ("test", "ood", "ood_photos"):
      assert m[f"osp_{s}_{method}_c4_mean"] == 4.0 and m[f"osp_{s}_{method}_c4_std"] == 0.0, (method, s)
  with open(tmp_path / "run" / "summary.md") as f:
    text = f.read()
  assert "fashion_mnist" in text and "DeepEns+DA" in text and "steerable" in text and "over 2 runs" in text


@pytest.mark.slow
def test_rotated_digits_paper_variant_runs_its_own_code_path(tmp_path):
  """The accelerator-sized variant, shrunk in data and steps only: its paper-sized members (no pooling, ~126k
  parameters each) train vmapped and every method is scored."""
  import jax  # pylint: disable=g-import-not-at-top
  c = rotated_digits.get_config(False, "paper")
  assert (c.cnn_pool, c.member_axis, c.cnn_width, c.n_members) == (1, "vmap", 16, 100)
  shape = (28, 28, 1)
  member = rotated_digits._models(c, 4, groups.rotations_ck(4, shape), shape)["ens"][0]
  params = member.init(jax.random.PRNGKey(0), np.zeros((1, *shape), np.float32))
  assert 110_000 < sum(p.size for p in jax.tree_util.tree_leaves(params)) < 140_000
  m = _run(rotated_digits, "rotated_digits", tmp_path, quick=False, variant="paper", ks=(4,), n_runs=1,
           n_train=40, n_test=20, n_ood=10, n_so2=4, so2_angles=8, n_members=2, steps=2, batch_size=20,
           steer_channels=(4, 4, 8), canon_scorer_channels=4, baseline_members=1)
  for method in rotated_digits.METHODS:
    assert 0.0 <= m[f"test_accuracy_{method}_c4"] <= 1.0 and 1.0 <= m[f"osp_ood_{method}_c4_mean"] <= 4.0


def test_rotated_digits_bad_dataset(tmp_path, monkeypatch):
  monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
  with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
    rotated_digits.run(_cfg(rotated_digits, dataset="cifar"), str(tmp_path))
  with pytest.raises(FileNotFoundError, match="data_dir=/path or set"):
    rotated_digits.run(_cfg(rotated_digits, dataset="fashion_mnist"), str(tmp_path))
  with pytest.raises(FileNotFoundError, match="not a directory"):
    rotated_digits.run(_cfg(rotated_digits, dataset="fashion_mnist", data_dir=str(tmp_path / "nope")),
                       str(tmp_path))
  with pytest.raises(ValueError, match="lr_schedule='step': use 'constant' or 'cosine'"):
    rotated_digits.run(_cfg(rotated_digits, lr_schedule="step"), str(tmp_path))
  with pytest.raises(ValueError, match="baseline_steps=-1 >= 0"):
    rotated_digits.run(_cfg(rotated_digits, baseline_steps=-1), str(tmp_path))
  with pytest.raises(ValueError, match="unknown variant"):
    rotated_digits.get_config(False, "huge")
  assert rotated_digits.get_config(False, "paper").n_members >= 100
  with pytest.raises(ValueError, match="out of the 28x28 frame"):
    rotated_digits.shrink_and_shift(np.zeros((1, 28, 28), np.float32), 0.9, 4)


@pytest.mark.slow
def test_histology_tiny_on_nct_crc_folders(tmp_path):
  import tifffile
  rng = np.random.default_rng(0)
  for c, name in enumerate(("ADI", "LYM", "TUM")):
    os.makedirs(tmp_path / "nct" / name)
    for i in range(8):
      tile = np.clip(rng.normal(60 + 60 * c, 30, (48, 48, 3)), 0, 255).astype(np.uint8)
      tifffile.imwrite(str(tmp_path / "nct" / name / f"{name}-{i}.tif"), tile)
  m = _run(histology, "histology", tmp_path / "run", source="nct_crc", data_path=str(tmp_path / "nct"), size=16,
           n_train=16, n_test=8, n_ood=8, cnn_width=4, n_members=3, epochs=1, batch_size=16)
  assert m["n_classes"] == 3
  for g in ("c4", "d4"):
    for key in (f"osp_ens_{g}", f"osp_single_{g}", f"test_accuracy_{g}", f"osp_ens_{g}_ood_tissue",
                f"osp_ens_{g}_ood_noise", f"osp_ens_{g}_ood_photos"):
      assert np.isfinite(m[key]), key
  assert 1 <= m["osp_single_d4"] <= 8


@pytest.mark.slow
def test_histology_quick_mode_on_real_images_learns(tmp_path):
  m = _run(histology, "histology", tmp_path)
  assert m["n_classes"] == 6
  # "Learns": six binomial standard errors above chance on the quick mode's test tiles. A bar close to one
  # host's quick C4 accuracy is fragile: the same code and seed land at different accuracies on different hosts.
  chance, n_test = 1 / 6, histology.get_config(quick=True).n_test
  bar = chance + 6 * np.sqrt(chance * (1 - chance) / n_test)
  for g in ("c4", "d4"):
    assert m[f"test_accuracy_{g}"] >= bar, (g, m[f"test_accuracy_{g}"], bar)
    order = 4 if g == "c4" else 8
    assert all(1 <= m[f"osp_{who}_{g}{s}"] <= order for who in ("ens", "single") for s in ("", "_ood_tissue"))
  # The ensemble-vs-member OSP gap is within run-to-run noise at this size (C4: 3.80 vs 3.60 from the command
  # line, 3.52 vs 3.53 under the test configuration); the full mode reports it.


def test_histology_needs_a_path_for_real_data_and_a_known_source(tmp_path):
  with pytest.raises(ValueError, match="data_path"):
    histology.run(_cfg(histology, source="pathmnist"), str(tmp_path))
  with pytest.raises(ValueError, match=r"source='nct' is not one of \('skimage', 'textures', 'nct_crc', 'pathmnist'\)"):
    histology.run(_cfg(histology, source="nct"), str(tmp_path))


def _cfg(module, **overrides):
  c = module.get_config(True)
  for k, v in overrides.items():
    c[k] = v
  return c


@pytest.mark.slow
def test_rotated_digits_quick_mode_claims(tmp_path, monkeypatch):
  monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
  m = _run(rotated_digits, "rotated_digits", tmp_path)
  assert m["osp_ood_steerable_c4_mean"] == 4.0 and m["osp_ood_canon_c4_mean"] == 4.0
  assert m["osp_ood_ens_c4_mean"] >= m["osp_ood_single_c4_mean"]
  assert m["ood_pred_entropy_ens_c4"] > 1.0  # the OOD set does not collapse onto one class
  assert m["test_accuracy_ens_c4"] > 0.6


@pytest.mark.slow
def test_toy2d_quick_mode_claims(tmp_path):
  m = _run(toy2d, "toy2d", tmp_path)
  assert m["inv_err_mu_step2000"] < 1e-10
  assert m["inv_err_ensemble_step2000"] < m["inv_err_member_step2000"] / 3
