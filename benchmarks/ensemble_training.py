"""Benchmark: M ensemble members trained by one vmapped jitted program vs one after another, on this machine.

Two settings, each timed interleaved (vmapped, plain vmapped, sequential, vmapped, ...; median over ``repeats``
after a warm-up call, compilation excluded) so that load changes on a shared machine hit every side alike:

1. MLP 784-512-512-10 (``ArchSpec(kind="mlp", width=512, depth=2, out_dim=10)``, NTK parameterization), Adam,
   softmax cross-entropy, one batch of 256 MNIST-5k digits shared by all members; one optimizer step of the
   whole ensemble, for M in ``members``:

   - vmapped: ``ntk.ensemble.make_ensemble_step(member_step, member_chunk=c.member_chunk,
     broadcast_data=c.broadcast_data)``, one jitted, buffer-donating call for all M members;
   - plain vmapped: ``make_ensemble_step(member_step)`` (defaults: all members at once on the shared batch);
   - sequential: the same ``member_step`` ``jax.jit``-ed with donation, called once per member (M calls on
     separate per-member arrays), the device synchronized once after the M calls.

   ``vmap_speedup_m{M} = sequential / vmapped`` seconds per ensemble step.
2. toy2d (the paper's launch-bound case): MLP 2-512-512-1 with biases, 40 points, full-batch GD on MSE,
   ``toy_steps`` steps of M = ``toy_members`` members:

   - vmapped: one jitted call of ``make_ensemble_step(member_step, toy_steps, member_chunk=c.toy_member_chunk,
     broadcast_data=c.toy_broadcast_data)`` (a ``lax.scan`` over the steps);
   - plain vmapped: the same with the defaults;
   - sequential: ``jax.jit`` of the same ``lax.scan`` of ``member_step`` for ONE member, called M times (so the
     ratio measures vmapping, not Python dispatch).

Roofline: ``gemm_gflops_*`` is this machine's GFLOP/s on one ``gemm_size``^3 fp32 matmul, timed in the same
interleaved rounds as that setting (``gemm_gflops``: the best of them); FLOPs are XLA's count
for ONE member step (``member_flops_*``) times members (and steps). ``roofline_ratio_*`` = achieved GFLOP/s of the
vmapped program / ``gemm_gflops`` (``sequential_roofline_ratio_*`` the same for the sequential side), and
``vmap_speedup_bound_*`` = sequential seconds / (FLOPs / ``gemm_gflops``): the speedup a vmapped program would
have if it ran every FLOP at the single-GEMM rate (no memory traffic, no elementwise work) -- an upper bound
for any batching of the same computation on this machine. ``load_average_*``: the 1-minute load average when
the timings started and ended (the ratios are only comparable between runs on a quiet machine).

Run::

  python -m benchmarks.ensemble_training --workdir runs/bench_ensemble_training          # full
  python -m benchmarks.ensemble_training --quick --workdir runs/bench_ensemble_training  # fewer repeats/steps
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from infra import cli
from infra.bundled_data import load_mnist5k
from infra.roofline import compiled_flops
from ntk import ensemble as ens
from ntk.architectures import ArchSpec


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.members = (1, 4, 16)    # the speedup metric is for 16
  c.batch_size = 256
  c.width = 512
  c.depth = 2
  c.learning_rate = 1e-3
  c.member_chunk = 0        # 0: all members in one group (make_ensemble_step's member_chunk=None)
  c.broadcast_data = True
  c.repeats = 5 if quick else 11
  c.seed = 0
  c.toy_members = 100
  c.toy_points = 40
  c.toy_width = 512
  c.toy_steps = 20 if quick else 100
  c.toy_lr = 0.1
  c.toy_member_chunk = 4
  c.toy_broadcast_data = True
  c.toy_repeats = 3 if quick else 5
  c.gemm_size = 2048          # the roofline: GFLOP/s of one square fp32 matmul on this machine
  return c


def _block(tree):
  jax.block_until_ready(tree)
  return tree


def _interleaved(fns: dict, repeats: int) -> dict:
  """Median wall seconds of each no-argument callable, timed in turn (a, b, c, a, b, c, ...) after a warm-up."""
  for f in fns.values():
    _block(f())
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, f in fns.items():
      t0 = time.perf_counter()
      _block(f())
      times[name].append(time.perf_counter() - t0)
  return {name: float(np.median(t)) for name, t in times.items()}


def _gemm(n: int):
  """A no-argument callable running one jitted ``n x n x n`` fp32 matmul (timed with the others: the roofline
  under the same load)."""
  a = jax.random.normal(jax.random.key(0), (n, n))
  b = jax.random.normal(jax.random.key(1), (n, n))
  f = jax.jit(lambda a, b: a @ b)
  return lambda: f(a, b)


def _chunk(value: int) -> int | None:
  return None if value == 0 else value


def _roofline(suffix: str, flops: float, t: dict, peak: float) -> dict:
  """Speedups, achieved GFLOP/s and roofline ratios of the timings ``t`` (keys vmap, plain, sequential)."""
  return {f"vmap_speedup_{suffix}": t["sequential"] / t["vmap"],
          f"vmap_plain_speedup_{suffix}": t["sequential"] / t["plain"],
          f"vmap_gflops_{suffix}": flops / t["vmap"] / 1e9,
          f"roofline_ratio_{suffix}": flops / t["vmap"] / 1e9 / peak,
          f"sequential_roofline_ratio_{suffix}": flops / t["sequential"] / 1e9 / peak,
          f"vmap_speedup_bound_{suffix}": t["sequential"] / (flops / (peak * 1e9))}


def time_mlp(c, m: int, model, tx, member_step, x, y, key) -> tuple[dict, float]:
  """Seconds per ensemble step of M members: vmapped (configured), plain vmapped, sequential."""
  configured = ens.make_ensemble_step(member_step, member_chunk=_chunk(c.member_chunk),
                                      broadcast_data=c.broadcast_data)
  plain = ens.make_ensemble_step(member_step)
  states = {"vmap": ens.init_state(model, tx, key, x, m), "plain": ens.init_state(model, tx, key, x, m)}

  def vmapped(name, step):
    def run():
      states[name], _ = step(states[name], x, y)
      return states[name]
    return run

  one = jax.jit(member_step, donate_argnums=(0, 1))
  s0 = ens.init_state(model, tx, key, x, m)
  params = [ens.member(s0.params, i) for i in range(m)]
  opt = [ens.member(s0.opt_state, i) for i in range(m)]
  keys = [s0.member_keys[i] for i in range(m)]

  def sequential():
    for i in range(m):
      params[i], opt[i], _ = one(params[i], opt[i], keys[i], s0.step, x, y)
    return params, opt

  t = _interleaved({"vmap": vmapped("vmap", configured), "plain": vmapped("plain", plain),
                    "sequential": sequential, "gemm": _gemm(c.gemm_size)}, c.repeats)
  member_flops = compiled_flops(jax.jit(member_step), params[0], opt[0], keys[0], s0.step, x, y)
  return t, member_flops


def time_toy(c) -> tuple[dict, float]:
  """Seconds for ``toy_steps`` GD steps of ``toy_members`` members: vmapped (configured), plain, sequential."""
  rng = np.random.default_rng(c.seed)
  x = jnp.asarray(rng.uniform(-3, 3, (c.toy_points, 2)), jnp.float32)
  y = jnp.asarray(np.sin(2 * np.linalg.norm(np.asarray(x), axis=1, keepdims=True)), jnp.float32)
  model = ArchSpec(kind="mlp", width=c.toy_width, depth=2, out_dim=1, b_std=1.0).flax()
  tx = optax.sgd(c.toy_lr)
  member_step = ens.make_member_step(model, tx, ens.mse_loss)
  m, key = c.toy_members, jax.random.PRNGKey(c.seed)
  configured = ens.make_ensemble_step(member_step, c.toy_steps, member_chunk=_chunk(c.toy_member_chunk),
                                      broadcast_data=c.toy_broadcast_data)
  plain = ens.make_ensemble_step(member_step, c.toy_steps)

  def one_training(params, opt_state, member_key):
    def body(carry, step):
      p, o, _ = member_step(*carry, member_key, step, x, y)
      return (p, o), None
    return jax.lax.scan(body, (params, opt_state), jnp.arange(c.toy_steps))[0]

  alone = jax.jit(one_training)
  state = ens.init_state(model, tx, key, x, m)
  members = [(ens.member(state.params, i), ens.member(state.opt_state, i), state.member_keys[i]) for i in range(m)]
  # The vmapped calls donate their state: a fresh one per call, made before the timer starts.
  fresh = {"vmap": [], "plain": []}

  def vmapped(name, step):
    def run():
      return step(fresh[name].pop(), x, y)
    return run

  def refill():
    for name in fresh:
      fresh[name].append(_block(ens.init_state(model, tx, key, x, m)))

  runs = {"vmap": vmapped("vmap", configured), "plain": vmapped("plain", plain),
          "sequential": lambda: [alone(*args) for args in members], "gemm": _gemm(c.gemm_size)}
  times = {name: [] for name in runs}
  for r in range(c.toy_repeats + 1):  # the first round is the warm-up (compilation)
    refill()
    for name, f in runs.items():
      t0 = time.perf_counter()
      _block(f())
      if r:
        times[name].append(time.perf_counter() - t0)
  t = {name: float(np.median(v)) for name, v in times.items()}
  p0, o0, k0 = members[0]
  member_flops = compiled_flops(jax.jit(member_step), p0, o0, k0, jnp.int32(0), x, y)
  return t, member_flops


def _timing_metrics(c, suffix: str, t: dict, flops: float) -> dict:
  """The recorded keys of one timed case (``t``: seconds of vmap, plain, sequential and the GEMM; ``flops``: of
  the whole timed call): raw seconds, the GEMM's GFLOP/s under the same load, and :func:`_roofline`."""
  peak = 2 * c.gemm_size ** 3 / t["gemm"] / 1e9
  toy = suffix.startswith("toy")
  names = (("toy_vmap_seconds_", "toy_vmap_plain_seconds_", "toy_sequential_seconds_") if toy else
           ("vmap_seconds_per_step_", "vmap_plain_seconds_per_step_", "sequential_seconds_per_step_"))
  tag = suffix[len("toy_"):] if toy else suffix
  out = {f"gemm_gflops_{suffix}": peak, **{n + tag: t[k] for n, k in zip(names, ("vmap", "plain", "sequential"))}}
  return {**out, **_roofline(suffix, flops, t, peak)}


def run(c: ml_collections.ConfigDict, workdir: str) -> dict:
  images, labels = load_mnist5k(c.batch_size, seed=c.seed)
  x, y = jnp.asarray(images.reshape(c.batch_size, -1)), jnp.asarray(labels)
  model = ArchSpec(kind="mlp", width=c.width, depth=c.depth, out_dim=10).flax()
  tx = optax.adam(c.learning_rate)
  member_step = ens.make_member_step(model, tx, ens.cross_entropy_loss)
  out = {"load_average_start": os.getloadavg()[0]}
  for m in c.members:
    t, out["member_flops_mlp"] = time_mlp(c, m, model, tx, member_step, x, y, jax.random.PRNGKey(c.seed))
    out.update(_timing_metrics(c, f"m{m}", t, m * out["member_flops_mlp"]))
  t, out["member_flops_toy"] = time_toy(c)
  out.update(_timing_metrics(c, f"toy_m{c.toy_members}", t, c.toy_members * c.toy_steps * out["member_flops_toy"]))
  out["gemm_gflops"] = max(v for k, v in out.items() if k.startswith("gemm_gflops_"))
  out["devices"] = jax.device_count()
  out["load_average_end"] = os.getloadavg()[0]
  _summary(c, workdir, out)
  return out


def _summary(c, workdir: str, out: dict) -> None:
  mt = c.toy_members
  rows = [(m, 1e3 * out[f"vmap_seconds_per_step_m{m}"], 1e3 * out[f"vmap_plain_seconds_per_step_m{m}"],
           1e3 * out[f"sequential_seconds_per_step_m{m}"], out[f"vmap_speedup_m{m}"], out[f"vmap_plain_speedup_m{m}"],
           out[f"roofline_ratio_m{m}"], out[f"sequential_roofline_ratio_m{m}"], out[f"vmap_speedup_bound_m{m}"])
          for m in c.members]
  cli.write_summary(workdir, "\n".join([
      "# Ensemble training: vmapped vs sequential",
      "",
      f"MLP 784-{c.width}x{c.depth}-10 (NTK param.), Adam, cross-entropy, one shared batch of {c.batch_size}; "
      f"backend {jax.default_backend()} ({jax.device_count()} device(s)); medians of {c.repeats} interleaved "
      f"repeats. vmapped = make_ensemble_step(member_chunk={_chunk(c.member_chunk)}, "
      f"broadcast_data={c.broadcast_data}); plain = make_ensemble_step defaults; sequential = the jitted, "
      "donating member step called once per member.",
      "",
      cli.markdown_table(rows, ["M", "vmapped ms", "plain vmapped ms", "sequential ms", "speedup", "plain speedup",
                                "roofline ratio", "sequential roofline ratio", "speedup bound"]),
      "",
      f"toy2d (MLP 2-{c.toy_width}x2-1, {c.toy_points} points, GD, {c.toy_steps} steps, M = {mt}): vmapped "
      f"(one jitted scan, member_chunk={_chunk(c.toy_member_chunk)}, broadcast_data={c.toy_broadcast_data}) "
      f"{out[f'toy_vmap_seconds_m{mt}']:.3f} s, plain vmapped {out[f'toy_vmap_plain_seconds_m{mt}']:.3f} s, "
      f"sequential ({mt} calls of the jitted one-member scan) {out[f'toy_sequential_seconds_m{mt}']:.3f} s: "
      f"speedup {out[f'vmap_speedup_toy_m{mt}']:.2f} (plain "
      f"{out[f'vmap_plain_speedup_toy_m{mt}']:.2f}); roofline ratio {out[f'roofline_ratio_toy_m{mt}']:.2f} "
      f"(sequential {out[f'sequential_roofline_ratio_toy_m{mt}']:.2f}), speedup bound "
      f"{out[f'vmap_speedup_bound_toy_m{mt}']:.2f}.",
      "",
      f"Single {c.gemm_size}^3 fp32 GEMM, timed in the same interleaved rounds: {out['gemm_gflops']:.1f} "
      "GFLOP/s at best (the roofline of each row is the median of its own rounds). The speedup bound is the sequential "
      "time over the time of the same FLOPs at that rate: no batching of these members can beat it here. "
      f"1-minute load average {out['load_average_start']:.1f} at the start, {out['load_average_end']:.1f} at "
      "the end (ratios measured under load need a quiet re-run).",
  ]))


if __name__ == "__main__":
  cli.main(get_config, run, name="ensemble_training")
