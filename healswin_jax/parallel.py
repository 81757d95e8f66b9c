"""Data-parallel training step: jitted loss, gradients and optax update with the batch sharded over a Mesh.

The step is written for the *global* batch (jit + ``NamedSharding``, no ``pmap``): parameters and optimizer
state are replicated, every array in the batch is split along its leading axis over the mesh axis ``"data"``,
and XLA inserts the gradient all-reduce. On one device (``mesh=None``) the same function runs unsharded, so
"1 device equals N devices" is a direct test of the sharding.

Typical use::

  model = HealSwinUNet(cfg)
  state = init_train_state(model, optimizer, jax.random.key(0), example_inputs)
  step = make_train_step(model.apply, segmentation_loss, optimizer, mesh=data_mesh())
  state, metrics = step(state, shard_batch(batch, mesh), jax.random.key(1))   # state is donated
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from infra import mesh as mesh_lib

DATA_AXIS = "data"
PyTree = Any


@flax.struct.dataclass
class TrainState:
  """What a train step carries: step counter, parameters and optimizer state (a pytree)."""
  step: jax.Array
  params: PyTree
  opt_state: PyTree


def init_train_state(model, optimizer: optax.GradientTransformation, key: jax.Array, example_inputs: jax.Array,
                     mesh: Optional[Mesh] = None) -> TrainState:
  """Initialises parameters (float32) with ``model.init`` on ``example_inputs`` and the optimizer state.

  With a mesh the state is placed replicated on it, ready for :func:`make_train_step`.
  """
  # Jitted: eager init dispatches every op separately, which is several times slower for a Swin U-Net.
  params = jax.jit(model.init)(key, example_inputs)["params"]
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))
  return replicate(state, mesh) if mesh is not None else state


def data_mesh(num_devices: Optional[int] = None) -> Mesh:
  """A 1-D mesh with axis ``"data"`` over the first ``num_devices`` devices (default: all, of every process
  after :func:`infra.mesh.initialize_distributed`)."""
  return mesh_lib.mesh_1d(DATA_AXIS, num_devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return mesh_lib.replicated(mesh)


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over ``"data"``, all other axes whole."""
  return mesh_lib.split_leading(mesh, DATA_AXIS)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
  """Places every leaf of ``tree`` (the same on every process) fully replicated on ``mesh``."""
  return mesh_lib.put(tree, replicated(mesh))


def shard_batch(batch: PyTree, mesh: Mesh) -> PyTree:
  """Splits every leaf of the global ``batch`` along its leading axis over ``mesh`` (the size must divide
  evenly). Across processes each one copies only its own rows; to load only those rows in the first place,
  use :func:`local_batch_rows` and :func:`infra.mesh.global_batch`."""
  n = mesh.shape[DATA_AXIS]
  leaves = jax.tree_util.tree_leaves(batch)
  for leaf in leaves:
    if np.ndim(leaf) == 0 or np.shape(leaf)[0] % n:
      raise ValueError(f"batch leaf of shape {np.shape(leaf)} cannot be split over {n} devices. Fix: use a "
                       f"global batch size divisible by {n}.")
  if jax.process_count() == 1:
    return jax.device_put(batch, batch_sharded(mesh))
  num_rows = np.shape(leaves[0])[0]
  rows = local_batch_rows(num_rows, mesh)
  return mesh_lib.global_batch(jax.tree.map(lambda x: np.asarray(x)[rows], batch), batch_sharded(mesh), num_rows)


def local_batch_rows(global_batch_size: int, mesh: Mesh) -> slice:
  """The rows of a global batch that this process's devices hold (all rows with one process)."""
  return mesh_lib.process_rows(global_batch_size, batch_sharded(mesh))


def make_train_step(apply_fn: Callable[..., Any],
                    loss_fn: Callable[[Any, Mapping[str, Any]], Any],
                    optimizer: optax.GradientTransformation,
                    mesh: Optional[Mesh] = None,
                    *,
                    inputs_key: str = "inputs",
                    donate: bool = True) -> Callable[[TrainState, Mapping[str, Any], jax.Array],
                                                     tuple[TrainState, dict[str, jax.Array]]]:
  """Builds the jitted ``step(state, batch, key) -> (state, metrics)``.

  Args:
    apply_fn: a Flax ``model.apply``; it is called as
      ``apply_fn({"params": params}, batch[inputs_key], deterministic=False, rngs={"dropout": k})``.
    loss_fn: ``loss_fn(outputs, batch)`` -> scalar loss, or ``(loss, metrics)`` with a dict of scalar metrics.
      It sees the global batch (means over the batch are global means, whatever the mesh).
    optimizer: an optax transformation (its state lives in ``TrainState.opt_state``).
    mesh: a 1-D mesh with axis ``"data"`` (:func:`data_mesh`): the batch is sharded over it and the state
      replicated. None runs on the default device without sharding constraints.
    inputs_key: the batch entry passed to the model.
    donate: donate the incoming state's buffers to the update (the caller must not reuse ``state``).

  Returns:
    ``step(state, batch, key)``. The dropout key of step t is ``fold_in(key, t)``, so a fixed ``key`` gives a
    fresh, reproducible dropout pattern every step. Metrics contain ``loss`` (before the update), ``grad_norm``,
    ``param_norm`` (global norm of the updated parameters; inf in float32 when they are NaN/inf or beyond
    ~1e19) and whatever ``loss_fn`` returns.
  """

  def step(state: TrainState, batch: Mapping[str, Any], key: jax.Array):
    rng = jax.random.fold_in(key, state.step)

    def objective(params):
      outputs = apply_fn({"params": params}, batch[inputs_key], deterministic=False, rngs={"dropout": rng})
      out = loss_fn(outputs, batch)
      loss, metrics = out if isinstance(out, tuple) else (out, {})
      return loss, metrics

    (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # param_norm is of the *updated* parameters: the loss only sees the parameters before the update, so
    # without it a diverging last update (or one just before a checkpoint) would go unnoticed.
    metrics = dict(metrics, loss=loss, grad_norm=optax.global_norm(grads), param_norm=optax.global_norm(params))
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  donate_argnums = (0,) if donate else ()
  if mesh is None:
    return jax.jit(step, donate_argnums=donate_argnums)
  mesh_lib.check_axis(mesh, DATA_AXIS)
  rep, shard = replicated(mesh), batch_sharded(mesh)
  return jax.jit(step, in_shardings=(rep, shard, rep), out_shardings=(rep, rep), donate_argnums=donate_argnums)


# Jitted init / step / predict functions, reused by later runs in the same process with the same model,
# optimizer and mesh (a resumed run, the settings of one experiment, tests): compiling dominates small runs.
_COMPILED: dict[Any, Any] = {}


def compiled(key, build: Callable[[], Any]):
  """``build()`` once per hashable ``key`` (at most 32 kept; the cache is cleared when full)."""
  if key not in _COMPILED:
    if len(_COMPILED) >= 32:
      _COMPILED.clear()
    _COMPILED[key] = build()
  return _COMPILED[key]
