"""Smoke test of experiments.ensemble_vs_ntk (a reduced --quick; on the 4 fake devices, so sharded members)."""

import json
import os

import pytest

from experiments import ensemble_vs_ntk

from infra import cli

REQUIRED = ["ntk_init_relerr_w512", "ntk_init_relerr_w2048", "inv_err_member", "inv_err_ensemble",
            "ensemble_invariance_gain", "inv_err_slope_vs_M", "ens_vs_mu_relerr_smallest_width",
            "ens_vs_mu_relerr_largest_width", "vmap_vs_loop_maxabs"]


@pytest.mark.slow
def test_quick_run_writes_required_metrics_and_figures(tmp_path):
  workdir = str(tmp_path)
  flat = cli.main(ensemble_vs_ntk.get_config, ensemble_vs_ntk.run, "ensemble_vs_ntk", argv=[
      "--quick", "--workdir", workdir, "--set", "n_members=16", "--set", "widths=(16, 128)",
      "--set", "eval_steps=(40, 200)", "--set", "n_test=16", "--set", "n_ood=16",
      "--set", "ntk_check_seeds=2", "--set", "loop_check_steps=3"])
  with open(os.path.join(workdir, "metrics.json")) as f:
    assert json.load(f) == flat
  for k in REQUIRED:
    assert k in flat, k
  assert flat["ntk_init_relerr_w2048"] < flat["ntk_init_relerr_w512"]
  assert flat["ensemble_invariance_gain"] >= 2.5  # ~sqrt(16) = 4 at M = 16 (>= 3 is the M = 64 criterion)
  assert -0.75 <= flat["inv_err_slope_vs_M"] <= -0.25
  # With only 16 members the raw ensemble-vs-mu_t error is dominated by the finite-M term at every width;
  # its finite-width part (finite-M variance removed) must fall with width.
  assert flat["ens_vs_mu_bias_test_w128"] < 0.5 * flat["ens_vs_mu_bias_test_w16"]
  assert flat["vmap_vs_loop_maxabs"] <= 1e-5
  assert flat["inv_err_mu"] <= 1e-6  # the infinite ensemble is invariant (float64 up to solve round-off)
  for name in ("invariance_vs_M", "ensemble_vs_ntk_width", "orbit_predictions"):
    assert os.path.exists(os.path.join(workdir, name + ".png"))
  assert "Invariance vs ensemble size" in open(os.path.join(workdir, "summary.md")).read()
