"""The machine's practical peak and a program's FLOP count, for roofline ratios in the benchmarks.

``roofline ratio = (FLOPs of the step / its wall time) / gemm_gflops()``: how far a step is from what this
machine's matmul unit reaches on one large fp32 GEMM.
"""

from __future__ import annotations

import math
import time

import jax


def gemm_gflops(n: int = 2048, repeats: int = 5) -> float:
  """GFLOP/s of one jitted ``n x n x n`` float32 matmul on the default device (best of ``repeats`` calls after
  a warm-up call)."""
  a = jax.random.normal(jax.random.key(0), (n, n))
  b = jax.random.normal(jax.random.key(1), (n, n))
  f = jax.jit(lambda a, b: a @ b)
  jax.block_until_ready(f(a, b))
  best = math.inf
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(f(a, b))
    best = min(best, time.perf_counter() - t0)
  return 2 * n ** 3 / best / 1e9


def compiled_flops(jitted, *args) -> float:
  """XLA's FLOP count of ``jitted(*args)`` (``cost_analysis``). A ``scan`` / while body is counted once."""
  cost = jitted.lower(*args).compile().cost_analysis()
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])
