"""Smoke test of ``python -m benchmarks.healswin_step`` on a tiny setting (metric keys, finite positive values)."""

import json
import math
import os

import pytest

from benchmarks import healswin_step
from infra import cli


@pytest.mark.slow
def test_benchmark_smoke(tmp_path):
  # nside 8 keeps the HEALPix part tiny (its third stage is global); the flat baseline is skipped because its
  # 2x2 windows need nside >= 16 at the third stage.
  cli.main(healswin_step.get_config, healswin_step.run, name="healswin_step",
           argv=["--quick", "--workdir", str(tmp_path), "--set", "nsides=(8,)", "--set", "repeats=1",
                    "--set", "flat=False"])
  with open(os.path.join(tmp_path, "metrics.json")) as f:
    metrics = json.load(f)
  for key in ("fwdbwd_ms_nside8", "fwdbwd_cpu_ms_nside8", "cpu_us_per_token_nside8", "build_seconds_nside8",
              "peak_rss_mb_nside8", "compile_seconds_nside8"):
    assert key in metrics and math.isfinite(metrics[key]) and metrics[key] > 0, key
  assert os.path.exists(os.path.join(tmp_path, "summary.md"))
