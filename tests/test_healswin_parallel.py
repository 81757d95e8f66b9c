"""Data-parallel train step: a 4-device Mesh (fake CPU devices) gives the same parameters as 1 device."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from healswin_jax import parallel
from healswin_jax.config import HealSwinConfig
from healswin_jax.model import HealSwinUNet

# Dropout and drop-path are on: with partitionable threefry the global dropout pattern does not depend on how
# the batch is sharded, so the two runs must agree anyway.
CFG = HealSwinConfig(nside=8, embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=4, num_classes=3,
                     drop_rate=0.1, drop_path_rate=0.1)


def _loss(outputs, batch):
  ce = optax.softmax_cross_entropy_with_integer_labels(outputs, batch["labels"]).mean()
  return ce, {"accuracy": jnp.mean(jnp.argmax(outputs, -1) == batch["labels"])}


def _train(params, mesh, optimizer, batch, steps=2):
  model = HealSwinUNet(CFG)
  params = jax.tree_util.tree_map(jnp.copy, params)  # the step donates its state
  state = parallel.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))
  step = parallel.make_train_step(model.apply, _loss, optimizer, mesh)
  if mesh is not None:
    state, batch = parallel.replicate(state, mesh), parallel.shard_batch(batch, mesh)
  history = []
  for _ in range(steps):
    state, metrics = step(state, batch, jax.random.key(1))
    history.append(jax.device_get(metrics))
  return state, history, step


@pytest.fixture(scope="module")
def batch():
  x = jax.random.normal(jax.random.key(2), (4, CFG.num_pixels, 3))
  return {"inputs": x, "labels": jax.random.randint(jax.random.key(3), (4, CFG.num_pixels), 0, 3)}


@pytest.mark.slow
def test_four_devices_equal_one(batch):
  assert jax.device_count() >= 4, "conftest provides 4 fake CPU devices"
  mesh = parallel.data_mesh(4)
  optimizer = optax.sgd(0.1, momentum=0.9)
  p0 = parallel.init_train_state(HealSwinUNet(CFG), optimizer, jax.random.key(0), batch["inputs"][:1]).params
  s1, h1, _ = _train(p0, None, optimizer, batch)
  s4, h4, step = _train(p0, mesh, optimizer, batch)
  assert int(s4.step) == 2 and set(h4[0]) == {"loss", "grad_norm", "param_norm", "accuracy"}
  for a, b in zip(h1, h4):
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
    np.testing.assert_allclose(a["grad_norm"], b["grad_norm"], rtol=1e-4)
  moved = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree_util.tree_leaves(s1.params),
                                                          jax.tree_util.tree_leaves(p0)))
  assert moved > 1e-2  # the steps really changed the parameters
  # Same parameters up to float32 reassociation of the gradient all-reduce: 1e-4 of how far the steps moved.
  diff = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree_util.tree_leaves(s1.params),
                                                         jax.tree_util.tree_leaves(s4.params)))
  assert diff < 1e-4 * moved, (diff, moved)
  # Params come back replicated over the mesh; the step compiled once for both calls.
  leaf = jax.tree_util.tree_leaves(s4.params)[0]
  assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 4
  assert step._cache_size() == 1


def test_batch_must_divide_devices(batch):
  with pytest.raises(ValueError, match="divisible by 4"):
    parallel.shard_batch({"inputs": batch["inputs"][:3]}, parallel.data_mesh(4))
  with pytest.raises(ValueError, match="only"):
    parallel.data_mesh(64)
