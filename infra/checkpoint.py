"""Orbax checkpoints of both training stacks (HEAL-SWIN's ``train`` / ``fit`` and ``ntk.ensemble``), one layout.

A checkpoint ``<directory>/<step>/`` holds one Orbax ``StandardSave`` item::

  {"state": <the training state pytree>, "losses": float32 (n,)}

(``losses``: the per-step losses a trainer keeps with its state; absent where it keeps none, as Orbax does not
write empty arrays) and the custom
metadata ``{"run_stamp": ...}`` (:func:`infra.run_guard.stamp`) that the resume guard compares, through
:func:`check_stamp`, before anything is restored. The two most recent checkpoints are kept.

Restoring goes into the structure, shapes, dtypes and shardings of a given ``like`` tree (arrays or
``jax.ShapeDtypeStruct``), so a state sharded over a mesh comes back sharded the same way.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import numpy as np

from infra import run_guard


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be restored."""


def _ocp():
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top  (slow import, only when used)
  return ocp


def manager(directory: str, *, max_to_keep: int = 2, asynchronous: bool = False):
  """An Orbax ``CheckpointManager`` over ``directory`` (created if missing).

  ``asynchronous=True`` writes in a background thread (call ``wait_until_finished()`` before reading or
  exiting); the default writes before :func:`save` returns.
  """
  ocp = _ocp()
  return ocp.CheckpointManager(os.path.abspath(directory),
                               options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                                    enable_async_checkpointing=asynchronous),
                               item_handlers=ocp.StandardCheckpointHandler())


def path(mngr, step: int) -> str:
  return os.path.join(str(mngr.directory), str(int(step)))


def save(mngr, step: int, state, losses=None, run_stamp: Mapping[str, Any] | None = None, *,
         force: bool = True, wait: bool = True) -> None:
  """Writes checkpoint ``step``: ``state``, ``losses`` (None: empty) and ``run_stamp`` in its metadata.

  ``wait=False`` returns while an asynchronous manager still writes (see :func:`manager`).
  """
  item = dict(state=state)
  if losses is not None and np.size(losses):
    item["losses"] = np.asarray(losses, np.float32)
  mngr.save(int(step), args=_ocp().args.StandardSave(item), force=force,
            custom_metadata={} if run_stamp is None else {"run_stamp": run_stamp})
  if wait:
    mngr.wait_until_finished()


def unreadable(where: str, e: Exception) -> CheckpointError:
  return CheckpointError(
      f"checkpoint {where} cannot be restored ({type(e).__name__}: {str(e)[:300]}). It is corrupt or was "
      f"written by a different model/config. Fix: delete {where} to resume from an earlier checkpoint, or "
      f"start over with a fresh --workdir (restoring by hand: pass like= with the structure that was saved).")


def check_stamp(mngr, step: int, run_stamp: Mapping[str, Any]) -> None:
  """Compares the stamp stored inside checkpoint ``step`` with ``run_stamp`` before anything is restored.

  Raises:
    CheckpointError: the checkpoint's metadata cannot be read.
    infra.run_guard.StaleCheckpointError: no stamp, or another one (names the differing fields).
  """
  where = path(mngr, step)
  try:
    saved = (mngr.metadata(int(step)).custom_metadata or {}).get("run_stamp")
  except Exception as e:  # pylint: disable=broad-except  (unreadable metadata = corrupt checkpoint)
    raise unreadable(where, e) from None
  run_guard.check_stamp(saved, run_stamp, where)


def abstract(like):
  """``like`` as ``jax.ShapeDtypeStruct`` leaves that keep each array's sharding (None for host arrays)."""
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype, sharding=getattr(a, "sharding", None)),
                      like)


def restore(mngr, step: int, like, num_losses: int | None = None) -> tuple[Any, np.ndarray]:
  """``(state, losses)`` of checkpoint ``step``, restored into ``like``'s structure (see :func:`abstract`).

  Args:
    mngr: from :func:`manager`.
    step: which checkpoint.
    like: a pytree with the saved structure, shapes and dtypes (arrays, or ``ShapeDtypeStruct`` with
      shardings).
    num_losses: length of the saved ``losses`` (None: read from the checkpoint's metadata).

  Raises:
    CheckpointError: unreadable, another structure, or a ``state.step`` that is not ``step`` (the message
      names the checkpoint's path and the fix).
  """
  where = path(mngr, step)
  if num_losses is None:
    try:
      meta = mngr.item_metadata(int(step))
      num_losses = int(np.prod(meta["losses"].shape)) if meta and "losses" in meta else 0
    except Exception:  # pylint: disable=broad-except  (the restore below reports unreadable checkpoints)
      num_losses = 0
  target = dict(state=abstract(like))
  if num_losses:
    target["losses"] = np.zeros(num_losses, np.float32)
  try:
    out = mngr.restore(int(step), args=_ocp().args.StandardRestore(target))
  except Exception as e:  # orbax raises many types for unreadable files; all mean the same to the user
    # "from None": orbax's own chained tracebacks run to thousands of lines and bury this message.
    raise unreadable(where, e) from None
  saved_step = getattr(out["state"], "step", None)
  if saved_step is not None and int(saved_step) != int(step):
    raise CheckpointError(f"checkpoint {where} holds step {int(saved_step)}, not {step}; it is corrupt. "
                          f"Fix: delete {where} or use a fresh workdir.")
  return out["state"], np.asarray(out.get("losses", np.zeros(0, np.float32)))
