"""Smoke tests of the HEAL-SWIN experiments: tiny ``--set`` versions of ``--quick`` (metric keys, figures,
resumable workdir). The quick modes themselves (which must reach loss_last < 0.7 loss_first) are run by hand;
their numbers are in the experiment docstrings."""

import json
import math
import os

import pytest

from experiments import healswin_depth, healswin_segmentation, spherical_mnist
from infra import cli

TINY_DENSE = ["--set", "num_steps=8", "--set", "checkpoint_every=4", "--set", "data.num_train=8", "--set",
              "data.num_test=2", "--set", "data.nside=8", "--set", "data.image_width=32", "--set",
              "data.image_height=24", "--set", "model.embed_dim=8", "--set", "model.depths=(1, 1)", "--set",
              "model.num_heads=(1, 2)", "--set", "model.mlp_ratio=1.0", "--set", "progress=False",
              "--set", "eval_batch_size=2"]


def _run(module, name, workdir, extra=()):
  metrics = cli.main(module.get_config, module.run, name=name,
                     argv=["--quick", "--workdir", str(workdir), *TINY_DENSE, *extra])
  with open(os.path.join(workdir, "metrics.json")) as f:
    assert json.load(f) == metrics
  assert os.path.getsize(os.path.join(workdir, "summary.md")) > 0
  return metrics


def _finite(metrics, keys):
  missing = [k for k in keys if k not in metrics]
  assert not missing, f"missing metric keys {missing}"
  assert all(math.isfinite(metrics[k]) for k in keys)


@pytest.mark.slow
def test_segmentation_smoke(tmp_path):
  m = _run(healswin_segmentation, "healswin_segmentation", tmp_path)
  _finite(m, ["miou_sphere", "miou_backprojected", "loss_first", "loss_last"])
  assert 0 <= m["miou_backprojected"] <= 1 and m["loss_last"] < m["loss_first"]
  for f in ("sphere_views.png", "overlays.png"):
    assert os.path.getsize(tmp_path / f) > 0
  # Re-running the same command with the same workdir resumes (here: from the final checkpoint) and agrees.
  again = _run(healswin_segmentation, "healswin_segmentation", tmp_path)
  assert {k: v for k, v in again.items() if k != "wall_seconds"} == {
      k: v for k, v in m.items() if k != "wall_seconds"}


@pytest.mark.slow
def test_depth_smoke(tmp_path):
  m = _run(healswin_depth, "healswin_depth", tmp_path)
  _finite(m, ["abs_rel", "rmse", "delta1", "chamfer", "chamfer_squared", "loss_first", "loss_last"])
  assert 0 <= m["delta1"] <= 1 and m["chamfer"] > 0
  assert os.path.getsize(tmp_path / "overlays.png") > 0


@pytest.mark.slow
def test_spherical_mnist_smoke(tmp_path):
  metrics = cli.main(spherical_mnist.get_config, spherical_mnist.run, name="spherical_mnist",
                     argv=["--quick", "--workdir", str(tmp_path), "--set", "num_steps=6", "--set", "r_num_steps=6", "--set",
                              "data.num_train=16", "--set", "data.num_test=8", "--set", "data.nside=4",
                              "--set", "batch_size=4", "--set", "eval_batch_size=8", "--set",
                              "model.embed_dim=8", "--set", "model.depths=(1, 1)", "--set",
                              "model.num_heads=(1, 2)", "--set", "progress=False"])
  keys = ("test_accuracy_nr_nr", "test_accuracy_r_r", "test_accuracy_nr_r", "baseline_flat_swin_accuracy_nr_nr")
  _finite(metrics, keys)
  assert all(0 <= metrics[k] <= 1 for k in keys)
  assert (tmp_path / "flat_nr_nr" / "metrics.jsonl").exists()
  assert os.path.getsize(tmp_path / "inputs.png") > 0


@pytest.mark.parametrize("key", ["r_num_steps", "baseline_max_train"])
def test_spherical_mnist_bad_lengths_are_refused_before_training(tmp_path, key):
  config = spherical_mnist.get_config(quick=True)
  config[key] = 0
  with pytest.raises(ValueError, match=f"{key}=0 must be a positive int"):
    spherical_mnist.run(config, str(tmp_path))
  assert not any(tmp_path.iterdir())


def test_missing_woodscape_path_names_the_fix(tmp_path, monkeypatch):
  monkeypatch.delenv("WOODSCAPE_DIR", raising=False)
  with pytest.raises(FileNotFoundError, match="WOODSCAPE_DIR.*data.root"):
    _run(healswin_segmentation, "healswin_segmentation", tmp_path, ["--set", "data.source=woodscape"])


def test_segmentation_on_a_fake_synwoodscape_copy(tmp_path):
  """The real-data path: published layout on disk -> cached projections -> training -> back-projected mIoU."""
  from healswin_jax.data import woodscape
  from healswin_jax.data.fisheye import FisheyeCamera
  root = tmp_path / "SynWoodScape"
  woodscape.write_fake_dataset(str(root), 12, FisheyeCamera.woodscape_fv(32), synthetic=True)
  m = _run(healswin_segmentation, "healswin_segmentation", tmp_path / "run",
           ["--set", "data.source=synwoodscape", "--set", f"data.root={root}"])
  _finite(m, ["miou_sphere", "miou_backprojected", "loss_first", "loss_last"])
  assert len(os.listdir(root / ".healswin_cache")) == 8 + 2  # one cached projection per frame used
