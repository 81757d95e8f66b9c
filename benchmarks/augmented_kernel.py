"""Block-circulant (FFT over the group) vs dense infinite-ensemble predictions on full-orbit augmented data.

Group and data: C16 = Z16 acting on 1-D signals of length 16 by cyclic shifts (``ntk.groups.cyclic_shifts_1d``),
an exact permutation representation, so the MLP NTK is exactly invariant and the augmented kernel is exactly
block-circulant. (C16 by interpolated image rotation is *not* a representation and would fall back to the
dense path.) Inputs are i.i.d. Gaussian signals, targets 3 random outputs; MLP (``ArchSpec``, depth 2,
activation ``erf``, NTK parameterization), ``get="ntk"``, relative ``diag_reg=1e-4``, mu_t at
t ∈ {10, 1000, ∞} for 100 test points. Timings include kernel evaluation (``nt.batch`` tiles of 128, compiled
once in a warm-up) and everything after it; the dense path evaluates the (|G|n)² kernel and does one
(|G|n)×(|G|n) eigendecomposition (BLAS threads as configured), the fast path |G|·n² kernel entries and
|G|/2 + 1 independent n×n Hermitian eigensolves (in parallel threads, single-threaded BLAS each).

Metrics:

- ``speedup_vs_dense_n4096``: dense seconds / fast seconds for 256 points × 16 = 4,096 augmented points;
  ``maxabs_fast_vs_dense_n4096`` checks that both give the same answers (target ≥ 10, ≤ 1e-8).
- ``speedup_cpu_seconds_vs_dense_n4096``: the same ratio in process CPU seconds (robust on a shared machine).
- ``fast_seconds_c16_n1000``: the fast path for 1,000 points × 16 = 16,000 augmented points (target ≤ 60 s on
  2 CPU cores; the dense path would need a 16,000² eigendecomposition).

Run::

  python -m benchmarks.augmented_kernel --workdir runs/augmented_kernel           # about a minute on 2 cores
  python -m benchmarks.augmented_kernel --quick --workdir runs/augmented_kernel_q  # smaller sizes

Results: ``--record`` writes ``results/augmented_kernel/<name>.json``.
"""

from __future__ import annotations

import time

import ml_collections
import numpy as np

from infra import cli
import ntk  # noqa: F401  (compat layer before neural_tangents)
from ntk import blockcirc, groups, kernels
from ntk.architectures import ArchSpec


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.group_order = 16
  c.n_compare = 64 if quick else 256      # points compared fast vs dense (x group_order augmented)
  c.n_large = 128 if quick else 1000      # points for the fast-only timing
  c.n_test = 100
  c.ts = (10.0, 1000.0, float("inf"))
  c.activation = "erf"
  c.depth = 2
  c.diag_reg = 1e-4
  c.batch_size = 128                      # nt.batch tile (the 100 test points pad to 128)
  return c


def _problem(c, n: int, rng: np.random.Generator):
  x = rng.standard_normal((n, c.group_order))
  y = rng.standard_normal((n, 3))
  x_test = rng.standard_normal((c.n_test, c.group_order))
  return x, y, x_test


def _timed(fn, cpu: dict, name: str):
  """Runs fn; returns (result, wall seconds) and records process CPU seconds (all threads) in ``cpu[name]``.

  On a shared machine wall time includes waiting for the CPU; CPU seconds show how much work was done.
  """
  t0, c0 = time.perf_counter(), time.process_time()
  out = fn()
  cpu[name] = time.process_time() - c0
  return out, time.perf_counter() - t0


def _warm_up(kernel_fn, c: ml_collections.ConfigDict, rng: np.random.Generator) -> None:
  """Compiles the (batch_size x batch_size) kernel tiles (symmetric and cross) outside the timings."""
  warm = rng.standard_normal((c.batch_size, c.group_order))
  kernels.kernel_matrices(kernel_fn, warm, None, "ntk", c.batch_size)
  kernels.kernel_matrices(kernel_fn, warm, warm, "ntk", c.batch_size)


def run(c: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  group = groups.cyclic_shifts_1d(c.group_order)
  kernel_fn = ArchSpec(kind="mlp", width=512, depth=c.depth, out_dim=3, activation=c.activation,
                       W_std=1.5, b_std=0.1).stax()[2]
  rng = np.random.default_rng(c.seed)
  ts = np.asarray(c.ts)

  def predict(method, x, y, x_test):  # the dense solve checks the kernel's invariance; the timed fast path not
    return blockcirc.augmented_ensemble_predict(kernel_fn, group, x, y, x_test, ts, method=method,
                                                check_invariance=method == "dense", diag_reg=c.diag_reg,
                                                batch_size=c.batch_size)

  _warm_up(kernel_fn, c, rng)
  cpu = {}
  x, y, x_test = _problem(c, c.n_compare, rng)
  n_aug = c.n_compare * c.group_order
  fast, t_fast = _timed(lambda: predict("blockcirc", x, y, x_test), cpu, f"cpu_seconds_fast_n{n_aug}")
  dense, t_dense = _timed(lambda: predict("dense", x, y, x_test), cpu, f"cpu_seconds_dense_n{n_aug}")
  out = {
      f"speedup_vs_dense_n{n_aug}": t_dense / t_fast,
      f"seconds_dense_n{n_aug}": t_dense,
      f"seconds_fast_n{n_aug}": t_fast,
      f"maxabs_fast_vs_dense_n{n_aug}": float(np.max(np.abs(fast.mean - dense.mean))),
  }
  x, y, x_test = _problem(c, c.n_large, rng)
  large, t_large = _timed(lambda: predict("blockcirc", x, y, x_test), cpu,
                          f"cpu_seconds_fast_c{c.group_order}_n{c.n_large}")
  out[f"fast_seconds_c{c.group_order}_n{c.n_large}"] = t_large
  out.update(cpu)
  out[f"speedup_cpu_seconds_vs_dense_n{n_aug}"] = cpu[f"cpu_seconds_dense_n{n_aug}"] / cpu[f"cpu_seconds_fast_n{n_aug}"]
  out[f"finite_c{c.group_order}_n{c.n_large}"] = float(np.all(np.isfinite(large.mean)))
  _summary(c, workdir, out)
  return out


def _summary(c, workdir: str, out: dict[str, float]) -> None:
  cli.write_summary(workdir, f"""# augmented_kernel

C{c.group_order} cyclic shifts of length-{c.group_order} signals (exact permutation representation), MLP NTK
({c.activation}, depth {c.depth}), mu_t at t = {tuple(c.ts)} for {c.n_test} test points; block-circulant
(FFT over the group) vs dense solve, kernel evaluation included.

{cli.markdown_table(list(out.items()), ["metric", "value"])}
""")


if __name__ == "__main__":
  cli.main(get_config, run, name="augmented_kernel")
