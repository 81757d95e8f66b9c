"""Who owns a run directory, and which run wrote its checkpoints.

Two guards shared by the HEAL-SWIN training loop and the ensemble trainer:

* :func:`workdir_lock` -- a lock file ``<dir>/.lock`` holding the owner's pid, host and start time, taken with
  ``fcntl.flock``. A second run on the same directory is refused with a message naming the owner while the owner
  lives; the kernel drops the lock when the owner dies (SIGKILL included), so the next run takes it over without
  anyone deleting files. Re-entrant within one process (a driver that calls the trainer several times).
* :func:`stamp` / :func:`check_stamp` -- a config hash stored *inside each checkpoint* (orbax
  ``custom_metadata``, written atomically with the arrays), compared before anything is restored.

Under ``jax.distributed`` only process 0 takes the lock (all processes of one run share the directory). A side file
  next to the checkpoints can go missing or be overwritten by another run; the stamp travels with the step.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import socket
import sys
import threading
from typing import Any, Iterator, Mapping

LOCK_NAME = ".lock"
_held: dict[str, list] = {}     # realpath -> [open file, depth] for the locks this process holds
_held_guard = threading.Lock()


class WorkdirLockedError(RuntimeError):
  """Another live process owns the directory."""


class StaleCheckpointError(ValueError):
  """The directory holds checkpoints of a different run (config, data or ensemble size)."""


def _owner_text(path: str) -> str:
  try:
    with open(path) as f:
      owner = json.load(f)
    return f"pid {owner.get('pid')} on host {owner.get('host')!r} (since {owner.get('since')})"
  except (OSError, ValueError):
    return "another process (its lock file is being written)"


def _secondary_process() -> bool:
  """True in a jax.distributed run on every process but process 0 (jax is only consulted if already imported)."""
  jax = sys.modules.get("jax")
  return jax is not None and jax.process_count() > 1 and jax.process_index() != 0


@contextlib.contextmanager
def workdir_lock(directory: str, what: str = "run") -> Iterator[str]:
  """Holds ``directory``'s lock for the block; yields the lock file's path.

  Raises:
    WorkdirLockedError: another live process holds it; the message names its pid and host and the fix.
  """
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, LOCK_NAME)
  if _secondary_process():  # under jax.distributed the primary process owns the directory for all of them
    yield path
    return
  key = os.path.realpath(path)
  with _held_guard:
    if key in _held:
      _held[key][1] += 1
    else:
      f = open(path, "a+")  # pylint: disable=consider-using-with  (closed on release)
      try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError:
        f.close()
        raise WorkdirLockedError(
            f"{directory} is in use by {_owner_text(path)} (lock file {path}). Two {what}s on one directory "
            f"would overwrite each other's checkpoints and logs. Fix: wait for that {what} to finish or stop "
            f"it, or use another directory.") from None
      f.seek(0)
      f.truncate()
      json.dump(dict(pid=os.getpid(), host=socket.gethostname(),
                     since=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), what=what), f)
      f.flush()
      _held[key] = [f, 1]
  try:
    yield path
  finally:
    with _held_guard:
      _held[key][1] -= 1
      if _held[key][1] == 0:
        f = _held.pop(key)[0]
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()


def fingerprint(*arrays) -> str:
  """sha256 (hex, 16 chars) of arrays' dtypes, shapes and bytes: identifies training data in a stamp."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  h = hashlib.sha256()
  for a in arrays:
    a = np.ascontiguousarray(np.asarray(a))
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def stamp(fields: Mapping[str, Any]) -> dict[str, Any]:
  """The stamp stored with each checkpoint: ``{"fields": ..., "hash": sha256 of their canonical JSON}``.

  ``fields`` must be JSON-serializable (a config's ``to_dict()``, numbers, strings, :func:`fingerprint`);
  nested mappings are flattened to dotted keys (``optim.lr``) so that a mismatch names the leaf.
  """
  fields = _flatten(json.loads(json.dumps(dict(fields), sort_keys=True, default=repr)))
  digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
  return {"fields": fields, "hash": digest}


def check_stamp(saved: Mapping[str, Any] | None, current: Mapping[str, Any], where: str) -> None:
  """Refuses to resume from checkpoint ``where`` unless its stamp equals ``current`` (from :func:`stamp`).

  Raises:
    StaleCheckpointError: the stamp is missing or differs; the message names the differing fields, the old and
      new values and the fix.
  """
  if not saved or "hash" not in saved:
    raise StaleCheckpointError(
        f"checkpoint {where} carries no run stamp (written by an older version or another tool), so it cannot "
        "be matched to this run's configuration. Fix: use a fresh directory, or delete the old checkpoints.")
  if saved["hash"] == current["hash"]:
    return
  old, new = saved.get("fields", {}), current["fields"]
  diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
  shown = "; ".join(f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}" for k in diff[:8])
  raise StaleCheckpointError(
      f"checkpoint {where} was written by a different run (fields {diff} differ: {shown}). Resuming would "
      "continue the other run (or report its results). Fix: use a fresh directory (workdir= in fit, --workdir "
      "on the command line), or restore the original settings to resume.")
