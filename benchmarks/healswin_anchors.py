"""Side by side: this project's HEAL-SWIN train step against the original PyTorch HEAL-SWIN and the HEAL-SWIN-nnx port.

Same model in all three (checked: equal parameter counts): U-Net with embed dim 48, depths (2, 2, 2), heads
(2, 4, 8), window 4, patch 4, Swin-V2 cosine attention with post-norm and a relative-position bias, 3 input
channels, 10 outputs, fp32, no dropout; batch 2. Timed: the gradient of a mean squared error w.r.t. all
parameters (median over ``repeats`` calls after a warm-up call). The original runs on 8 faces only (its grid
shift requires 8 base pixels), the NNX port on the full sphere, so this project is timed on both: 8 faces
against the original, 12 against the port.

Every measurement is a fresh process (``benchmarks/anchor_worker.py``, run by the implementation's own
interpreter), pinned to the first ``threads`` cores (``taskset``) with ``OMP_NUM_THREADS`` and
``torch.set_num_threads`` equal to it; the ``rounds`` rounds run all cases one after another (the order rotates
each round), so a change in machine load hits all implementations alike. Reported per case: the median over
rounds of each round's median. Another implementation's code is imported from a local checkout only:

  python -m benchmarks.healswin_anchors --workdir runs/anchors \\
      --heal_swin_repo ~/src/HEAL-SWIN --torch_python ~/venv-torch/bin/python \\
      --nnx_repo ~/src/HEAL-SWIN-nnx --nnx_python ~/venv-nnx/bin/python
  python -m benchmarks.healswin_anchors --quick --workdir /tmp/anchors       # this project alone, nside 16

The PyTorch venv needs ``torch einops timm healpy numpy``; the NNX one ``jax flax einops healpy numpy``
(Python >= 3.12 per the port's metadata; its code imports under 3.11 too).

Metrics: ``ms_<impl>_<shift>_f<faces>_n<nside>``; ``speedup_vs_torch_{grid,ring}_n<nside>`` (original /
project, 8 faces) and ``speedup_vs_nnx_{grid,ring}_n<nside>`` (port / project, 12 faces); ``params_<impl>``;
``peak_mb_<impl>`` (largest peak RSS of its runs at the largest nside); ``build_s_<impl>_...`` (tables / model
construction); and the roofline of this project's step: ``gflops_project_<shift>_f<faces>_n<nside>`` (XLA's
FLOP count / time), ``gemm_gflops`` (a 2048^3 fp32 GEMM in JAX on the same cores) and
``roofline_ratio_<shift>_f<faces>_n<nside>``, their ratio.

``torch_omp_wait_policy`` (default PASSIVE) is exported to the PyTorch process: with the default (active)
OpenMP waiting, PyTorch's threads spin and a step on a loaded machine with few cores takes several times longer
than with passive waiting; set it to "" on a quiet, dedicated machine.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys

import ml_collections

from infra import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "benchmarks", "anchor_worker.py")
# The faces each implementation is compared on (the original's grid shift needs exactly 8 base pixels).
ANCHOR_FACES = {"torch": 8, "nnx": 12}


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.nsides = (16,) if quick else (16, 64)
  c.faces = (8, 12)
  c.strategies = ("grid", "ring")
  c.embed_dim = 48
  c.depths = (2, 2, 2)
  c.num_heads = (2, 4, 8)
  c.window_size = 4
  c.patch_size = 4
  c.in_channels = 3
  c.out_channels = 10
  c.batch = 2
  c.threads = 2
  c.repeats = 3 if quick else 10
  c.rounds = 1 if quick else 2
  c.heal_swin_repo = ""   # local checkout of the original PyTorch HEAL-SWIN ("" = skip)
  c.nnx_repo = ""         # local checkout of HEAL-SWIN-nnx ("" = skip)
  c.torch_python = ""     # interpreter with torch for the original ("" = this one)
  c.nnx_python = ""       # interpreter with flax + einops for the port ("" = this one)
  c.torch_omp_wait_policy = "PASSIVE"
  c.gemm_size = 2048
  c.timeout_s = 3600
  return c


def _cases(c) -> list[tuple[str, str, int, int]]:
  """(impl, shift strategy, faces, nside) for every measurement of one round."""
  out = []
  for nside in c.nsides:
    for strategy in c.strategies:
      out += [("project", strategy, f, nside) for f in c.faces]
      if c.heal_swin_repo and ANCHOR_FACES["torch"] in c.faces:
        out.append(("torch", strategy, ANCHOR_FACES["torch"], nside))
      if c.nnx_repo and ANCHOR_FACES["nnx"] in c.faces:
        out.append(("nnx", strategy, ANCHOR_FACES["nnx"], nside))
  return out


def _check_inputs(c) -> None:
  for field, marker in (("heal_swin_repo", "heal_swin/models_torch/swin_hp_transformer.py"),
                        ("nnx_repo", "src/heal_swin_nnx/models/healswin.py")):
    path = c[field]
    if path and not os.path.exists(os.path.join(path, marker)):
      raise FileNotFoundError(f"--{field} {path}: {marker} not found there. Fix: pass the root of a local "
                              f"checkout of that repository.")
  for field in ("torch_python", "nnx_python"):
    if c[field] and not os.access(c[field], os.X_OK):
      raise FileNotFoundError(f"--{field} {c[field]} is not an executable interpreter. Fix: pass the python of "
                              f"a venv that has the implementation's dependencies (see the module docstring).")


def _run_worker(c, impl: str, spec: dict) -> dict:
  python = {"project": sys.executable, "torch": c.torch_python or sys.executable,
            "nnx": c.nnx_python or sys.executable, "gemm": sys.executable}[impl]
  env = dict(os.environ, OMP_NUM_THREADS=str(c.threads), MKL_NUM_THREADS=str(c.threads), JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None) if "xla_force_host_platform_device_count" in env.get("XLA_FLAGS", "") else None
  if impl == "torch" and c.torch_omp_wait_policy:
    env["OMP_WAIT_POLICY"] = c.torch_omp_wait_policy
  cmd = [python, WORKER, "--impl", impl, "--spec", json.dumps(spec)]
  if shutil.which("taskset") and c.threads < (os.cpu_count() or 1):
    cmd = ["taskset", "-c", f"0-{c.threads - 1}"] + cmd
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=c.timeout_s, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("ANCHOR_RESULT ")]
  if proc.returncode or not lines:
    raise RuntimeError(f"{impl} worker failed (exit {proc.returncode}) for {spec}:\n{proc.stderr[-3000:]}")
  return json.loads(lines[-1][len("ANCHOR_RESULT "):])


def run(c: ml_collections.ConfigDict, workdir: str) -> dict:
  _check_inputs(c)
  results = _measure(c)
  gemm = _run_worker(c, "gemm", dict(repo=ROOT, n=c.gemm_size, repeats=5))
  m = _metrics(c, results, gemm["gflops"])
  _summary(c, workdir, results, m)
  return m


def _summary(c, workdir: str, results: dict[tuple, list[dict]], m: dict[str, float]) -> None:
  rows = []
  for (impl, strategy, faces, nside), outs in results.items():
    medians = [statistics.median(o["ms"]) for o in outs]
    rows.append((impl, strategy, faces, nside, f"{min(medians):.0f}-{max(medians):.0f}", outs[0]["params"],
                 max(o["peak_mb"] for o in outs), m[f"build_s_{impl}_{strategy}_f{faces}_n{nside}"]))
  ratios = [(k, f"{v:.2f}") for k, v in sorted(m.items()) if k.startswith(("speedup", "roofline"))]
  cli.write_summary(workdir, "\n".join([
      "# HEAL-SWIN fwd+bwd: this project vs the original (PyTorch) vs HEAL-SWIN-nnx",
      "",
      f"embed {c.embed_dim}, depths {tuple(c.depths)}, heads {tuple(c.num_heads)}, window {c.window_size}, patch "
      f"{c.patch_size}, V2 attention + relative-position bias, batch {c.batch}, fp32, {c.threads} threads; "
      f"range of the per-round medians over {c.rounds} interleaved round(s) of {c.repeats} calls. Single-GEMM "
      f"roofline on these cores: {m['gemm_gflops']:.1f} GFLOP/s.",
      "",
      cli.markdown_table(rows, ["impl", "shift", "faces", "nside", "fwd+bwd ms", "params", "peak MB",
                                   "build s"]),
      "",
      cli.markdown_table(ratios, ["ratio", "value"]) if ratios else "",
  ]))


def _measure(c) -> dict[tuple, list[dict]]:
  """Every case of :func:`_cases` once per round, each in a fresh worker process; the order rotates by one case
  per round. Returns ``{(impl, strategy, faces, nside): [worker result per round]}``."""
  repos = {"project": ROOT, "torch": c.heal_swin_repo, "nnx": c.nnx_repo}
  base = dict(window_size=c.window_size, patch_size=c.patch_size, embed_dim=c.embed_dim, depths=list(c.depths),
              num_heads=list(c.num_heads), in_channels=c.in_channels, out_channels=c.out_channels, batch=c.batch,
              threads=c.threads, repeats=c.repeats)
  cases = _cases(c)
  results: dict[tuple, list[dict]] = {k: [] for k in cases}
  for r in range(c.rounds):
    shift = r % len(cases)
    for impl, strategy, faces, nside in cases[shift:] + cases[:shift]:
      out = _run_worker(c, impl, dict(base, repo=repos[impl], strategy=strategy, faces=faces, nside=nside))
      results[(impl, strategy, faces, nside)].append(out)
      print(f"round {r}: {impl} {strategy} {faces} faces nside {nside}: "
            f"{statistics.median(out['ms']):.1f} ms (peak {out['peak_mb']:.0f} MB)", file=sys.stderr)
  return results


def _metrics(c, results: dict[tuple, list[dict]], gemm_gflops: float) -> dict[str, float]:
  """The recorded keys (module docstring) from the per-round worker results; a ValueError when the
  implementations' parameter counts differ (then they are not the same model)."""
  m: dict[str, float] = {"gemm_gflops": gemm_gflops, "threads": c.threads, "rounds": c.rounds}
  for (impl, strategy, faces, nside), outs in results.items():
    tag = f"{impl}_{strategy}_f{faces}_n{nside}"
    m[f"ms_{tag}"] = statistics.median(statistics.median(o["ms"]) for o in outs)
    m[f"build_s_{tag}"] = statistics.median(o["build_s"] for o in outs)
    m[f"params_{impl}"] = outs[0]["params"]
    if nside == max(c.nsides):
      m[f"peak_mb_{impl}"] = max(m.get(f"peak_mb_{impl}", 0.0), max(o["peak_mb"] for o in outs))
    if impl == "project":
      m[f"gflops_{tag}"] = outs[0]["flops"] / (m[f"ms_{tag}"] * 1e6)
      m[f"roofline_ratio_{strategy}_f{faces}_n{nside}"] = m[f"gflops_{tag}"] / gemm_gflops
  counts = {k: v for k, v in m.items() if k.startswith("params_")}
  if len(set(counts.values())) > 1:
    raise ValueError(f"parameter counts differ: {counts}; the models are not the same configuration, so the "
                     f"timings cannot be compared. Fix the settings in benchmarks/anchor_worker.py.")
  for nside in c.nsides:
    for strategy in c.strategies:
      for impl, faces in ANCHOR_FACES.items():
        other = m.get(f"ms_{impl}_{strategy}_f{faces}_n{nside}")
        mine = m.get(f"ms_project_{strategy}_f{faces}_n{nside}")
        if other and mine:
          m[f"speedup_vs_{impl}_{strategy}_n{nside}"] = other / mine
  return m


def _split_argv(argv: list[str]) -> list[str]:
  """Turns ``--heal_swin_repo P`` (and the other path flags) into ``--set heal_swin_repo=P``."""
  out, it = [], iter(argv)
  for a in it:
    key = a[2:].split("=", 1)[0] if a.startswith("--") else ""
    if key in ("heal_swin_repo", "nnx_repo", "torch_python", "nnx_python"):
      value = a.split("=", 1)[1] if "=" in a else next(it, "")
      out += ["--set", f"{key}={os.path.abspath(os.path.expanduser(value))}"]
    else:
      out.append(a)
  return out


if __name__ == "__main__":
  cli.main(get_config, run, name="healswin_anchors", argv=_split_argv(sys.argv[1:]))
