"""Smoke test of ``python -m experiments.healpix_geometry --quick`` (smaller figures, one timing repeat)."""

import json
import os

from experiments import healpix_geometry
from infra import cli


def test_quick_run_writes_figures_and_meets_the_spec_thresholds(tmp_path):
  workdir = str(tmp_path / "geometry")
  metrics = cli.main(healpix_geometry.get_config, healpix_geometry.run, name="healpix_geometry",
                     argv=["--quick", "--workdir", workdir, "--set", "figure_nside=4", "--set",
                              "figure_xsize=120", "--set", "timing_repeats=1", "--set", "leak_batch=2"])
  with open(os.path.join(workdir, "metrics.json")) as f:
    assert json.load(f) == metrics
  for name in ("windows_12faces.png", "windows_8faces.png", "summary.md", "config.json"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  assert metrics["grid_is_permutation"] == metrics["ring_is_permutation"] == metrics["roundtrip_exact"] == 1
  assert metrics["grid_mixing_mean"] >= 3.9 and metrics["ring_mixing_mean"] >= 3.9
  assert metrics["ring_nnx_step_mixing_mean"] < 3.0
  assert metrics["grid_unmasked_nonneighbor_pairs"] == 0
  assert 0.0 < metrics["ring_unmasked_nonneighbor_fraction"] < 0.1
  assert metrics["grid_c4_commutes"] == 1 and metrics["ring_c4_commute_fraction"] < 1
  assert metrics["mask_leak_max"] < 1e-30 < metrics["mask_leak_max_minus100"]
  assert metrics["build_seconds_nside64_full"] < 2.0  # spec: < 0.5 on a quiet machine; CI cores are shared
