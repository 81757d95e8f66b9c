"""One-axis device meshes and the two shardings used on them (replicated; split along the leading axis).

Both training stacks use these: HEAL-SWIN data parallelism (:mod:`healswin_jax.parallel`, axis ``"data"``)
and ensembles sharded over members (:mod:`ntk.ensemble`, axis ``"members"``).
"""

from __future__ import annotations

from typing import Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def mesh_1d(axis: str, num_devices: Optional[int] = None) -> Mesh:
  """A 1-D mesh with axis name ``axis`` over the first ``num_devices`` devices (default: all).

  Raises:
    ValueError: ``num_devices`` is not in ``1..len(jax.devices())``.
  """
  devices = jax.devices()
  n = len(devices) if num_devices is None else num_devices
  if not 1 <= n <= len(devices):
    raise ValueError(f"num_devices={n} but only {len(devices)} devices are available. Fix: ask for 1.."
                     f"{len(devices)} (on CPU, more come from XLA_FLAGS=--xla_force_host_platform_device_count=N).")
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
