"""One process of the multi-process test (``tests/test_distributed.py`` launches it; not a test itself).

``python -m tests.distributed_worker --workdir DIR --num_processes N --process_id I --port P --devices D``
runs, with D CPU devices in this process and N processes joined by ``jax.distributed`` (N = 1: no
``jax.distributed``, the reference run):

1. HEAL-SWIN data-parallel training (``healswin_jax.train.train_and_evaluate``, tiny model, global batch 4) in
   ``DIR/healswin``; process 0 saves the final parameters to ``DIR/healswin_params.npz``;
2. an ensemble of 4 MLP members trained by GD with the member axis over all processes' devices
   (``ntk.ensemble.gd_ensemble_snapshots``);

and writes ``DIR/result_<I>.json``: its losses, test metrics and ensemble predictions (each process its own, to
check that the gathered values agree).
"""

from __future__ import annotations

import argparse
import json
import os


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--num_processes", type=int, default=1)
  ap.add_argument("--process_id", type=int, default=0)
  ap.add_argument("--port", type=int, default=0)
  ap.add_argument("--devices", type=int, default=1)
  args = ap.parse_args()

  os.environ["JAX_PLATFORMS"] = "cpu"
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_num_cpu_devices", args.devices)
  jax.config.update("jax_numpy_rank_promotion", "raise")
  from infra import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  if args.num_processes > 1:
    mesh_lib.initialize_distributed(f"127.0.0.1:{args.port}", args.num_processes, args.process_id)
  import numpy as np  # pylint: disable=g-import-not-at-top
  from healswin_jax import train  # pylint: disable=g-import-not-at-top
  from ntk import architectures, ensemble  # pylint: disable=g-import-not-at-top
  from tests.test_healswin_train import tiny_config  # pylint: disable=g-import-not-at-top

  # The tiny U-Net of the training tests; Adam at lr 1e-2 without warmup moves every parameter by ~1e-2 per
  # step, far above float32 round-off.
  c = tiny_config(num_steps=3, **{"optim.lr": 1e-2, "optim.warmup_steps": 0})
  res = train.train_and_evaluate(c, os.path.join(args.workdir, "healswin"))
  if mesh_lib.is_primary():
    leaves = jax.tree_util.tree_flatten_with_path(res.params)[0]
    np.savez(os.path.join(args.workdir, "healswin_params.npz"),
             **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves})

  rng = np.random.default_rng(0)
  x, y, x_eval = rng.normal(size=(8, 3)), rng.normal(size=(8, 2)), rng.normal(size=(5, 3))
  model = architectures.ArchSpec(kind="mlp", width=16, depth=2, out_dim=2).flax()
  preds = ensemble.gd_ensemble_snapshots(model, x.astype(np.float32), y.astype(np.float32),
                                         x_eval.astype(np.float32), [0, 3], lr=0.5, n_members=4,
                                         key=jax.random.key(0), mesh=ensemble.member_mesh())
  out = dict(process_count=jax.process_count(), device_count=jax.device_count(), losses=res.losses.tolist(),
             metrics=res.metrics, ensemble={str(k): v.tolist() for k, v in preds.items()})
  with open(os.path.join(args.workdir, f"result_{args.process_id}.json"), "w") as f:
    json.dump(out, f)


if __name__ == "__main__":
  main()
