"""One timed HEAL-SWIN forward+backward measurement in a fresh process, for ``benchmarks.healswin_anchors``.

Run as a script (``python benchmarks/anchor_worker.py --impl IMPL --spec JSON``) by the harness, with the
interpreter of the implementation under test: this file imports nothing from this repository at module level,
so the PyTorch original can run it from a venv without JAX. The implementations:

- ``project``: ``healswin_jax.HealSwinUNet`` (this repository; ``spec["repo"]`` is its root);
- ``torch``: ``heal_swin.models_torch.swin_hp_transformer.SwinHPTransformerSys`` of the original HEAL-SWIN,
  imported from the checkout ``spec["repo"]``;
- ``nnx``: ``heal_swin_nnx.HealSwin`` of the HEAL-SWIN-nnx port, imported from ``spec["repo"]/src``.

The spec fixes the model (embed dim, depths, heads, window and patch size, nside, faces, shift strategy,
Swin-V2 cosine attention with post-norm and a relative-position bias, fp32, no dropout) and the timing
(batch, threads, repeats). Timed: the gradient of the mean squared error against a fixed random target w.r.t.
all parameters, after one warm-up call; printed as one JSON line: per-call wall times (ms), the parameter
count, the table/model build time and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time


THIS_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _times(fn, repeats: int) -> tuple[list[float], float]:
  t0 = time.perf_counter()
  fn()
  first = time.perf_counter() - t0
  out = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    out.append(1e3 * (time.perf_counter() - t0))
  return out, first


def run_project(s: dict) -> dict:
  sys.path.insert(0, s["repo"])
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from healswin_jax.config import HealSwinConfig  # pylint: disable=g-import-not-at-top
  from healswin_jax.model import HealSwinUNet, healpix_grid  # pylint: disable=g-import-not-at-top
  cfg = HealSwinConfig(nside=s["nside"], faces=tuple(range(s["faces"])), window_size=s["window_size"],
                       patch_size=s["patch_size"], shift_strategy=s["strategy"], embed_dim=s["embed_dim"],
                       depths=tuple(s["depths"]), num_heads=tuple(s["num_heads"]), attention="v2",
                       rel_pos_bias=True, in_channels=s["in_channels"], num_classes=s["out_channels"],
                       drop_path_rate=0.0)
  t0 = time.perf_counter()
  healpix_grid(cfg)
  build = time.perf_counter() - t0
  model = HealSwinUNet(cfg)
  x = jax.random.normal(jax.random.key(0), (s["batch"], cfg.num_pixels, s["in_channels"]))
  y = jax.random.normal(jax.random.key(1), (s["batch"], cfg.num_pixels, s["out_channels"]))
  params = jax.jit(model.init)(jax.random.key(2), x[:1])["params"]
  grad = jax.jit(jax.grad(lambda p: jnp.mean((model.apply({"params": p}, x) - y) ** 2)))
  times, first = _times(lambda: jax.block_until_ready(grad(params)), s["repeats"])
  n = sum(int(v.size) for v in jax.tree.leaves(params))
  from infra.roofline import compiled_flops  # pylint: disable=g-import-not-at-top
  return dict(ms=times, params=n, build_s=build, first_call_s=first, flops=compiled_flops(grad, params))


def run_torch(s: dict) -> dict:
  sys.path.insert(0, s["repo"])
  import torch  # pylint: disable=g-import-not-at-top
  from heal_swin.data.segmentation.data_spec import DataSpec  # pylint: disable=g-import-not-at-top
  from heal_swin.models_torch import swin_hp_transformer as shp  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(s["threads"])
  torch.manual_seed(0)
  strategy = {"grid": "nest_grid_shift", "ring": "ring_shift"}[s["strategy"]]
  npix = s["faces"] * s["nside"] ** 2
  cfg = shp.SwinHPTransformerConfig(patch_size=s["patch_size"], window_size=s["window_size"],
                                    shift_size=s["window_size"] // 2, shift_strategy=strategy,
                                    rel_pos_bias="flat", embed_dim=s["embed_dim"], depths=list(s["depths"]),
                                    num_heads=list(s["num_heads"]), use_cos_attn=True,
                                    use_v2_norm_placement=True, drop_path_rate=0.0)
  spec = DataSpec(dim_in=npix, f_in=s["in_channels"], f_out=s["out_channels"], base_pix=s["faces"],
                  class_names=[str(i) for i in range(s["out_channels"])])
  t0 = time.perf_counter()
  model = shp.SwinHPTransformerSys(cfg, spec)
  build = time.perf_counter() - t0
  x = torch.randn(s["batch"], s["in_channels"], npix)
  y = torch.randn(s["batch"], s["out_channels"], npix)

  def step():
    model.zero_grad(set_to_none=True)
    torch.mean((model(x) - y) ** 2).backward()

  times, first = _times(step, s["repeats"])
  return dict(ms=times, params=sum(p.numel() for p in model.parameters()), build_s=build, first_call_s=first)


def run_nnx(s: dict) -> dict:
  sys.path.insert(0, os.path.join(s["repo"], "src"))
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from heal_swin_nnx import HealSwin, HealSwinParams  # pylint: disable=g-import-not-at-top
  strategy = {"grid": "nest_grid_shift", "ring": "ring_shift"}[s["strategy"]]
  params = HealSwinParams(nside=s["nside"], in_channels=s["in_channels"], out_channels=s["out_channels"],
                          base_pixels=tuple(range(s["faces"])), patch_size=s["patch_size"],
                          window_size=s["window_size"], embed_dim=s["embed_dim"], depths=tuple(s["depths"]),
                          num_heads=tuple(s["num_heads"]), pos_embed="rel_bias", shift_strategy=strategy,
                          drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0, param_dtype="float32",
                          dtype="float32")
  t0 = time.perf_counter()
  model = HealSwin(params, rngs=nnx.Rngs(0))
  build = time.perf_counter() - t0
  npix = s["faces"] * s["nside"] ** 2
  x = jax.random.normal(jax.random.key(0), (s["batch"], npix, s["in_channels"]))
  y = jax.random.normal(jax.random.key(1), (s["batch"], npix, s["out_channels"]))

  @nnx.jit
  def grad(model, x, y):
    return nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)

  times, first = _times(lambda: jax.block_until_ready(grad(model, x, y)), s["repeats"])
  n = sum(int(v.size) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
  return dict(ms=times, params=n, build_s=build, first_call_s=first)


def run_gemm(s: dict) -> dict:
  sys.path.insert(0, s.get("repo", THIS_REPO))
  from infra.roofline import gemm_gflops  # pylint: disable=g-import-not-at-top
  return dict(gflops=gemm_gflops(s["n"], s["repeats"]))


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--impl", choices=("project", "torch", "nnx", "gemm"), required=True)
  ap.add_argument("--spec", required=True, help="JSON object, see the module docstring")
  args = ap.parse_args()
  spec = json.loads(args.spec)
  out = {"project": run_project, "torch": run_torch, "nnx": run_nnx, "gemm": run_gemm}[args.impl](spec)
  out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print("ANCHOR_RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
  main()
