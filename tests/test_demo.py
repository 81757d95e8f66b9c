"""Smoke test of the demo (experiments.demo --quick): all three parts run and the report is written."""

import json
import re

import numpy as np
import pytest


@pytest.mark.slow
def test_demo_quick_writes_report_and_metrics(tmp_path):
  from experiments import demo
  from infra import cli
  workdir = str(tmp_path / "demo")
  cli.main(demo.get_config, demo.run, "demo", ["--quick", "--workdir", workdir])
  with open(f"{workdir}/metrics.json") as f:
    m = json.load(f)
  for k in ("segmentation/miou_sphere", "ntk/mu_invariance_aug_max", "ntk/mu_invariance_noaug_min",
            "sphere/inv_err_ensemble", "sphere/entk_regression_equiv_err", "sphere/model_err_grid_c4"):
    assert k in m and np.isfinite(m[k]), k
  assert m["ntk/mu_invariance_aug_max"] <= 1e-10 and m["sphere/entk_regression_equiv_err"] <= 1e-8
  report = (tmp_path / "demo" / "report.md").read_text()
  assert not re.search(r"\bnan\b", report), "a metric the report quotes is missing"
  for part, fig in (("segmentation", "sphere_views.png"), ("ntk", "mu_t_orbit.png"), ("sphere", "input_orbit.png")):
    assert (tmp_path / "demo" / part / fig).exists()
    assert f"{part}/{fig}" in report
