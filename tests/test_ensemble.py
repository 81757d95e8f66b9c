"""Vmapped ensembles: == a Python loop over members, == 1 device when sharded, NTK time convention, resume;
GD snapshots == plain GD member by member; the mapped member axis == the vmapped one."""

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
import optax
import pytest

from ntk import ensemble as ens
from ntk import groups
from ntk.architectures import ArchSpec
import neural_tangents as nt  # after ntk (compat layer)

MLP = ArchSpec(kind="mlp", width=16, depth=1, out_dim=3, b_std=0.1)


def _data(key, n=12, shape=(4, 4), classes=3, dtype=jnp.float32):
  kx, ky = jax.random.split(key)
  return jax.random.normal(kx, (n,) + shape, dtype), jax.random.randint(ky, (n,), 0, classes)


def _loop_train(model, tx, member_step, state0, x, y, n_steps):
  """The oracle: each member trained on its own with the (unvmapped, jitted) member step."""
  step = jax.jit(member_step)
  out = []
  for m in range(state0.n_members):
    p, o = ens.member(state0.params, m), ens.member(state0.opt_state, m)
    for s in range(n_steps):
      p, o, _ = step(p, o, state0.member_keys[m], jnp.int32(s), x, y)
    out.append(p)
  return jax.tree.map(lambda *a: jnp.stack(a), *out)


def test_init_member_m_uses_fold_in(key):
  model = MLP.flax()
  x = jnp.ones((2, 4, 4))
  params = ens.init_params(model, key, x, 3)
  for m in range(3):
    ref = model.init(jax.random.fold_in(key, m), x)["params"]
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), ens.member(params, m), ref)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 100, 1000, 4097])
def test_shuffled_positions_is_a_permutation(n, x64):
  """Every key gives a bijection of range(n) (including n that are not powers of two, where the Feistel
  network's larger domain is cycle-walked back into range), computed entry by entry in any order."""
  for seed in range(3):
    perm = np.asarray(ens.shuffled_positions(jax.random.key(seed), jnp.arange(n), n))
    assert perm.dtype == np.int32 and np.array_equal(np.sort(perm), np.arange(n))
    some = np.arange(n)[::-1][: min(n, 7)]
    np.testing.assert_array_equal(np.asarray(ens.shuffled_positions(jax.random.key(seed), jnp.asarray(some), n)),
                                  perm[some])
  with pytest.raises(ValueError, match="n=0 points"):
    ens.shuffled_positions(jax.random.key(0), jnp.arange(1), 0)


def test_shuffled_positions_are_uniform():
  """Where position 0 lands (n = 10, 2,000 keys) passes a chi-square test at p = 0.001, and the orders of 5
  points under 600 keys cover most of the 120 permutations (an identity or a fixed rotation would not)."""
  shuffle = lambda n, count: np.asarray(jax.vmap(lambda k: ens.shuffled_positions(k, jnp.arange(n), n))(
      jax.random.split(jax.random.key(0), count)))
  counts = np.bincount(shuffle(10, 2000)[:, 0], minlength=10)
  assert ((counts - 200.0) ** 2 / 200.0).sum() < 27.88  # chi-square, 9 degrees of freedom, p = 0.001
  assert len({tuple(order) for order in shuffle(5, 600)}) >= 110


def test_minibatches_cover_each_point_once_per_epoch(key):
  """make_member_step's batches: within an epoch disjoint and covering N // batch_size * batch_size points,
  a new order the next epoch."""
  n, b = 23, 5
  seen = []
  loss_fn = lambda ids, y: (seen.append(ids), jnp.sum(ids * 0.0))[1]  # records the batch's point ids
  # The "network" returns its input (the point ids) and ignores its parameter; eager, so the ids are concrete.
  step = ens.make_member_step(lambda p, x: x, optax.sgd(0.0), loss_fn, batch_size=b)
  ids = jnp.arange(n, dtype=jnp.float32)
  for s in range(8):  # two epochs of 4 steps
    step(jnp.float32(0.0), optax.sgd(0.0).init(jnp.float32(0.0)), key, jnp.int32(s), ids, ids)
  epochs = [np.concatenate([np.asarray(a) for a in seen[e * 4:(e + 1) * 4]]).astype(int) for e in range(2)]
  for batch in epochs:
    assert len(set(batch.tolist())) == 4 * b and set(batch.tolist()) <= set(range(n))
  assert not np.array_equal(epochs[0], epochs[1])


@pytest.mark.parametrize("mode", ["gd_mse", "adam_xent_minibatch_aug", "cnn_gd_mse"])
def test_vmapped_ensemble_equals_python_loop(mode, keys, x64):
  model = MLP.flax()
  x, labels = _data(next(keys), dtype=jnp.float64)
  if mode == "cnn_gd_mse":
    model = ArchSpec(kind="cnn", width=4, depth=1, out_dim=3, b_std=0.1, padding="CIRCULAR").flax()
    x = x[..., None]  # NHWC
  if mode in ("gd_mse", "cnn_gd_mse"):
    tx, loss, y, kw = optax.sgd(0.5), ens.mse_loss, jax.nn.one_hot(labels, 3, dtype=jnp.float64), {}
  else:
    group = groups.rotations_c4((4, 4))
    tx, loss, y = optax.adam(1e-2), ens.cross_entropy_loss, labels
    kw = dict(batch_size=5, augment=ens.random_group_augmentation(group))
  member_step = ens.make_member_step(model, tx, loss, **kw)
  n_steps = 6  # > one epoch of 12 // 5 = 2 minibatches
  state = ens.init_state(model, tx, next(keys), x, n_members=4)
  expected = _loop_train(model, tx, member_step, state, x, y, n_steps)
  state, losses = ens.train(state, ens.make_ensemble_step(member_step, steps_per_call=3), x, y,
                            n_steps)
  assert losses.shape == (n_steps, 4) and int(state.step) == n_steps
  assert np.all(np.isfinite(losses))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12), state.params, expected)


@pytest.mark.parametrize("mode", ["gd_mse", "adam_xent_minibatch"])
def test_chunked_broadcast_ensemble_equals_python_loop(mode, keys, x64):
  """The CPU layouts of the vmapped step (members in groups, per-member copies of the data) train the same
  members as one member at a time."""
  model = MLP.flax()
  x, labels = _data(next(keys), dtype=jnp.float64)
  if mode == "gd_mse":
    tx, loss, y, kw = optax.sgd(0.5), ens.mse_loss, jax.nn.one_hot(labels, 3, dtype=jnp.float64), {}
  else:
    tx, loss, y, kw = optax.adam(1e-2), ens.cross_entropy_loss, labels, dict(batch_size=5)
  member_step = ens.make_member_step(model, tx, loss, **kw)
  state = ens.init_state(model, tx, next(keys), x, n_members=4)
  expected = _loop_train(model, tx, member_step, state, x, y, 4)
  _, plain_losses = ens.train(jax.tree.map(jnp.copy, state), ens.make_ensemble_step(member_step, 2), x, y, 4)
  step = ens.make_ensemble_step(member_step, steps_per_call=2, member_chunk=2, broadcast_data=True)
  state, losses = ens.train(state, step, x, y, 4)
  assert losses.shape == (4, 4) and int(state.step) == 4
  np.testing.assert_allclose(losses, plain_losses, rtol=1e-12, atol=1e-12)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12), state.params, expected)


def test_member_chunk_and_broadcast_data_refuse_bad_settings(key):
  model = MLP.flax()
  member_step = ens.make_member_step(model, optax.sgd(0.1), ens.mse_loss)
  x, y = jnp.ones((4, 4, 4)), jnp.ones((4, 3))
  state = ens.init_state(model, optax.sgd(0.1), key, x, 3)
  with pytest.raises(ValueError, match="member_chunk=2 does not divide the 3 members"):
    ens.make_ensemble_step(member_step, member_chunk=2)(state, x, y)
  for bad in (0, 1.5, True):
    with pytest.raises(ValueError, match="member_chunk=.* must be a positive int"):
      ens.make_ensemble_step(member_step, member_chunk=bad)
  with pytest.raises(ValueError, match="member_axis='loop'"):
    ens.make_ensemble_step(member_step, member_axis="loop", member_chunk=1)
  with pytest.raises(ValueError, match="broadcast_data=True applies to member_axis='vmap' only"):
    ens.make_ensemble_step(member_step, member_axis="map", broadcast_data=True)


def test_random_group_augmentation_draws_per_example_elements(key):
  group = groups.rotations_c4((4, 4))
  x = jnp.broadcast_to(jnp.arange(16.0).reshape(1, 4, 4), (64, 4, 4))
  xa, ya = ens.random_group_augmentation(group)(key, x, jnp.arange(64))
  np.testing.assert_array_equal(ya, np.arange(64))  # invariant task: labels untouched
  orbit = np.asarray(group.orbit(x[:1]))[:, 0]  # (4, 4, 4)
  which = [int(np.flatnonzero([np.array_equal(xi, o) for o in orbit])[0]) for xi in np.asarray(xa)]
  assert set(which) == {0, 1, 2, 3}  # 64 draws hit every element of C4


@pytest.mark.slow
def test_sharded_members_match_single_device(keys):
  if len(jax.devices()) < 4:
    pytest.skip("needs 4 (fake) devices; tests/conftest.py sets them up")
  model = MLP.flax()
  x, labels = _data(next(keys))
  tx = optax.adam(1e-2)
  step = ens.make_ensemble_step(ens.make_member_step(model, tx, ens.cross_entropy_loss, batch_size=4),
                                steps_per_call=2)
  key = next(keys)
  mesh = ens.member_mesh(4)
  sharded = ens.init_state(model, tx, key, x, 8, mesh=mesh)
  single = ens.init_state(model, tx, key, x, 8)
  sharded, _ = ens.train(sharded, step, x, labels, 4)
  single, _ = ens.train(single, step, x, labels, 4)
  leaf = jax.tree.leaves(sharded.params)[0]
  assert len(leaf.sharding.device_set) == 4 and leaf.addressable_shards[0].data.shape[0] == 2
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), sharded.params, single.params)
  np.testing.assert_allclose(ens.predict(model, sharded.params, x), ens.predict(model, single.params, x),
                             rtol=1e-6, atol=1e-6)


def test_shard_state_rejects_indivisible_members(key):
  model = MLP.flax()
  state = ens.init_state(model, optax.sgd(1.0), key, jnp.ones((2, 4, 4)), 3)
  with pytest.raises(ValueError, match="split evenly"):
    ens.shard_state(state, ens.member_mesh(2))


def test_full_batch_gd_follows_ntk_time_convention(key, x64):
  """Gradient descent on the linearized network is exactly f_k - y = (I - lr Theta / y.size)^k (f_0 - y);
  for small lr this is neural-tangents' gradient_descent_mse at t = lr * k (same convention as mu_t)."""
  spec = ArchSpec(kind="mlp", width=64, depth=1, out_dim=1)
  model = spec.flax()
  x = jax.random.normal(jax.random.fold_in(key, 1), (6, 3), jnp.float64)
  y = jax.random.normal(jax.random.fold_in(key, 2), (6, 1), jnp.float64)
  apply_fn = ens.as_apply_fn(model)
  params0 = model.init(key, x)["params"]
  f_lin = nt.linearize(apply_fn, params0)
  theta = nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0)(x, None, params0)[..., 0, 0]
  lr, k = 0.05, 200
  state = ens.init_state(model, optax.sgd(lr), key, x, 1)  # starts away from params0: fine for a linear model
  f_0 = np.asarray(ens.predict(f_lin, state.params, x)[0])
  step = ens.make_ensemble_step(ens.make_member_step(f_lin, optax.sgd(lr), ens.mse_loss), steps_per_call=50)
  state, _ = ens.train(state, step, x, y, k)
  f_k = ens.predict(f_lin, state.params, x)[0]
  discrete = y + np.linalg.matrix_power(np.eye(6) - lr * np.asarray(theta) / y.size, k) @ (f_0 - y)
  np.testing.assert_allclose(f_k, discrete, rtol=1e-9, atol=1e-9)
  continuous = nt.predict.gradient_descent_mse(theta, y, diag_reg=0.0)(lr * k, f_0, None)
  wrong_t = nt.predict.gradient_descent_mse(theta, y, diag_reg=0.0)(2 * lr * k, f_0, None)
  err = np.linalg.norm(f_k - continuous) / np.linalg.norm(f_k - f_0)
  assert err < 0.02 and np.linalg.norm(f_k - wrong_t) / np.linalg.norm(f_k - f_0) > 5 * err


def test_resume_from_checkpoint_is_bitwise_identical(keys, tmp_path):
  model = MLP.flax()
  x, labels = _data(next(keys))
  tx = optax.adam(1e-2)
  step = ens.make_ensemble_step(ens.make_member_step(model, tx, ens.cross_entropy_loss, batch_size=4,
                                                     augment=ens.random_group_augmentation(
                                                         groups.rotations_c4((4, 4)))))
  key = next(keys)
  fresh = lambda: ens.init_state(model, tx, key, x, 2)
  straight, _ = ens.train(fresh(), step, x, labels, 8)
  # "Killed" after 4 steps (checkpoint written), then restarted from a fresh init with the same arguments.
  ens.train(fresh(), step, x, labels, 4, checkpoint_dir=str(tmp_path), checkpoint_every=2)
  resumed, losses = ens.train(fresh(), step, x, labels, 8, checkpoint_dir=str(tmp_path), checkpoint_every=2)
  assert losses.shape == (4, 2)  # only the remaining steps ran
  assert int(resumed.step) == 8
  jax.tree.map(np.testing.assert_array_equal, resumed.params, straight.params)
  jax.tree.map(np.testing.assert_array_equal, resumed.opt_state, straight.opt_state)


def test_predict_chunks_match_unchunked(key):
  model = MLP.flax()
  x = jax.random.normal(key, (10, 4, 4))
  params = ens.init_params(model, key, x, 2)
  np.testing.assert_allclose(ens.predict(model, params, x, 3), ens.predict(model, params, x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("member_axis", ["vmap", "map"])
def test_predict_chunks_keep_per_pixel_output_axes(key, member_axis):
  """Dense heads (segmentation: (B, N, C) outputs) must come back (M, B, N, C), chunked or not."""

  class PerPixel(nn.Module):
    @nn.compact
    def __call__(self, x):            # (B, N, 2) -> (B, N, 3)
      return nn.Dense(3)(x)

  model = PerPixel()
  x = jax.random.normal(key, (10, 5, 2))
  params = ens.init_params(model, key, x, 2)
  full = ens.predict(model, params, x)
  assert full.shape == (2, 10, 5, 3)
  np.testing.assert_allclose(ens.predict(model, params, x, 4, member_axis), full, rtol=1e-6, atol=1e-6)


def test_cross_entropy_per_example_and_per_pixel(key):
  """One loss for classifiers (B, C) and per-pixel heads (B, N, C): the mean over every labelled position."""
  logits = jax.random.normal(key, (3, 5, 4))
  labels = jax.random.randint(jax.random.fold_in(key, 1), (3, 5), 0, 4)
  per_pixel = ens.cross_entropy_loss(logits, labels)
  flat = ens.cross_entropy_loss(logits.reshape(15, 4), labels.reshape(15))
  np.testing.assert_allclose(per_pixel, flat, rtol=1e-6)
  ref = -np.mean(np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), np.asarray(labels)[..., None], -1))
  np.testing.assert_allclose(per_pixel, ref, rtol=1e-5)


def test_bad_inputs_raise_clear_errors(key):
  with pytest.raises(ValueError, match="one shape"):
    ens.mse_loss(jnp.ones((3, 1)), jnp.ones((3,)))
  with pytest.raises(ValueError, match="integer labels"):
    ens.cross_entropy_loss(jnp.ones((3, 2)), jnp.ones((3, 2)))
  with pytest.raises(ValueError, match=r"logits.shape\[:-1\]"):
    ens.cross_entropy_loss(jnp.ones((3, 5, 2)), jnp.ones((3,), jnp.int32))
  model = MLP.flax()
  x = jnp.ones((4, 4, 4))
  tx = optax.sgd(0.1)
  state = ens.init_state(model, tx, key, x, 2)
  step = ens.make_ensemble_step(ens.make_member_step(model, tx, ens.cross_entropy_loss, batch_size=8))
  with pytest.raises(ValueError, match="batch_size"):
    ens.train(state, step, x, jnp.zeros((4,), jnp.int32), 1)
  state = ens.init_state(model, tx, key, x, 2)
  with pytest.raises(ValueError, match="calls of 2 steps"):
    ens.train(state, ens.make_ensemble_step(ens.make_member_step(model, tx, ens.cross_entropy_loss), 2), x,
              jnp.zeros((4,), jnp.int32), 3)


def test_diverging_training_fails_fast(key):
  model = MLP.flax()
  x = jax.random.normal(key, (4, 4, 4))
  tx = optax.sgd(1e6)
  state = ens.init_state(model, tx, key, x, 2)
  step = ens.make_ensemble_step(ens.make_member_step(model, tx, ens.mse_loss), steps_per_call=5)
  with pytest.raises(FloatingPointError, match="learning rate"):
    ens.train(state, step, x, jnp.ones((4, 3)), 50)


# -------------------------------------------------------------------------------------------------------------
# gd_ensemble_snapshots and the mapped member axis.


def _plain_gd_predictions(model, key, x, y, x_eval, lr, steps, n_members):
  """The oracle of gd_ensemble_snapshots: member m initialized from fold_in(key, m), then hand-written
  full-batch GD on 0.5 * mean((f - y)^2), predictions recorded at ``steps``."""
  loss = lambda p: 0.5 * jnp.mean((model.apply({"params": p}, x) - y) ** 2)
  gd = jax.jit(lambda p: jax.tree.map(lambda a, g: a - lr * g, p, jax.grad(loss)(p)))
  out = {s: [] for s in steps}
  for m in range(n_members):
    p = model.init(jax.random.fold_in(key, m), x)["params"]
    for s in range(max(steps) + 1):
      if s in out:
        out[s].append(np.asarray(model.apply({"params": p}, x_eval)))
      p = gd(p)
  return {s: np.stack(v) for s, v in out.items()}


@pytest.mark.parametrize("steps_per_call", [None, 1])
def test_gd_snapshots_equal_python_loop_of_single_members(steps_per_call, keys, x64):
  model = MLP.flax()
  x, labels = _data(next(keys), dtype=jnp.float64)
  y = jax.nn.one_hot(labels, 3, dtype=jnp.float64)
  x_eval = jax.random.normal(next(keys), (5, 4, 4), jnp.float64)
  key, lr, steps = next(keys), 0.5, (0, 10, 13)  # auto steps_per_call: 10 for the first segment, 1 for the second
  got = ens.gd_ensemble_snapshots(model, x, y, x_eval, steps, lr, 3, key, steps_per_call=steps_per_call)
  expected = _plain_gd_predictions(model, key, x, y, x_eval, lr, steps, 3)
  assert sorted(got) == list(steps)
  for s in steps:
    assert got[s].shape == (3, 5, 3)
    np.testing.assert_allclose(got[s], expected[s], rtol=1e-10, atol=1e-10)
  assert not np.allclose(got[13], got[10], atol=1e-3)  # training moved the members between snapshots


def test_gd_snapshots_reject_unordered_steps(key):
  model = MLP.flax()
  x, y = jnp.ones((4, 4, 4)), jnp.ones((4, 3))
  for steps in ((), (0, 5, 5), (3, 1), (-1, 2)):
    with pytest.raises(ValueError, match="strictly increasing"):
      ens.gd_ensemble_snapshots(model, x, y, x, steps, 0.1, 2, key)


def test_auto_steps_per_call_divides_the_segment():
  assert [ens.auto_steps_per_call(s) for s in (2000, 700, 40, 7, 1)] == [100, 100, 10, 1, 1]


@pytest.mark.slow
def test_mapped_and_looped_member_axes_equal_vmapped(keys):
  """The lax.map and Python-loop paths (CPU-friendly for CNNs) train and predict the same members as vmap."""
  model = ArchSpec(kind="cnn", width=4, depth=2, out_dim=3, b_std=0.1, readout="flatten").flax()
  x, labels = _data(next(keys), n=8)
  x = x[..., None]  # NHWC
  tx = optax.adam(1e-2)
  member_step = ens.make_member_step(model, tx, ens.cross_entropy_loss, batch_size=4)
  key = next(keys)
  runs = {}
  for axis in ("vmap", "map", "loop"):
    state = ens.init_state(model, tx, key, x, 3)
    runs[axis] = ens.train(state, ens.make_ensemble_step(member_step, 2, member_axis=axis), x, labels, 4)
  vstate, vloss = runs["vmap"]
  for axis in ("map", "loop"):
    mstate, mloss = runs[axis]
    assert mloss.shape == vloss.shape == (4, 3) and int(mstate.step) == 4
    np.testing.assert_allclose(mloss, vloss, rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), mstate.params, vstate.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), mstate.opt_state,
                 vstate.opt_state)
    # Prediction: chunks of 3 (padded for "map", a short last chunk for "loop") over 8 inputs.
    np.testing.assert_allclose(ens.predict(model, mstate.params, x, 3, axis), ens.predict(model, mstate.params, x),
                               rtol=1e-5, atol=1e-6)
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), vstate.params,
                                       ens.init_params(model, key, x, 3)))
  assert max(moved) > 1e-3
  with pytest.raises(ValueError, match="member_axis"):
    ens.make_ensemble_step(member_step, member_axis="pmap")


def test_train_classifiers_snapshots_equal_python_loop_of_single_members(keys, x64):
  """Snapshots at steps (0, 2, 5) of one run: the parameters a member-by-member Python loop reaches at those
  steps (the snapshots neither skip nor repeat a step, minibatch or key), and the final parameters."""
  model = MLP.flax()
  x, y = _data(next(keys), dtype=jnp.float64)
  key = next(keys)
  seen = {}
  params, losses = ens.train_classifiers(
      model, x, y, 3, key, learning_rate=1e-2, batch_size=5, steps=5, steps_per_call=1, snapshot_steps=(0, 2, 5),
      on_snapshot=lambda s, p: seen.__setitem__(s, jax.tree.map(np.array, p)))
  assert sorted(seen) == [0, 2, 5] and losses.shape == (5, 3)
  tx = optax.adam(1e-2)
  member_step = ens.make_member_step(model, tx, ens.cross_entropy_loss, batch_size=5)
  state0 = ens.init_state(model, tx, key, x[:2], 3)
  for s in (0, 2, 5):
    expected = _loop_train(model, tx, member_step, state0, x, y, s)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12), seen[s], expected)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), params, seen[5])
  # epochs=1 is len(x) // batch_size = 2 steps, the same run as steps=2.
  by_epochs, _ = ens.train_classifiers(model, x, y, 3, key, learning_rate=1e-2, batch_size=5, epochs=1)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12), by_epochs, seen[2])
  with pytest.raises(ValueError, match="exactly one"):
    ens.train_classifiers(model, x, y, 2, key, learning_rate=1e-2, batch_size=5, epochs=1, steps=2)
  with pytest.raises(ValueError, match="strictly increasing"):
    ens.train_classifiers(model, x, y, 2, key, learning_rate=1e-2, batch_size=5, steps=2, snapshot_steps=(2, 1),
                          on_snapshot=print)
