"""Smoke test of benchmarks.ensemble_training on a tiny setting (the timings themselves are not checked)."""

import pytest

from benchmarks import ensemble_training
from infra import cli


@pytest.mark.slow
def test_benchmark_writes_speedups(tmp_path):
  flat = cli.main(ensemble_training.get_config, ensemble_training.run, "ensemble_training", argv=[
      "--quick", "--workdir", str(tmp_path), "--set", "members=(1, 2)", "--set", "width=32",
      "--set", "batch_size=16", "--set", "repeats=1"])
  for m in (1, 2):
    assert flat[f"vmap_seconds_per_step_m{m}"] > 0 and flat[f"sequential_seconds_per_step_m{m}"] > 0
    assert flat[f"vmap_speedup_m{m}"] == pytest.approx(
        flat[f"sequential_seconds_per_step_m{m}"] / flat[f"vmap_seconds_per_step_m{m}"])
  assert (tmp_path / "summary.md").exists()
