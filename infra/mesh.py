"""One-axis device meshes over every process's devices, the two shardings used on them (replicated; split along
the leading axis), and what training across processes needs: ``jax.distributed`` start-up, global arrays from
per-process data, gathering results back to every host.

Both training stacks use these: HEAL-SWIN data parallelism (:mod:`healswin_jax.parallel`, axis ``"data"``)
and ensembles sharded over members (:mod:`ntk.ensemble`, axis ``"members"``).

One program runs in each process (one per host, or one per GPU); :func:`initialize_distributed` connects them,
after which ``jax.devices()`` lists *all* processes' devices and a ``Mesh`` over them spans the cluster. A jitted
step with ``NamedSharding`` inputs then runs as one SPMD program: XLA inserts the cross-process collectives
(NCCL on GPU, ICI on TPU, gloo over TCP on CPU). What each process must do differently from a one-process run:

- build global arrays from what it holds: :func:`process_rows` says which rows of a batch its devices own,
  :func:`global_batch` assembles the global array from those rows (nothing else is loaded or sent), and
  :func:`put` places host values that every process has (replicated parameters, shared data) on a sharding;
- read results back with :func:`to_host` (an all-gather over processes when the array is not fully addressable);
- write files once: :func:`is_primary` (process 0) writes logs and figures; Orbax checkpoints are saved by all
  processes together (each writes the shards it owns, replicated arrays once).

With one process every function here reduces to the plain single-host call, so library code uses them
unconditionally.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

PyTree = Any


def initialize_distributed(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
                           process_id: Optional[int] = None,
                           local_device_ids: Optional[Sequence[int]] = None) -> bool:
  """Connects this process to the others with ``jax.distributed.initialize``; returns whether it is one of
  several processes.

  Must run before any JAX computation. Arguments left None are read from the environment variables
  ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``; if those
  are unset too, ``jax.distributed.initialize()`` auto-detects them on Cloud TPU pods, SLURM and Open MPI
  (``mpirun``) jobs. On CPU the cross-process collectives are gloo over TCP. Calling it again is a no-op.
  """
  if jax.distributed.is_initialized():
    return jax.process_count() > 1
  env = os.environ
  coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
  if num_processes is None and env.get("JAX_NUM_PROCESSES"):
    num_processes = int(env["JAX_NUM_PROCESSES"])
  if process_id is None and env.get("JAX_PROCESS_ID"):
    process_id = int(env["JAX_PROCESS_ID"])
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id, local_device_ids=local_device_ids)
  return jax.process_count() > 1


def is_primary() -> bool:
  """Whether this process writes the run's files (logs, metrics, figures): process 0."""
  return jax.process_index() == 0


def mesh_1d(axis: str, num_devices: Optional[int] = None) -> Mesh:
  """A 1-D mesh with axis name ``axis`` over the first ``num_devices`` devices (default: all, of every process
  after :func:`initialize_distributed`).

  Across processes the mesh must take every device (a process without a device in the mesh would have nothing
  to run); ``jax.devices()`` lists each process's devices contiguously, so a batch split over the mesh gives
  each process a contiguous block of rows (:func:`process_rows`).

  Raises:
    ValueError: ``num_devices`` is not in ``1..len(jax.devices())``, or leaves out devices of some process.
  """
  devices = jax.devices()
  n = len(devices) if num_devices is None else num_devices
  if not 1 <= n <= len(devices):
    raise ValueError(f"num_devices={n} but only {len(devices)} devices are available. Fix: ask for 1.."
                     f"{len(devices)} (on CPU, more come from XLA_FLAGS=--xla_force_host_platform_device_count=N).")
  if jax.process_count() > 1 and n != len(devices):
    raise ValueError(f"num_devices={n} leaves out some of the {len(devices)} devices of the "
                     f"{jax.process_count()} processes. Fix: use all devices (num_devices=None) across processes.")
  return Mesh(np.asarray(devices[:n]), (axis,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array."""
  return NamedSharding(mesh, PartitionSpec())


def split_leading(mesh: Mesh, axis: str) -> NamedSharding:
  """The leading array axis split over mesh axis ``axis``, all other axes whole."""
  return NamedSharding(mesh, PartitionSpec(axis))


def check_axis(mesh: Mesh, axis: str) -> None:
  """Raises a ValueError naming the fix when ``mesh`` has no axis ``axis``."""
  if axis not in mesh.axis_names:
    raise ValueError(f"mesh has axes {tuple(mesh.axis_names)}, not {axis!r}. Fix: build it with "
                     f"infra.mesh.mesh_1d({axis!r}).")


def process_rows(num_rows: int, sharding: NamedSharding) -> slice:
  """The rows ``[start, stop)`` of a ``(num_rows, ...)`` array sharded along axis 0 by ``sharding`` that live on
  this process's devices -- the only rows this process needs to load.

  Raises:
    ValueError: the rows cannot be split evenly, or this process's rows are not one contiguous block.
  """
  n = sharding.mesh.size
  if num_rows % n:
    raise ValueError(f"{num_rows} rows cannot be split over {n} devices. Fix: use a global batch size "
                     f"divisible by {n}.")
  blocks = sorted({(idx[0].start or 0, idx[0].stop if idx[0].stop is not None else num_rows)
                   for idx in sharding.addressable_devices_indices_map((num_rows,)).values()})
  start, stop = blocks[0][0], blocks[-1][1]
  if sum(b - a for a, b in blocks) != stop - start:
    raise ValueError(f"process {jax.process_index()} holds rows {blocks}, not one contiguous block; build the mesh "
                     "over jax.devices() in order (mesh_1d).")
  return slice(start, stop)


def global_batch(local: PyTree, sharding: NamedSharding, num_rows: int) -> PyTree:
  """Assembles global ``(num_rows, ...)`` arrays sharded by ``sharding`` from this process's rows
  ``local[k] = global[k][process_rows(num_rows, sharding)]``; with one process, a plain ``device_put``."""
  rows = process_rows(num_rows, sharding)

  def one(x):
    x = np.asarray(x)
    if x.shape[0] != rows.stop - rows.start:
      raise ValueError(f"process {jax.process_index()} passed {x.shape[0]} rows, but its devices hold rows "
                       f"{rows.start}:{rows.stop} of {num_rows}. Fix: load exactly process_rows(...) of the batch.")
    return jax.make_array_from_process_local_data(sharding, x, (num_rows,) + x.shape[1:])

  return jax.tree.map(one, local)


def put(tree: PyTree, sharding: NamedSharding) -> PyTree:
  """Places host values that every process holds identically (parameters, shared data) on ``sharding``.

  With one process this is ``jax.device_put``; across processes each process copies only the slices its own
  devices hold (``make_array_from_callback``), so no data crosses the network.
  """
  if sharding.is_fully_addressable:
    return jax.device_put(tree, sharding)

  def one(x):
    if isinstance(x, jax.Array) and x.sharding == sharding:
      return x
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):  # typed PRNG keys
      return jax.random.wrap_key_data(one(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    host = np.asarray(x.addressable_data(0) if isinstance(x, jax.Array) and not x.is_fully_addressable else x)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

  return jax.tree.map(one, tree)


def to_host(tree: PyTree) -> PyTree:
  """Numpy copies of (possibly cross-process) arrays, the same on every process: arrays whose shards live on
  other processes are all-gathered first."""

  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)

  return jax.tree.map(one, tree)
