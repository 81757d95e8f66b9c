"""Deep ensembles of M finite networks, initialized and trained as one vmapped (or mapped), jitted program.

All members share one Flax module (e.g. ``ArchSpec.flax()``); their parameters and optimizer states are
stacked along a leading *member axis* of size M. Member ``m`` is initialized from
``jax.random.fold_in(key, m)`` and draws its minibatches / augmentations from
``fold_in(member_key[m], step)``, so that

- the vmapped ensemble is exactly the same computation as training the members one by one
  (``tests/test_ensemble.py`` checks it against a Python loop);
- the result does not depend on how the member axis is split over devices (:func:`shard_state` places it
  on a ``Mesh`` with ``NamedSharding``; tested on 4 fake CPU devices against 1);
- a run resumed from a checkpoint (:func:`train` with ``checkpoint_dir``) continues bit-for-bit: the state
  carries the step counter and every random draw is a function of (member key, step).

Training modes (Gerken & Kessel, arXiv 2403.03103, compare the ensemble with the NTK under MSE + gradient
descent only):

- full-batch gradient descent on :func:`mse_loss` = ``||f - y||^2 / (2 * y.size)`` with ``optax.sgd(lr)``:
  neural-tangents' ``gradient_descent_mse_ensemble`` evolves as ``exp(-Theta t / y_train.size)``, so
  ``steps`` steps at learning rate ``lr`` correspond to its time ``t = lr * steps`` (gradient flow is the
  small-lr limit; ``tests/test_ensemble.py`` checks the discrete map on a linearized network exactly);
- minibatch SGD/Adam on :func:`cross_entropy_loss` for classification (``batch_size``: epochs of
  per-member random permutations, the remainder dropped).

Augmentation is either done once on the data (the full orbit, ``ntk.groups.augment_full_orbit``) or per step
by an ``augment(key, x, y) -> (x, y)`` function applied to every member's batch inside the step (e.g.
:func:`random_group_augmentation`: an independent random group element per example, per member, per step).

The member axis runs either vectorized (``member_axis="vmap"``, the default: one batched program, best on
accelerators) or sequentially inside the same jitted program (``"map"``, ``lax.map``: XLA:CPU runs a
convolution vmapped over members as a slow grouped convolution, see :func:`make_ensemble_step`); both give
the same members (``tests/test_ensemble.py``).

:func:`gd_ensemble_snapshots` is the full-batch GD / MSE driver of the regression experiments: it trains M
members and returns their predictions at a list of step counts (to compare with mu_t at ``t = lr * step``).

Shapes: ``x`` is ``(N, ...)`` with the model's input shape, ``y`` is ``(N, out_dim)`` (MSE) or ``(N,)`` int
labels (cross-entropy); ensemble predictions are ``(M, B, out_dim)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
from typing import Any, Callable, Literal, Mapping, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from infra import checkpoint
from infra import mesh as mesh_lib
from ntk.groups import split_orbit

from infra import run_guard

Augment = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
LossFn = Callable[[jax.Array, jax.Array], jax.Array]
MemberAxis = Literal["vmap", "map", "loop"]
MEMBER_AXES = ("vmap", "map", "loop")


def _check_member_axis(member_axis: str) -> None:
  if member_axis not in MEMBER_AXES:
    raise ValueError(f"member_axis={member_axis!r} must be one of {MEMBER_AXES}.")


@flax.struct.dataclass
class EnsembleState:
  """Everything a training run needs to continue; every leaf except ``step`` has a leading member axis M.

  Attributes:
    params: stacked Flax ``params`` trees, leaves ``(M, ...)``.
    opt_state: stacked optax states, leaves ``(M, ...)``.
    member_keys: ``(M, 2)`` uint32 raw PRNG keys, one stream per member (minibatches, augmentation).
    step: ``()`` int32, the number of optimizer steps taken so far.
  """

  params: Any
  opt_state: Any
  member_keys: jax.Array
  step: jax.Array

  @property
  def n_members(self) -> int:
    return self.member_keys.shape[0]


# -------------------------------------------------------------------------------------------------------------
# Losses (per member, on a batch).


def mse_loss(f: jax.Array, y: jax.Array) -> jax.Array:
  """``||f - y||^2 / (2 * y.size)``: the normalization of neural-tangents' MSE dynamics (t = lr * steps)."""
  if f.shape != y.shape:
    raise ValueError(f"MSE needs predictions and targets of one shape, got {f.shape} and {y.shape}; "
                     "regression targets must be (N, out_dim).")
  return 0.5 * jnp.mean((f - y) ** 2)


def cross_entropy_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy over every labelled position: ``logits (B, ..., C)``, integer ``labels (B, ...)``
  (``(B, C)`` / ``(B,)`` for classifiers, ``(B, N, C)`` / ``(B, N)`` for per-pixel heads)."""
  if labels.shape != logits.shape[:-1] or not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"cross-entropy needs integer labels of shape logits.shape[:-1] = {logits.shape[:-1]}, got "
                     f"{labels.dtype} {labels.shape}.")
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


# -------------------------------------------------------------------------------------------------------------
# Initialization and evaluation.


def init_params(model: nn.Module, key: jax.Array, x_example: jax.Array, n_members: int):
  """Stacked ``params`` of M members; member m is ``model.init(fold_in(key, m), x_example)["params"]``."""
  if n_members < 1:
    raise ValueError(f"n_members={n_members} must be >= 1.")
  init_one = lambda m: model.init(jax.random.fold_in(key, m), x_example)["params"]
  return jax.jit(jax.vmap(init_one))(jnp.arange(n_members))


def init_state(model: nn.Module, tx: optax.GradientTransformation, key: jax.Array, x_example: jax.Array,
               n_members: int, *, mesh: Mesh | None = None, axis: str = "members") -> EnsembleState:
  """Initializes M members (params, optimizer states, per-member key streams), optionally sharded over a mesh.

  Args:
    model: the Flax module shared by all members.
    tx: the optax optimizer.
    key: PRNG key; ``fold_in(key, m)`` initializes member m; ``fold_in(split(key)[1], m)`` seeds its data stream.
    x_example: an input batch of the right shape (its values are not used beyond shape inference).
    n_members: M.
    mesh, axis: if given, the member axis is sharded over ``mesh.shape[axis]`` devices (see :func:`shard_state`).
  """
  params = init_params(model, key, x_example, n_members)
  opt_state = jax.jit(jax.vmap(tx.init))(params)
  data_key = jax.random.split(key)[1]  # a stream disjoint from the init keys fold_in(key, m)
  member_keys = jax.vmap(lambda m: jax.random.fold_in(data_key, m))(jnp.arange(n_members))
  state = EnsembleState(params, opt_state, member_keys, jnp.zeros((), jnp.int32))
  return state if mesh is None else shard_state(state, mesh, axis)


def as_apply_fn(model: nn.Module | Callable) -> Callable:
  """``apply_fn(params, x)`` of a Flax module (``model.apply({"params": params}, x)``); callables pass through
  (e.g. a linearized network from ``nt.linearize``)."""
  if isinstance(model, nn.Module):
    return lambda params, x: model.apply({"params": params}, x)
  if callable(model):
    return model
  raise TypeError(f"expected a flax.linen.Module or an apply_fn(params, x), got {type(model).__name__}.")


def apply_members(model: nn.Module | Callable, params, x: jax.Array) -> jax.Array:
  """Predictions of every member, ``(M, B, out_dim)``, for inputs ``x (B, ...)``."""
  apply_fn = as_apply_fn(model)
  return jax.vmap(lambda p: apply_fn(p, x))(params)


def _chunked(x: jax.Array, chunk: int) -> jax.Array:
  """``x (n, ...)`` zero-padded to a multiple of ``chunk`` and split: ``(n_chunks, chunk, ...)``."""
  pad = (-x.shape[0]) % chunk
  return jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)]).reshape((-1, chunk) + x.shape[1:])


def predict(model: nn.Module | Callable, params, x: jax.Array, chunk: int | None = None,
            member_axis: MemberAxis = "vmap") -> jax.Array:
  """Member predictions ``(M, B, *out_shape)``, evaluated over ``x (B, ...)`` in chunks of ``chunk`` inputs.

  ``member_axis="vmap"``: :func:`apply_members` per chunk (all members at once); ``"map"``: members one
  after another (``lax.map``), each over all chunks; ``"loop"``: members and chunks one after another from
  Python, one jitted loop-free program (see :func:`make_ensemble_step` for when each is fastest).
  ``chunk=None``: one chunk of all B inputs.
  """
  _check_member_axis(member_axis)
  if member_axis != "loop":
    return _predict_jit(model, params, x, chunk, member_axis)
  n = x.shape[0]
  step = min(chunk or n, n)
  one = _apply_one_member(model)
  rows = [jnp.concatenate([one(params, i, x[a:a + step]) for a in range(0, n, step)])
          for i in range(_n_members(params))]
  return jnp.stack(rows)


def _n_members(params) -> int:
  return int(jax.tree.leaves(params)[0].shape[0])


@functools.lru_cache(maxsize=32)
def _apply_one_member(model: nn.Module | Callable) -> Callable:
  """Jitted ``(stacked params, i, x) -> predictions of member i`` (i traced: one compilation per shape)."""
  apply_fn = as_apply_fn(model)
  take = lambda i: lambda a: jax.lax.dynamic_index_in_dim(a, i, keepdims=False)
  return jax.jit(lambda params, i, x: apply_fn(jax.tree.map(take(i), params), x))


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _predict_jit(model, params, x, chunk, member_axis):
  n = x.shape[0]
  if member_axis == "map":
    apply_fn = as_apply_fn(model)
    xs = _chunked(x, min(chunk or n, n))

    def per_member(p):
      out = jax.lax.map(lambda xc: apply_fn(p, xc), xs)  # (n_chunks, chunk, *out_shape)
      return out.reshape((-1,) + out.shape[2:])

    return jax.lax.map(per_member, params)[:, :n]
  if chunk is None or n <= chunk:
    return apply_members(model, params, x)
  out = jax.lax.map(lambda xc: apply_members(model, params, xc), _chunked(x, chunk))  # (n_chunks, M, chunk, ...)
  return jnp.moveaxis(out, 0, 1).reshape((out.shape[1], -1) + out.shape[3:])[:, :n]


# -------------------------------------------------------------------------------------------------------------
# Training steps.


def make_member_step(model: nn.Module | Callable, tx: optax.GradientTransformation, loss_fn: LossFn = mse_loss, *,
                     batch_size: int | None = None, augment: Augment | None = None) -> Callable:
  """One optimizer step of ONE member: ``(params, opt_state, member_key, step, x, y) -> (params, opt_state, loss)``.

  Pure and unjitted; :func:`make_ensemble_step` vmaps it over members, the tests loop over it.

  Args:
    model: Flax module, or any ``apply_fn(params, x)``.
    tx: optax optimizer.
    loss_fn: ``(predictions, targets) -> scalar`` (:func:`mse_loss`, :func:`cross_entropy_loss`).
    batch_size: None for full-batch training; else minibatches of this size, taken in order from a random
      permutation of the N training points drawn per member and epoch (``N // batch_size`` steps per epoch;
      :func:`shuffled_positions` computes only the batch's entries of it).
    augment: optional ``(key, x_batch, y_batch) -> (x_batch, y_batch)`` applied to the batch every step.
  """
  apply_fn = as_apply_fn(model)

  def member_step(params, opt_state, member_key, step, x, y):
    if x.shape[0] != y.shape[0]:
      raise ValueError(f"x and y have {x.shape[0]} and {y.shape[0]} examples.")
    # Independent streams for data order (1) and augmentation (0), both functions of (member, step/epoch).
    step_key = jax.random.fold_in(jax.random.fold_in(member_key, 0), step)
    if batch_size is not None:
      n = x.shape[0]
      if not 0 < batch_size <= n:
        raise ValueError(f"batch_size={batch_size} must be in 1..{n} (the number of training points).")
      steps_per_epoch = n // batch_size
      epoch, pos = step // steps_per_epoch, step % steps_per_epoch
      epoch_key = jax.random.fold_in(jax.random.fold_in(member_key, 1), epoch)
      idx = shuffled_positions(epoch_key, pos * batch_size + jnp.arange(batch_size), n)
      x, y = x[idx], y[idx]
    if augment is not None:
      x, y = augment(step_key, x, y)

    def loss_of(p):
      return loss_fn(apply_fn(p, x), y)

    loss, grads = jax.value_and_grad(loss_of)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return member_step


_FEISTEL_ROUNDS = 6


def _mix32(v: jax.Array) -> jax.Array:
  """A 32-bit integer hash (xor-shift-multiply finalizer): the Feistel round function."""
  v = v ^ (v >> 16)
  v = v * jnp.uint32(0x7FEB352D)
  v = v ^ (v >> 15)
  v = v * jnp.uint32(0x846CA68B)
  return v ^ (v >> 16)


def shuffled_positions(key: jax.Array, positions: jax.Array, n: int) -> jax.Array:
  """Entries ``positions`` of a random permutation of ``range(n)`` drawn from ``key``, without building it.

  The permutation is a keyed Feistel network on the smallest ``2^(2h) >= n`` integers (6 rounds, round keys
  from ``key``, :func:`_mix32` as round function), restricted to ``[0, n)`` by cycle walking (re-apply it
  while the value is ``>= n``: a bijection of ``[0, n)`` because every cycle of the larger permutation that
  leaves the range comes back). Cost is ``O(len(positions))`` per call (on average fewer than four walks, since
  ``2^(2h) < 4n``), where ``jax.random.permutation`` sorts all ``n`` points: a minibatch step that takes its
  batch from a per-epoch permutation of a large training set would otherwise spend most of its time sorting.

  Args:
    key: PRNG key; one key is one permutation.
    positions: int array (any shape) of positions in ``[0, n)``.
    n: the number of points (static, ``1 <= n < 2**31``).

  Returns:
    int32 array shaped like ``positions``: ``perm[positions]``.
  """
  if not 1 <= n < 2 ** 31:
    raise ValueError(f"n={n} points: the shuffle needs 1 <= n < 2**31.")
  half = max(1, (max(1, int(n - 1).bit_length()) + 1) // 2)
  mask = jnp.uint32((1 << half) - 1)
  round_keys = jax.random.bits(key, (_FEISTEL_ROUNDS,), jnp.uint32)

  def feistel(v):
    left, right = v >> half, v & mask
    for r in range(_FEISTEL_ROUNDS):
      left, right = right, left ^ (_mix32(right ^ round_keys[r]) & mask)
    return (left << half) | right

  out_of_range = lambda v: jnp.any(v >= n)
  walk = lambda v: jnp.where(v >= n, feistel(v), v)
  v = jax.lax.while_loop(out_of_range, walk, feistel(jnp.asarray(positions).astype(jnp.uint32)))
  return v.astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class EnsembleStep:
  """A jitted ``(state, x, y) -> (state, losses)`` that advances all members by ``steps_per_call`` steps."""

  fn: Callable
  steps_per_call: int

  def __call__(self, state: EnsembleState, x, y):
    return self.fn(state, x, y)


def over_members(member_step: Callable, member_axis: MemberAxis = "vmap", broadcast_data: bool = False) -> Callable:
  """``member_step`` lifted to all members: ``(params, opt_state, member_keys, step, x, y) -> (params,
  opt_state, losses)`` with member-stacked params / optimizer states / keys (axis 0) and shared step and data.

  ``"vmap"`` vectorizes over the members; ``"map"`` runs them one after another with ``lax.map`` (same
  per-member computation and keys, see :func:`make_ensemble_step` for when that is faster).

  ``broadcast_data`` (``"vmap"`` only): give every member its own copy of ``x`` and ``y`` (``(M, N, ...)``,
  M times the data's memory) instead of one shared array. Why: a dense layer applied to a shared input is
  batched by XLA:CPU into one ``(N, D) x (D, M * F)`` matmul, which needs the members' stacked ``(M, D, F)``
  weights (and, in the backward pass, the ``(M, N, F)`` activation gradients) transposed in memory at every
  step; with a per-member input every layer is a batched matmul over the leading member axis on the stacked
  layouts, no transposes (``benchmarks.ensemble_training`` measures both). Same members, same keys.
  """
  _check_member_axis(member_axis)
  if broadcast_data and member_axis != "vmap":
    raise ValueError(f"broadcast_data=True applies to member_axis='vmap' only (got {member_axis!r}); the mapped "
                     "and looped members already read the shared data one member at a time.")
  if member_axis == "vmap":
    if not broadcast_data:
      return jax.vmap(member_step, in_axes=(0, 0, 0, None, None, None))
    per_member_data = jax.vmap(member_step, in_axes=(0, 0, 0, None, 0, 0))

    def vmapped(params, opt_state, member_keys, step, x, y):
      copies = lambda a: jnp.broadcast_to(a, (member_keys.shape[0],) + a.shape)
      return per_member_data(params, opt_state, member_keys, step, copies(x), copies(y))

    return vmapped

  def mapped(params, opt_state, member_keys, step, x, y):
    return jax.lax.map(lambda a: member_step(*a, step, x, y), (params, opt_state, member_keys))

  return mapped


def make_ensemble_step(member_step: Callable, steps_per_call: int = 1,
                       member_axis: MemberAxis = "vmap", member_chunk: int | None = None,
                       broadcast_data: bool = False) -> EnsembleStep:
  """Jitted ``(state, x, y) -> (state, losses)`` doing ``steps_per_call`` steps of ALL members at once.

  The steps are a ``lax.scan`` (one dispatch per call), the input state's buffers are donated, and
  ``losses`` is ``(steps_per_call, M)``: each member's loss before each step. The members (parameters,
  optimizer states and keys along axis 0; data shared) are combined by :func:`over_members`:

  - ``member_axis="vmap"`` (default): vectorized, one batched program -- the right choice for MLPs and on
    accelerators;
  - ``member_axis="map"``: ``lax.map`` over the members inside the same jitted program, one member after
    another. Why: vmapping a CNN over members turns every conv layer after the first into a grouped
    convolution (``feature_group_count = M``), which XLA:CPU runs far slower than M ordinary convolutions
    (seen with the CNN members of ``experiments/rotated_digits.py``).
  - ``member_axis="loop"``: one jitted, loop-free program per member and step, called from Python (members
    stay stacked; member i is read and written in place with a traced index). Why: on XLA:CPU a convolution
    inside any loop (the ``lax.scan`` over steps, ``lax.map`` over members, even a scan of length 1) runs
    far slower than the same step jitted alone, outside any loop (seen with the CNN members of
    ``experiments/rotated_digits.py`` and ``experiments/histology.py``), so for CNN members on CPU this is the
    fastest path. ``steps_per_call`` steps are ``steps_per_call`` Python iterations.

  All three compute the same members with the same keys (equal up to float round-off; tested).

  ``member_chunk`` (``"vmap"`` and ``"map"`` only): the members are taken in consecutive groups of this many
  (M must be a multiple of it), and each group runs its own scan over all ``steps_per_call`` steps, all inside
  the same jitted call. Why: on a CPU the program of all M members at once streams every member's
  weights, gradients and activations through memory at every step (e.g. 100 members of a width-512 MLP hold
  100 MB of hidden-layer weights), while a group of a few members stays in cache for all its steps; the
  members and their keys are unchanged, so the result is the same as without chunking (tested). ``None`` (or
  ``member_chunk >= M``): all M members together (accelerators, and a member axis sharded over devices,
  whose groups would cut across the shards).

  ``broadcast_data``: every member gets its own copy of the shared ``x``, ``y`` (``"vmap"`` only; costs M (or
  ``member_chunk``) copies of the data; see :func:`over_members` for why it is faster on a CPU).
  """
  if steps_per_call < 1:
    raise ValueError(f"steps_per_call={steps_per_call} must be >= 1.")
  if member_chunk is not None and (isinstance(member_chunk, bool) or not isinstance(member_chunk, int)
                                   or member_chunk < 1):
    raise ValueError(f"member_chunk={member_chunk!r} must be a positive int (members per group) or None.")
  if member_axis == "loop" and member_chunk is not None:
    raise ValueError("member_chunk groups vmapped or mapped members; member_axis='loop' already runs them one "
                     "by one, so leave member_chunk=None.")
  all_members = over_members(member_step, member_axis, broadcast_data)  # checks member_axis / broadcast_data
  if member_axis == "loop":
    return _looped_ensemble_step(member_step, steps_per_call)

  def run_steps(params, opt_state, member_keys, step, x, y):
    def body(carry, _):
      params, opt_state, step = carry
      params, opt_state, loss = all_members(params, opt_state, member_keys, step, x, y)
      return (params, opt_state, step + 1), loss

    return jax.lax.scan(body, (params, opt_state, step), None, length=steps_per_call)

  def many_steps(state: EnsembleState, x, y):
    m = state.n_members
    chunk = m if member_chunk is None else min(member_chunk, m)
    if m % chunk:
      raise ValueError(f"member_chunk={chunk} does not divide the {m} members; use a divisor of {m} or None.")
    groups = []
    for a in range(0, m, chunk):  # one scan per group, unrolled
      part = lambda tree: jax.tree.map(lambda leaf: leaf[a:a + chunk], tree)
      groups.append(run_steps(part(state.params), part(state.opt_state), state.member_keys[a:a + chunk],
                              state.step, x, y))
    if len(groups) == 1:
      (params, opt_state, step), losses = groups[0]
    else:
      join = lambda *parts: jnp.concatenate(parts, axis=0)
      params = jax.tree.map(join, *[g[0][0] for g in groups])
      opt_state = jax.tree.map(join, *[g[0][1] for g in groups])
      step = groups[0][0][2]
      losses = jnp.concatenate([g[1] for g in groups], axis=1)
    return state.replace(params=params, opt_state=opt_state, step=step), losses

  return EnsembleStep(jax.jit(many_steps, donate_argnums=(0,)), steps_per_call)


def _looped_ensemble_step(member_step: Callable, steps_per_call: int) -> EnsembleStep:
  """``member_axis="loop"`` of :func:`make_ensemble_step`: members one after another from Python."""

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def one(params, opt_state, member_keys, i, step, x, y):
    take = lambda a: jax.lax.dynamic_index_in_dim(a, i, keepdims=False)
    put = lambda a, v: jax.lax.dynamic_update_index_in_dim(a, v, i, 0)
    p, o, loss = member_step(jax.tree.map(take, params), jax.tree.map(take, opt_state), take(member_keys), step,
                             x, y)
    return jax.tree.map(put, params, p), jax.tree.map(put, opt_state, o), loss

  def many_steps(state: EnsembleState, x, y):
    params, opt_state, step, losses = state.params, state.opt_state, state.step, []
    for _ in range(steps_per_call):
      row = []
      for i in range(state.n_members):
        params, opt_state, loss = one(params, opt_state, state.member_keys, i, step, x, y)
        row.append(loss)
      losses.append(jnp.stack(row))
      step = step + 1
    return state.replace(params=params, opt_state=opt_state, step=step), jnp.stack(losses)

  return EnsembleStep(many_steps, steps_per_call)


def train(state: EnsembleState, ensemble_step: EnsembleStep, x, y, n_steps: int, *,
          checkpoint_dir: str | None = None, checkpoint_every: int = 1000, progress: bool | str = False,
          stamp_fields: Mapping[str, Any] | None = None) -> tuple[EnsembleState, np.ndarray]:
  """Runs ``ensemble_step`` until ``state.step == n_steps`` (absolute), optionally checkpointing and resuming.

  Args:
    state: current state (consumed: its buffers are donated).
    ensemble_step: from :func:`make_ensemble_step`.
    x, y: training data (shared by all members).
    n_steps: the step count to reach; a multiple of ``ensemble_step.steps_per_call`` away from ``state.step``.
    checkpoint_dir: if given, the latest checkpoint there (if any, and not beyond ``n_steps``) is restored
      first, and the state is saved every ``checkpoint_every`` steps and at the end (orbax); a killed run
      restarted with the same arguments ends in the same state. The directory is locked for the call
      (:func:`infra.run_guard.workdir_lock`) and every checkpoint carries a stamp of the training data, M, the
      parameter shapes and ``stamp_fields``; a checkpoint with another stamp is refused before restoring.
    progress: show a tqdm bar (a string is used as its description).
    stamp_fields: what else identifies the run (learning rate, model, seed): JSON-able values.

  Returns:
    ``(state, losses)``; ``losses`` ``(steps_done, M)`` are the per-member losses of the steps run here.

  Raises:
    FloatingPointError: a member's loss became NaN/inf (checked after every call; lower the learning rate).
    infra.run_guard.WorkdirLockedError: another live process trains in ``checkpoint_dir``.
    infra.run_guard.StaleCheckpointError: ``checkpoint_dir`` holds checkpoints of a different run.
  """
  if checkpoint_dir is None:
    return _train(state, ensemble_step, x, y, n_steps, None, checkpoint_every, progress)
  with run_guard.workdir_lock(checkpoint_dir, "ensemble training"):
    fields = dict(stamp_fields or {}, data=run_guard.fingerprint(x, y), n_members=state.n_members,
                  params=[f"{l.dtype}{tuple(l.shape[1:])}" for l in jax.tree.leaves(state.params)])
    return _train(state, ensemble_step, x, y, n_steps, (checkpoint_dir, run_guard.stamp(fields)), checkpoint_every,
                  progress)


def _train(state, ensemble_step, x, y, n_steps, checkpointing, checkpoint_every, progress):
  """:func:`train` inside the directory lock; ``checkpointing`` is ``(directory, stamp)`` or None."""
  steps_per_call = ensemble_step.steps_per_call
  manager = run_stamp = None
  if checkpointing is not None:
    manager = checkpoint.manager(checkpointing[0], asynchronous=True)
    run_stamp = checkpointing[1]
    state = restore_checkpoint(manager, state, max_step=n_steps, run_stamp=run_stamp)  # only ever moves forward
  start = int(state.step)
  if (n_steps - start) % steps_per_call or n_steps < start:
    raise ValueError(f"cannot go from step {start} to {n_steps} in calls of {steps_per_call} steps.")
  calls = range((n_steps - start) // steps_per_call)
  if progress:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    calls = tqdm(calls, desc=progress if isinstance(progress, str) else "ensemble", leave=False)
  losses = []
  save = lambda step, **kw: checkpoint.save(manager, step, state, run_stamp=run_stamp, wait=False, **kw)
  for _ in calls:
    state, loss = ensemble_step(state, x, y)
    losses.append(mesh_lib.to_host(loss))  # gathered from every process
    step = start + len(losses) * steps_per_call
    if not np.all(np.isfinite(losses[-1])):
      bad = np.flatnonzero(~np.all(np.isfinite(losses[-1]), axis=0))
      raise FloatingPointError(f"loss of members {bad.tolist()} is not finite by step {step}; the learning rate "
                               "is probably too large for this width/parameterization.")
    if manager is not None and step % checkpoint_every < steps_per_call:
      save(step)
  if manager is not None:
    if losses and manager.latest_step() != n_steps:
      save(n_steps, force=True)
    manager.wait_until_finished()
    manager.close()
  m = state.n_members
  return state, (np.concatenate(losses) if losses else np.zeros((0, m)))


def auto_steps_per_call(segment: int) -> int:
  """The largest of 100, 10, 1 that divides ``segment``: how many steps one jitted call of
  :func:`gd_ensemble_snapshots` takes to cover a segment between two snapshots exactly."""
  return next(s for s in (100, 10, 1) if segment % s == 0)


def gd_ensemble_snapshots(model: nn.Module, x, y, x_eval, steps: Sequence[int], lr: float, n_members: int,
                          key: jax.Array, *, steps_per_call: int | None = None, mesh: Mesh | None = None,
                          checkpoint_dir: str | None = None, checkpoint_every: int = 1000,
                          progress: bool | str = False, chunk: int | None = 4096) -> dict[int, np.ndarray]:
  """Trains M members by full-batch gradient descent on :func:`mse_loss` and records their predictions.

  The ensemble of the GD-vs-NTK comparisons: ``optax.sgd(lr)`` on ``||f - y||^2 / (2 y.size)``, so that
  ``step`` steps are the infinite ensemble's time ``t = lr * step`` (:func:`ntk.kernels.infinite_ensemble_predict`,
  learning rate e.g. from :func:`ntk.kernels.stable_lr`). Member m is initialized from ``fold_in(key, m)``
  (:func:`init_state`); the result equals training each member on its own (``tests/test_ensemble.py``).

  Args:
    model: the members' Flax module (e.g. ``ArchSpec(...).flax()``, NTK parameterization for the t = lr * steps
      comparison).
    x, y: training data ``(N, ...)``, ``(N, out_dim)``; with full-orbit augmentation
      (:func:`ntk.groups.augment_full_orbit`) the rows are group-major (element g of every input, then g + 1).
    x_eval: evaluation inputs ``(B, ...)``.
    steps: strictly increasing absolute step counts >= 0 (0 = the predictions at initialization).
    lr: learning rate.
    n_members: M.
    key: PRNG key.
    steps_per_call: GD steps per jitted call; every segment between consecutive ``steps`` must be a multiple of
      it. None: per segment, the largest of 100, 10, 1 that divides it (:func:`auto_steps_per_call`).
    mesh: shard the member axis over this mesh (:func:`shard_state`).
    checkpoint_dir, checkpoint_every: checkpoint/resume every segment (:func:`train`); a killed run restarted
      with the same arguments resumes from its latest checkpoint and ends in the same state. The directory is
      locked for the whole call, and a directory written with another lr, model, key, data or M is refused.
    progress: tqdm description (or True).
    chunk: evaluate ``x_eval`` in chunks of this many inputs (:func:`predict`).

  Returns:
    ``{step: (M, B, out_dim) numpy predictions}`` for every entry of ``steps``.
  """
  steps = [int(s) for s in steps]
  if not steps or steps[0] < 0 or any(b <= a for a, b in zip(steps, steps[1:])):
    raise ValueError(f"steps={steps} must be a non-empty, strictly increasing list of step counts >= 0.")
  # One owner for all the segments (the lock is re-entrant, so train() re-taking it is free).
  guard = run_guard.workdir_lock(checkpoint_dir, "ensemble training") if checkpoint_dir else contextlib.nullcontext()
  tx = optax.sgd(lr)
  member_step = make_member_step(model, tx, mse_loss)
  step_fns: dict[int, EnsembleStep] = {}
  key_data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
  stamp_fields = dict(driver="gd_ensemble_snapshots", lr=float(lr),
                      model=re.sub(r" at 0x[0-9a-f]+", "", repr(model)),  # no object addresses
                      key=run_guard.fingerprint(np.asarray(key_data)))
  out = {}
  with guard:
    state = init_state(model, tx, key, x, n_members, mesh=mesh)
    if mesh is not None:  # the shared data replicated on the mesh (across processes: on every process's devices)
      x, y, x_eval = mesh_lib.put((x, y, x_eval), mesh_lib.replicated(mesh))
    for s in steps:
      segment = s - int(state.step)
      if segment > 0:
        spc = steps_per_call or auto_steps_per_call(segment)
        if spc not in step_fns:
          step_fns[spc] = make_ensemble_step(member_step, spc)
        state, _ = train(state, step_fns[spc], x, y, s, checkpoint_dir=checkpoint_dir,
                         checkpoint_every=checkpoint_every, progress=progress, stamp_fields=stamp_fields)
      out[s] = mesh_lib.to_host(predict(model, state.params, x_eval, chunk))
  return out


# -------------------------------------------------------------------------------------------------------------
# Checkpointing (orbax). The state is saved as a plain dict of arrays; optax states are NamedTuples, which we
# flatten to leaves and rebuild from the live state's tree structure on restore.


def restore_checkpoint(manager, state: EnsembleState, max_step: int | None = None,
                       run_stamp: Mapping[str, Any] | None = None) -> EnsembleState:
  """The latest checkpoint of ``manager`` (after ``state.step``, at most ``max_step``) restored onto ``state``'s
  structure and shardings (:mod:`infra.checkpoint`'s layout); ``state`` itself if there is none. With
  ``run_stamp`` (:func:`infra.run_guard.stamp`) the checkpoint's stamp must match it (checked before restoring)."""
  current = int(state.step)
  steps = [s for s in manager.all_steps() if s > current and (max_step is None or s <= max_step)]
  if not steps:
    return state
  if run_stamp is not None:
    checkpoint.check_stamp(manager, max(steps), run_stamp)
  restored, _ = checkpoint.restore(manager, max(steps), state, num_losses=0)
  return restored


# -------------------------------------------------------------------------------------------------------------
# Sharding the member axis.


def shard_state(state: EnsembleState, mesh: Mesh, axis: str = "members") -> EnsembleState:
  """Places every member-axis leaf with ``NamedSharding(mesh, P(axis))`` (the step counter replicated).

  Raises:
    ValueError: M is not divisible by the number of devices along ``axis``.
  """
  mesh_lib.check_axis(mesh, axis)
  n_dev, m = mesh.shape[axis], state.n_members
  if m % n_dev:
    raise ValueError(f"{m} members cannot be split evenly over {n_dev} devices; use a multiple of {n_dev}.")
  split, repl = mesh_lib.split_leading(mesh, axis), mesh_lib.replicated(mesh)
  put = lambda a: mesh_lib.put(a, split)  # every params / opt_state leaf is stacked along the member axis
  return state.replace(params=jax.tree.map(put, state.params), opt_state=jax.tree.map(put, state.opt_state),
                       member_keys=put(state.member_keys), step=mesh_lib.put(state.step, repl))


def member_mesh(n_devices: int | None = None, axis: str = "members") -> Mesh:
  """A 1-D mesh over the first ``n_devices`` devices (all by default; across processes after
  :func:`infra.mesh.initialize_distributed`, all of them) for the member axis."""
  return mesh_lib.mesh_1d(axis, n_devices)


# -------------------------------------------------------------------------------------------------------------
# Utilities.


def random_group_augmentation(group) -> Augment:
  """``augment(key, x, y)`` acting on every example of a batch with its own uniformly random group element.

  Args:
    group: an ``ntk.groups.FiniteGroup`` (``act_x`` / ``act_y`` accept traced element indices).

  Returns:
    ``(key, x (B, *input_shape), y (B, ...)) -> (rho_X(g_b) x_b, rho_Y(g_b) y_b)_b`` with ``g_b`` i.i.d.
    uniform on G (rho_Y is the identity for invariant tasks, so integer labels pass through unchanged).
  """

  def one(g, xi, yi):
    return group.act_x(g, xi[None])[0], group.act_y(g, yi[None])[0]

  def augment(key, x, y):
    g = jax.random.randint(key, (x.shape[0],), 0, group.order)
    return jax.vmap(one)(g, x, y)

  return augment


def train_classifiers(model: nn.Module | Callable, x, y, n_members: int, key: jax.Array, *, learning_rate: float,
                      batch_size: int, epochs: int | None = None, steps: int | None = None,
                      loss_fn: LossFn = cross_entropy_loss, member_axis: MemberAxis = "vmap",
                      steps_per_call: int = 1, snapshot_steps: Sequence[int] = (),
                      on_snapshot: Callable[[int, Any], None] | None = None, progress: bool | str = False):
  """Minibatch Adam on a classification loss for M members, optionally observed at chosen steps.

  Args:
    model: the member network; x: (n, ...) inputs (e.g. a fully augmented training set); y: (n,) int labels
      (or (n, N) per-pixel labels with a per-pixel ``loss_fn``).
    n_members: M; key: PRNG key of the initializations.
    learning_rate, batch_size: the Adam step size (a float or an optax schedule of the step) and minibatch size.
    epochs, steps: the length of training, exactly one of them: ``epochs`` epochs (``len(x) // batch_size`` steps
      each) or ``steps`` optimizer steps.
    loss_fn: ``(logits, labels) -> scalar`` per member (:func:`cross_entropy_loss`).
    member_axis: ``"loop"`` or ``"map"`` (CPU, convolutional members) or ``"vmap"`` (accelerators, and dense
      members such as transformers on CPU), see :func:`make_ensemble_step`.
    steps_per_call: optimizer steps per jitted call; every segment between snapshots must be a multiple of it.
    snapshot_steps: increasing absolute step counts in ``[0, steps]`` (0 = at initialization) at which
      ``on_snapshot(step, params)`` is called with the stacked parameters (``(M, ...)`` leaves) of that moment:
      the hook of training-time curves. Snapshots do not change the trained members (the same steps, keys and
      minibatches as one uninterrupted run). ``on_snapshot`` must use the parameters before it returns: their
      buffers are donated to the next training call.
    progress: tqdm bar (a string is its description).

  Returns:
    ``(params (M, ...), losses (steps, M))``.
  """
  if (epochs is None) == (steps is None):
    raise ValueError(f"epochs={epochs!r}, steps={steps!r}: give exactly one of them (the length of training).")
  n_steps = epochs * (len(x) // batch_size) if steps is None else int(steps)
  snapshot_steps = [int(s) for s in snapshot_steps]
  if any(b <= a for a, b in zip(snapshot_steps, snapshot_steps[1:])) or any(
      not 0 <= s <= n_steps for s in snapshot_steps):
    raise ValueError(f"snapshot_steps={snapshot_steps} must be strictly increasing step counts in [0, {n_steps}].")
  if snapshot_steps and on_snapshot is None:
    raise ValueError("snapshot_steps given without on_snapshot (the function that records them).")
  tx = optax.adam(learning_rate)
  member_step = make_member_step(model, tx, loss_fn, batch_size=batch_size)
  step = make_ensemble_step(member_step, steps_per_call=steps_per_call, member_axis=member_axis)
  state = init_state(model, tx, key, jnp.asarray(x[:2]), n_members)
  x, y = jnp.asarray(x), jnp.asarray(y)
  losses = []
  for target in [s for s in snapshot_steps if s < n_steps] + [n_steps]:
    state, segment = train(state, step, x, y, target, progress=progress)
    losses.append(segment)
    if target in snapshot_steps:
      on_snapshot(target, state.params)
  return state.params, np.concatenate(losses)


def orbit_logits(model: nn.Module | Callable, params, group, x, chunk: int | None = None,
                 member_axis: MemberAxis = "vmap") -> np.ndarray:
  """``(M, |G|, n, *out_shape)`` outputs of every member on the group-major orbit of ``x (n, ...)`` (float32;
  ``out_shape`` is ``(classes,)`` for classifiers, ``(N, classes)`` for dense heads)."""
  orbit = np.asarray(group.orbit(x))  # (|G|, n, ...)
  k, n = orbit.shape[:2]
  flat = jnp.asarray(orbit.reshape((k * n,) + tuple(np.shape(x)[1:])))
  out = np.asarray(predict(model, params, flat, chunk, member_axis))
  return split_orbit(out, k, axis=1)


def sub_ensemble_means(member_preds, size: int) -> np.ndarray:
  """Means of ``M // size`` disjoint sub-ensembles of ``size`` members: ``(M // size, ...)``.

  Averaging a metric over disjoint sub-ensembles (members ``[j*size, (j+1)*size)``) estimates its value for
  an ensemble of ``size`` members with less noise than a single draw (used for error-vs-M curves).

  Args:
    member_preds: ``(M, ...)`` per-member predictions.
    size: sub-ensemble size, ``1 <= size <= M``.
  """
  member_preds = np.asarray(member_preds)
  m = member_preds.shape[0]
  if not 1 <= size <= m:
    raise ValueError(f"sub-ensemble size {size} must be in 1..{m} (the number of members).")
  k = m // size
  return member_preds[: k * size].reshape((k, size) + member_preds.shape[1:]).mean(axis=1)


def member(tree, m: int):
  """Member ``m``'s slice of a stacked tree."""
  return jax.tree.map(lambda a: a[m], tree)
