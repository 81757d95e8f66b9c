"""Forward+backward time of the HEAL-SWIN U-Net and the flat Swin U-Net at an equal token count (CPU).

Setting: 12 faces, window 4, patch 4, embed 48, depths (2, 2, 2), heads (2, 4, 8), batch 2, fp32,
Swin-V2 attention with relative position bias, grid shift, 10-class segmentation head, at nside 16 (768
tokens) and 64 (12,288 tokens). The flat baseline uses 2x2 patches and 2x2 windows on 48x64 / 192x256 images,
i.e. the same token grid sizes per stage. Timed: one jitted ``value_and_grad`` of the mean cross-entropy
(median over ``repeats`` calls after a warm-up call); ``build_seconds_nside64`` is the cold construction of all
index tables of the nside-64 model (shift tables of every stage, caches cleared); ``peak_rss_mb_nside64`` is the
process's peak resident memory after the nside-64 runs.

  python -m benchmarks.healswin_step --workdir runs/healswin_step          # full
  python -m benchmarks.healswin_step --quick --workdir /tmp/hs             # fewer repeats

Reference: the Flax NNX port reports its own step times for this model on its machine (CPU and core count
unspecified), so they are not comparable with times taken here.

``fwdbwd_cpu_ms_*`` is the process CPU time per step, much less sensitive to the load of a shared machine than
wall time; the step time varies with the host alone, so compare versions with interleaved A/B runs on one host
and keep the numbers in results records (``--record``), not here.

Findings (profiles: ``jax.profiler`` per-thunk traces, ``compiled.cost_analysis()``): there is no bad scaling;
FLOPs and CPU time per stage-0 token are about the same at nside 16 and 64. The flat Swin at the same token
count costs the same CPU time, so the HEALPix parts (shift gathers with their gather-VJP, region masks, bias
gather) are not measurable at this size. Besides the Dense matmuls the step is memory-bound elementwise work
(LayerNorm, exact-erf GELU, residual adds), the transposes XLA materialises for weight gradients, and the
window attention; ``remat=True`` trades XLA's temporaries for recomputation.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections

from healswin_jax import losses
from healswin_jax.config import FlatSwinConfig, HealSwinConfig
from healswin_jax.flat_swin import FlatSwinUNet, flat_grid
from healswin_jax.healpix import shifting
from healswin_jax.model import HealSwinUNet, healpix_grid
from infra import cli


def get_config(quick: bool) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.nsides = (16, 64)
  c.batch = 2
  c.embed_dim = 48
  c.depths = (2, 2, 2)
  c.num_heads = (2, 4, 8)
  c.window_size = 4
  c.patch_size = 4
  c.shift_strategy = "grid"
  c.attention = "v2"
  c.num_classes = 10
  c.repeats = 3 if quick else 10
  c.flat = True
  return c


def _model_kwargs(c) -> dict:
  return dict(embed_dim=c.embed_dim, depths=tuple(c.depths), num_heads=tuple(c.num_heads),
              attention=c.attention, num_classes=c.num_classes, drop_path_rate=0.0)


def time_fwdbwd(model, x_shape, num_classes: int, repeats: int) -> tuple[float, float, float]:
  """(median wall ms, median process-CPU ms per jitted value_and_grad call, compile+first-call seconds).

  The process CPU time (all threads of this process) is what the step costs whatever else runs on the
  machine; wall time on a shared machine also counts the time the process waits for a core.
  """
  x = jax.random.normal(jax.random.key(0), x_shape)
  labels = jax.random.randint(jax.random.key(1), x_shape[:-1], 0, num_classes)
  params = jax.jit(model.init)(jax.random.key(2), x[:1])["params"]

  def loss(p):
    logits = model.apply({"params": p}, x)
    return losses.weighted_cross_entropy(logits, labels)  # the segmentation loss, without class weights

  fn = jax.jit(jax.value_and_grad(loss))
  t0 = time.perf_counter()
  jax.block_until_ready(fn(params))
  first = time.perf_counter() - t0
  wall, cpu = [], []
  for _ in range(repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    jax.block_until_ready(fn(params))
    wall.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
  return 1e3 * statistics.median(wall), 1e3 * statistics.median(cpu), first


def _flat_config(c, nside: int) -> FlatSwinConfig:
  # Same token grid as 12 faces of (nside/2)^2 tokens: 3 x 4 faces side by side, 2x2 patches, 2x2 windows.
  t = nside // 2
  return FlatSwinConfig(image_size=(2 * 3 * t, 2 * 4 * t), patch_size=2, window_size=2, **_model_kwargs(c))


def run(c: ml_collections.ConfigDict, workdir: str) -> dict:
  metrics, rows = {}, []
  for nside in c.nsides:
    m, row = _time_healswin(c, nside)
    metrics.update(m)
    rows.append(row)
  for nside in c.nsides if c.flat else ():
    m, row = _time_flat(c, nside)
    metrics.update(m)
    rows.append(row)
  metrics["devices"] = jax.device_count()
  cli.write_summary(workdir, "# HEAL-SWIN train-step benchmark (CPU, fp32, batch %d)\n\n%s\n\n"
                    "Timings on a shared machine are indicative only.\n" % (c.batch, cli.markdown_table(
                           rows, ["model", "nside", "stage-0 tokens", "fwd+bwd ms", "fwd+bwd CPU ms", "compile s"])))
  return metrics


def _time_healswin(c, nside: int) -> tuple[dict, tuple]:
  """HEAL-SWIN at ``nside``: table build (caches cleared first), fwd+bwd wall and CPU ms, compile time."""
  cfg = HealSwinConfig(nside=nside, window_size=c.window_size, patch_size=c.patch_size,
                       shift_strategy=c.shift_strategy, **_model_kwargs(c))
  shifting._build.cache_clear()  # pylint: disable=protected-access
  healpix_grid.cache_clear()
  t0 = time.perf_counter()
  healpix_grid(cfg)
  build = time.perf_counter() - t0
  ms, cpu_ms, first = time_fwdbwd(HealSwinUNet(cfg), (c.batch, cfg.num_pixels, cfg.in_channels),
                                  c.num_classes, c.repeats)
  tokens = cfg.stage_plan()[0].num_tokens
  m = {f"fwdbwd_ms_nside{nside}": ms, f"fwdbwd_cpu_ms_nside{nside}": cpu_ms,
       f"cpu_us_per_token_nside{nside}": 1e3 * cpu_ms / (c.batch * tokens),
       f"build_seconds_nside{nside}": build, f"compile_seconds_nside{nside}": first}
  if nside == max(c.nsides):
    m[f"peak_rss_mb_nside{nside}"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(f"healswin nside {nside}: {ms:.1f} ms, CPU {cpu_ms:.1f} ms (compile {first:.1f} s, build {build:.3f} s)",
        file=sys.stderr)
  return m, ("HEAL-SWIN", nside, tokens, ms, cpu_ms, first)


def _time_flat(c, nside: int) -> tuple[dict, tuple]:
  """The flat Swin U-Net with as many stage-0 tokens as HEAL-SWIN at ``nside``."""
  fcfg = _flat_config(c, nside)
  flat_grid(fcfg)
  ms, cpu_ms, first = time_fwdbwd(FlatSwinUNet(fcfg), (c.batch,) + fcfg.image_size + (fcfg.in_channels,),
                                  c.num_classes, c.repeats)
  h, w = fcfg.stage_shape(0)
  print(f"flat (tokens as nside {nside}): {ms:.1f} ms (compile {first:.1f} s)", file=sys.stderr)
  return ({f"flat_fwdbwd_ms_nside{nside}": ms, f"flat_fwdbwd_cpu_ms_nside{nside}": cpu_ms,
           f"flat_compile_seconds_nside{nside}": first},
          (f"flat {fcfg.image_size[0]}x{fcfg.image_size[1]}", nside, h * w, ms, cpu_ms, first))


if __name__ == "__main__":
  cli.main(get_config, run, name="healswin_step")
