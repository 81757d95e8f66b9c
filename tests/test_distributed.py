"""Training across processes (``jax.distributed``, gloo collectives on CPU) equals training in one process.

The slow test launches two processes on 127.0.0.1 with two CPU devices each (``tests/distributed_worker.py``)
and, next to them, a one-process, one-device reference run with the same global batch; both train a tiny
HEAL-SWIN data-parallel and a 4-member ensemble with the member axis over all devices.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from infra import mesh as mesh_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _worker(workdir, devices, num_processes=1, process_id=0, port=0):
  env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "tests.distributed_worker", "--workdir", str(workdir), "--devices", str(devices),
         "--num_processes", str(num_processes), "--process_id", str(process_id), "--port", str(port)]
  log = open(os.path.join(workdir, f"log_{process_id}.txt"), "w")
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
  multi, single = tmp_path / "multi", tmp_path / "single"
  multi.mkdir()
  single.mkdir()
  port = _free_port()
  procs = [_worker(multi, 2, 2, i, port) for i in range(2)] + [_worker(single, 1)]
  try:
    codes = [p.wait(timeout=600) for p, _ in procs]
  finally:
    for p, log in procs:
      p.kill()
      log.close()
  for (p, log), code in zip(procs, codes):
    assert code == 0, open(log.name).read()[-3000:]

  results = [json.load(open(multi / f"result_{i}.json")) for i in range(2)]
  ref = json.load(open(single / "result_0.json"))
  assert [r["process_count"] for r in results] == [2, 2] and results[0]["device_count"] == 4
  assert ref["process_count"] == 1 and ref["device_count"] == 1
  # Metrics and ensemble predictions are gathered: every process reports the same values.
  assert results[0] == dict(results[1], process_count=2)
  np.testing.assert_allclose(results[0]["losses"], ref["losses"], rtol=1e-5)
  assert len(set(ref["losses"])) == 3  # three different losses: the parameters moved
  for k, v in ref["metrics"].items():
    np.testing.assert_allclose(results[0]["metrics"][k], v, rtol=1e-4, atol=1e-6, err_msg=k)
  for s, v in ref["ensemble"].items():
    np.testing.assert_allclose(results[0]["ensemble"][s], v, rtol=1e-5, atol=1e-6, err_msg=f"step {s}")
  assert not np.allclose(ref["ensemble"]["0"], ref["ensemble"]["3"])

  # Same parameters to float32 round-off: Adam at lr 1e-2 moved each one by ~1e-2 per step.
  a, b = np.load(multi / "healswin_params.npz"), np.load(single / "healswin_params.npz")
  assert sorted(a.files) == sorted(b.files) and len(a.files) > 10
  diff = max(float(np.abs(a[k] - b[k]).max()) for k in a.files)
  assert diff < 1e-5, diff

  # Files written once: one checkpoint per step (shards of both processes inside), one log line per step.
  run = multi / "healswin"
  assert sorted(os.listdir(run / "checkpoints")) == ["2", "3"]
  lines = [json.loads(l) for l in open(run / "metrics.jsonl")]
  assert [l["step"] for l in lines] == [0, 1, 2, 3] and "final" in lines[-1]


def test_process_rows_and_global_batch_one_process():
  mesh = mesh_lib.mesh_1d("data", 4)
  sharding = NamedSharding(mesh, P("data"))
  assert mesh_lib.process_rows(8, sharding) == slice(0, 8)  # one process holds every row
  x = np.arange(16.0).reshape(8, 2)
  g = mesh_lib.global_batch({"x": x}, sharding, 8)["x"]
  assert g.sharding == sharding and np.array_equal(mesh_lib.to_host(g), x)
  with pytest.raises(ValueError, match="divisible by 4"):
    mesh_lib.process_rows(6, sharding)
  with pytest.raises(ValueError, match="process_rows"):
    mesh_lib.global_batch({"x": x[:4]}, sharding, 8)
  rep = mesh_lib.put({"k": jax.random.key(0), "w": x}, NamedSharding(mesh, P()))
  assert rep["w"].sharding.is_fully_replicated and jax.random.key_data(rep["k"]).shape == (2,)
