"""``benchmarks.healswin_anchors`` on this project alone at a tiny size (keys, parameter count, roofline), and its
errors for bad checkout paths. The side-by-side timings themselves are measured, not tested."""

import json
import os

import pytest

from benchmarks import healswin_anchors
from infra import cli


@pytest.mark.slow
def test_harness_runs_project_alone(tmp_path):
  flat = cli.main(healswin_anchors.get_config, healswin_anchors.run, "healswin_anchors", argv=[
      "--quick", "--workdir", str(tmp_path), "--set", "nsides=(8,)", "--set", "faces=(8,)",
      "--set", "strategies=('grid',)", "--set", "repeats=1", "--set", "gemm_size=256"])
  assert flat["ms_project_grid_f8_n8"] > 0 and flat["peak_mb_project"] > 0
  assert flat["params_project"] > 1e5
  assert 0 < flat["roofline_ratio_grid_f8_n8"] == pytest.approx(
      flat["gflops_project_grid_f8_n8"] / flat["gemm_gflops"])
  assert not any(k.startswith("speedup") for k in flat)  # no other implementation was given
  with open(os.path.join(tmp_path, "metrics.json")) as f:
    assert json.load(f)["params_project"] == flat["params_project"]


def test_bad_checkouts_are_named(tmp_path):
  argv = healswin_anchors._split_argv(["--workdir", str(tmp_path), "--heal_swin_repo", str(tmp_path)])
  assert argv[-2:] == ["--set", f"heal_swin_repo={tmp_path}"]
  with pytest.raises(FileNotFoundError, match="heal_swin_repo.*swin_hp_transformer.py"):
    cli.main(healswin_anchors.get_config, healswin_anchors.run, "healswin_anchors", argv=argv)
  with pytest.raises(FileNotFoundError, match="torch_python"):
    cli.main(healswin_anchors.get_config, healswin_anchors.run, "healswin_anchors", argv=[
        "--workdir", str(tmp_path), "--set", f"torch_python={tmp_path}/nope"])
