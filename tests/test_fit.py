"""healswin_jax.fit: the library training entry equals a hand-written optax loop, resumes, and refuses another
model's checkpoints; public checkpoint save/restore round-trips."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from healswin_jax import train as train_lib
from healswin_jax.fit import fit, restore_checkpoint, save_checkpoint


class _MLP(nn.Module):
  @nn.compact
  def __call__(self, x, deterministic=True):
    return nn.Dense(2)(jnp.tanh(nn.Dense(16)(x)))


class _Gelu(nn.Module):
  @nn.compact
  def __call__(self, x, deterministic=True):
    return nn.Dense(2)(nn.gelu(nn.Dense(16)(x)))


class _Relu(nn.Module):  # the same parameter shapes as _Gelu
  @nn.compact
  def __call__(self, x, deterministic=True):
    return nn.Dense(2)(nn.relu(nn.Dense(16)(x)))


def _data(n=12, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 5)).astype(np.float32)
  return x, np.stack([np.sin(x[:, 0]), x[:, 1] * x[:, 2]], -1).astype(np.float32)


def test_fit_equals_a_hand_written_optax_loop_and_learns():
  x, y = _data()
  model, steps, bs, lr = _MLP(), 40, 4, 1e-2
  res = fit(model, x, y, num_steps=steps, batch_size=bs, lr=lr, seed=3)
  # The oracle: the same init key, batches and constant-lr Adam, written out.
  params = model.init(jax.random.fold_in(jax.random.key(3), 0), jnp.asarray(x[:1]))["params"]
  tx = optax.adam(lr)
  opt = tx.init(params)
  losses = []
  for step in range(steps):
    idx = train_lib.batch_indices(3, step, len(x), bs)
    lval, g = jax.value_and_grad(lambda p: 0.5 * jnp.mean((model.apply({"params": p}, x[idx]) - y[idx]) ** 2))(params)
    upd, opt = tx.update(g, opt, params)
    params = optax.apply_updates(params, upd)
    losses.append(float(lval))
  np.testing.assert_allclose(res.losses, losses, rtol=2e-5, atol=1e-7)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), res.params, params)
  # It learns: the fitted model beats the constant (mean) predictor on the training set.
  mse = np.mean((res.predict(x) - y) ** 2)
  assert mse < 0.5 * np.mean((y - y.mean(0)) ** 2)


def test_fit_resumes_and_refuses_another_models_checkpoints(tmp_path):
  x, y = _data()
  work = str(tmp_path / "run")
  first = fit(_Gelu(), x, y, num_steps=4, batch_size=4, workdir=work, checkpoint_every=2)
  again = fit(_Gelu(), x, y, num_steps=4, batch_size=4, workdir=work, checkpoint_every=2)  # restores step 4
  np.testing.assert_array_equal(again.losses, first.losses)
  jax.tree.map(np.testing.assert_array_equal, again.params, first.params)
  # Same parameter shapes, another function: refused, naming the model and the fix for library users.
  with pytest.raises(ValueError, match=r"different run \(fields \['model_identity\..*workdir= in fit"):
    fit(_Relu(), x, y, num_steps=4, batch_size=4, workdir=work, checkpoint_every=2)
  with pytest.raises(ValueError, match=r"different run \(fields \['optim\.lr'\]"):
    fit(_Gelu(), x, y, num_steps=4, batch_size=4, workdir=work, checkpoint_every=2, lr=3e-3)


def test_fit_names_bad_arrays():
  x, y = _data()
  with pytest.raises(ValueError, match="targets has 11"):
    fit(_MLP(), x, y[:11], num_steps=1, batch_size=2)
  with pytest.raises(ValueError, match=r"outputs \(B, 2\) but targets are \(n, 2, 1\)"):
    fit(_MLP(), x, y[..., None], num_steps=1, batch_size=2)
  with pytest.raises(ValueError, match="integer targets"):
    fit(_MLP(), x, y, num_steps=1, batch_size=2, loss="cross_entropy")


def test_cross_entropy_with_mask_uses_only_weighted_examples():
  x, _ = _data()
  labels = (x[:, 0] > 0).astype(np.int32)
  mask = np.ones(len(x), np.float32)
  mask[::2] = 0.0
  res = fit(_MLP(), x, labels, num_steps=3, batch_size=12, loss="cross_entropy", mask=mask, lr=1e-2)
  # Full batch: step 0's loss is the mean cross-entropy of the odd examples at initialization.
  p0 = _MLP().init(jax.random.fold_in(jax.random.key(0), 0), jnp.asarray(x[:1]))["params"]
  logits = np.asarray(_MLP().apply({"params": p0}, x))[1::2]
  ref = -float(np.mean(np.asarray(jax.nn.log_softmax(logits))[np.arange(len(logits)), labels[1::2]]))
  assert res.losses[0] == pytest.approx(ref, rel=1e-5)


def test_save_and_restore_checkpoint_round_trip(tmp_path):
  state = {"params": {"w": np.arange(6.0, dtype=np.float32).reshape(2, 3)}, "step": np.int32(7)}
  assert restore_checkpoint(str(tmp_path), state) is None
  save_checkpoint(str(tmp_path), 7, state, losses=np.array([1.0, 0.5], np.float32))
  step, got, losses = restore_checkpoint(str(tmp_path), jax.tree.map(np.zeros_like, state))
  assert step == 7
  np.testing.assert_array_equal(got["params"]["w"], state["params"]["w"])
  np.testing.assert_array_equal(losses, [1.0, 0.5])
  with pytest.raises(train_lib.CheckpointError, match="checkpoints/7.*like="):
    restore_checkpoint(str(tmp_path), {"other": np.zeros(3, np.float32)})
