"""train_and_evaluate: resume (in-process and after SIGKILL) equals an uninterrupted run, NaN stop, corrupt
checkpoints, losses, schedule, and the shared evaluation pixels of sphere and flat predictions."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from healswin_jax import evaluation
from healswin_jax import losses
from healswin_jax import tasks
from healswin_jax import run_config
from healswin_jax import train
from healswin_jax.model import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**over) -> ml_collections.ConfigDict:
  c = run_config.base_config()
  c.progress = False
  c.num_steps = 6
  c.batch_size = 4
  c.eval_batch_size = 2
  c.checkpoint_every = 2
  c.log_every = 1
  c.data.update(num_train=8, num_test=2, nside=8, image_width=32, image_height=24)
  c.model.update(embed_dim=8, depths=(1, 1), num_heads=(1, 2), mlp_ratio=1.0)
  for k, v in over.items():
    node = c
    *path, leaf = k.split(".")
    for p in path:
      node = node[p]
    node[leaf] = v
  return c


def _params_equal(a, b):
  return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b)))


@pytest.mark.slow
def test_resume_after_interrupt_equals_uninterrupted(tmp_path):
  cfg = tiny_config()
  ref = train.train_and_evaluate(cfg, str(tmp_path / "ref"))
  assert train.train_and_evaluate(cfg, str(tmp_path / "cut"), stop_after=3) is None
  assert sorted(os.listdir(tmp_path / "cut" / "checkpoints")) [-1] == "3"
  res = train.train_and_evaluate(cfg, str(tmp_path / "cut"))
  assert res.metrics == ref.metrics
  assert _params_equal(res.params, ref.params)
  np.testing.assert_array_equal(res.losses, ref.losses)
  recs = [json.loads(line) for line in open(tmp_path / "cut" / "metrics.jsonl")]
  assert [r["step"] for r in recs if "loss" in r] == list(range(6))  # every step logged exactly once
  assert recs[-1]["final"] == res.metrics
  # Re-running a finished workdir restores the final checkpoint and reproduces the metrics without training.
  again = train.train_and_evaluate(cfg, str(tmp_path / "cut"))
  assert again.metrics == ref.metrics
  # A different configuration refuses to resume.
  with pytest.raises(ValueError, match="different run.*optim"):
    train.train_and_evaluate(tiny_config(**{"optim.lr": 1e-2}), str(tmp_path / "cut"))


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
  # A checkpoint after every step (~0.3 s each) leaves a wide window to kill the run between checkpoint 2 and
  # the end; checkpoint_every does not change the numbers, so the in-process runs reuse compiled steps.
  cfg = tiny_config(checkpoint_every=1)
  work = tmp_path / "killed"
  script = ("import json, sys, ml_collections\n"
            "from healswin_jax import train\n"
            "cfg = ml_collections.ConfigDict(json.loads(sys.argv[1]))\n"
            "train.train_and_evaluate(cfg, sys.argv[2])\n")
  proc = subprocess.Popen([sys.executable, "-c", script, cfg.to_json(), str(work)], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  ckpt = work / "checkpoints"
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    steps = [int(d) for d in os.listdir(ckpt) if d.isdigit()] if ckpt.exists() else []
    steps = [s for s in steps if s >= 2]
    if steps:
      break
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
  done = max(int(d) for d in os.listdir(ckpt) if d.isdigit())
  assert 2 <= done < 6
  res = train.train_and_evaluate(cfg, str(work))
  ref = train.train_and_evaluate(tiny_config(), str(tmp_path / "ref"))
  assert res.metrics == ref.metrics
  np.testing.assert_array_equal(res.losses, ref.losses)
  assert _params_equal(res.params, ref.params)


@pytest.mark.slow
def test_nan_loss_stops_with_step_number(tmp_path):
  cfg = tiny_config()
  data = tasks.build_data(cfg)
  data.train["inputs"][:] = np.nan
  with pytest.raises(FloatingPointError, match="at step 0"):
    train.train(cfg, str(tmp_path), data, build_model(train.model_config(cfg, data)))


def test_corrupt_checkpoint_gives_clear_error(tmp_path):
  cfg = tiny_config()
  train.train_and_evaluate(cfg, str(tmp_path))
  last = tmp_path / "checkpoints" / "6"
  for dirpath, _, files in os.walk(last):
    for f in files:
      with open(os.path.join(dirpath, f), "wb") as fh:
        fh.write(b"garbage")
  with pytest.raises(train.CheckpointError, match="checkpoints/6.*delete"):
    train.train_and_evaluate(cfg, str(tmp_path))


def test_losses_against_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 3)).astype(np.float32)
  labels = rng.integers(0, 3, (2, 5))
  w = np.array([0.5, 1.0, 2.0], np.float32)
  mask = (rng.uniform(size=(2, 5)) > 0.3).astype(np.float32)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]
  expect = (w[labels] * mask * nll).sum() / (w[labels] * mask).sum()
  got = losses.weighted_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(w), jnp.asarray(mask))
  np.testing.assert_allclose(losses.weighted_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), None,
                                                           jnp.asarray(w[labels] * mask)), expect, rtol=1e-5)
  np.testing.assert_allclose(got, expect, rtol=1e-5)
  t = rng.uniform(1, 10, (2, 7)).astype(np.float32)
  m = np.ones_like(t)
  # SILog is scale invariant for lam = 1 and gives sqrt(1 - lam) |c| for a global log shift c.
  np.testing.assert_allclose(losses.silog_loss(jnp.log(t) + 0.3, jnp.log(t), m, lam=1.0), 0.0, atol=1e-3)
  np.testing.assert_allclose(losses.silog_loss(jnp.log(t) + 0.3, jnp.log(t), m), np.sqrt(0.15) * 0.3, rtol=1e-4)
  m[0, :3] = 0
  p = t + np.where(m > 0, 0.0, 100.0)  # huge errors only where masked out
  np.testing.assert_allclose(losses.masked_mse(jnp.asarray(p), jnp.asarray(t), jnp.asarray(m)), 0.0)
  # Per-example weights broadcast over the trailing axes; no mask is the plain mean.
  w = np.array([0.25, 2.0], np.float32)
  d2 = (p - t) ** 2
  np.testing.assert_allclose(losses.masked_mse(jnp.asarray(p), jnp.asarray(t), jnp.asarray(w)),
                             0.5 * (w[:, None] * d2).sum() / (7 * w.sum()), rtol=1e-6)
  np.testing.assert_allclose(losses.masked_mse(jnp.asarray(p), jnp.asarray(t)), 0.5 * d2.mean(), rtol=1e-6)
  np.testing.assert_allclose(losses.masked_mse(jnp.asarray(p), jnp.asarray(t), jnp.zeros(2)), 0.0)
  cw = tasks.class_weights(np.array([0, 0, 0, 1]), 3, "enet")
  np.testing.assert_allclose(cw, 1 / np.log(1.02 + np.array([0.75, 0.25, 0.0])), rtol=1e-6)


def test_schedule_and_batches():
  opt = ml_collections.ConfigDict(dict(name="adam", lr=1e-3, warmup_steps=10, final_lr_ratio=0.1,
                                       weight_decay=0.0, grad_clip=0.0))
  _, sched = train.make_optimizer(opt, 100)
  assert float(sched(0)) == 0.0 and float(sched(10)) == pytest.approx(1e-3)
  assert float(sched(100)) == pytest.approx(1e-4)
  a = [train.batch_indices(3, s, 10, 4) for s in range(2)]
  np.testing.assert_array_equal(a[0], train.batch_indices(3, 0, 10, 4))
  assert not set(a[0]) & set(a[1])  # one epoch draws without replacement


def test_sphere_and_flat_are_scored_on_the_same_pixels():
  """Perfect predictions: flat scores 1; the sphere's back-projection loses only nearest-neighbour error, on
  exactly the coverage pixels."""
  sph_cfg = tiny_config()
  flat_cfg = tiny_config()
  flat_cfg.model = run_config.flat_model_config(sph_cfg.model)
  sph = tasks.build_data(sph_cfg)
  flat = tasks.build_data(flat_cfg)
  k = sph.num_classes
  flat_out = np.eye(k, dtype=np.float32)[flat.test["targets"]]
  m_flat = evaluation.evaluate(flat_cfg, flat, flat_out)
  assert m_flat["miou_backprojected"] == 1.0
  sph_out = np.eye(k, dtype=np.float32)[sph.test["targets"]]
  m_sph = evaluation.evaluate(sph_cfg, sph, sph_out)
  assert m_sph["miou_sphere"] == 1.0
  proj = sph.projections[0]
  back = np.stack([proj.to_image(y) for y in sph.test_sphere["labels"]])
  agree = (back == sph.test_flat["labels"])[:, proj.image_mask].mean()
  assert m_sph["pixel_accuracy_backprojected"] == pytest.approx(agree)
  assert 0.6 < agree < 1.0  # nside 8 is coarser than the 32 x 24 image: nearest-neighbour error shows


def test_segmentation_loss_mask_carries_class_weights_and_coverage():
  ign = tasks.build_data(tiny_config())
  void = tasks.build_data(tiny_config(**{"loss.outside_image": "void"}))
  proj = ign.projections[0]
  y = ign.train["targets"]
  w = tasks.class_weights(y, ign.num_classes, "enet")
  np.testing.assert_allclose(void.train["mask"], w[y])
  w_in = tasks.class_weights(y[:, proj.sphere_mask], ign.num_classes, "enet")  # frequencies where the loss counts
  np.testing.assert_allclose(ign.train["mask"], w_in[y] * proj.sphere_mask)
  assert (ign.train["mask"][:, ~proj.sphere_mask] == 0).all() and (y[:, ~proj.sphere_mask] == 0).all()
  with pytest.raises(ValueError, match="outside_image"):
    tasks.build_data(tiny_config(**{"loss.outside_image": "drop"}))


def test_base_config_model_defaults_come_from_healswin_config():
  """One source of model defaults: every model field base_config does not scale down for CPU runs is
  HealSwinConfig's default, and the fields the data decide (nside, faces, ...) live only in config.data."""
  from healswin_jax.config import HealSwinConfig  # pylint: disable=g-import-not-at-top
  model = run_config.base_config().model.to_dict()
  defaults = HealSwinConfig().to_dict()
  assert not set(model) & set(run_config.DATA_MODEL_FIELDS)
  assert set(model) == set(defaults) - set(run_config.DATA_MODEL_FIELDS) | {"kind"}
  cpu_scale = {"embed_dim", "depths", "num_heads", "window_size", "mlp_ratio", "drop_path_rate"}
  for k in set(model) - cpu_scale - {"kind"}:
    assert model[k] == (tuple(defaults[k]) if isinstance(defaults[k], list) else defaults[k]), k
  assert run_config.base_config().data.nside == HealSwinConfig().nside
