"""Smoke test of benchmarks.ensemble_training on a tiny setting (the timings themselves are not checked)."""

import pytest

from benchmarks import ensemble_training
from infra import cli


@pytest.mark.slow
def test_benchmark_writes_speedups(tmp_path):
  flat = cli.main(ensemble_training.get_config, ensemble_training.run, "ensemble_training", argv=[
      "--quick", "--workdir", str(tmp_path), "--set", "members=(1, 2)", "--set", "width=32",
      "--set", "batch_size=16", "--set", "repeats=1", "--set", "toy_members=3", "--set", "toy_width=16",
      "--set", "toy_steps=4", "--set", "gemm_size=128"])
  for m in (1, 2):
    assert flat[f"vmap_seconds_per_step_m{m}"] > 0 and flat[f"sequential_seconds_per_step_m{m}"] > 0
    assert flat[f"vmap_speedup_m{m}"] == pytest.approx(
        flat[f"sequential_seconds_per_step_m{m}"] / flat[f"vmap_seconds_per_step_m{m}"])
  assert flat["vmap_speedup_toy_m3"] == pytest.approx(flat["toy_sequential_seconds_m3"] / flat["toy_vmap_seconds_m3"])
  assert flat["vmap_plain_speedup_toy_m3"] == pytest.approx(
      flat["toy_sequential_seconds_m3"] / flat["toy_vmap_plain_seconds_m3"])
  for key in ("gemm_gflops", "roofline_ratio_m2", "roofline_ratio_toy_m3", "vmap_gflops_m2",
              "sequential_roofline_ratio_m2", "vmap_speedup_bound_m2", "vmap_speedup_bound_toy_m3"):
    assert 0 < flat[key] < float("inf"), key
  # The bound is the sequential time over the FLOPs' time at the GEMM rate of the same rounds.
  assert flat["vmap_speedup_bound_m2"] == pytest.approx(1 / flat["sequential_roofline_ratio_m2"])
  assert (tmp_path / "summary.md").exists()
