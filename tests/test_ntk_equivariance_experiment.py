"""Smoke test: the ntk_equivariance experiment (tiny --set sizes) writes its metrics, figures and summary."""

import json
import os

from experiments import ntk_equivariance as exp
from infra import cli


def test_quick_run_meets_the_issue_thresholds(tmp_path):
  workdir = str(tmp_path)
  overrides = ["n_train=8", "n_test=4", "n_noise=4", "cnn_image_size=7", "mc_points=6", "mc_samples=4",
               "mc_width=512", "relu_check=False", "figure_ts=(1.0, 1e6, 5)"]
  cli.main(exp.get_config, exp.run, name="ntk_equivariance",
           argv=["--quick", "--workdir", workdir] + [a for o in overrides for a in ("--set", o)])
  with open(os.path.join(workdir, "metrics.json")) as f:
    m = json.load(f)
  assert m["mu_invariance_aug_max"] <= 1e-10
  assert m["mu_invariance_noaug_min"] >= 1e-3
  assert m["mc_vs_analytic_ntk_relerr"] <= 0.1
  assert m["blockcirc_vs_dense_maxabs"] <= 1e-8
  for name in ("mu_t_orbit.png", "equivariance_vs_t.png", "summary.md", "config.json"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
