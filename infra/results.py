"""Run records as data: ``results/<experiment>/<variant>.json``.

A record is one JSON object::

  {"experiment": str, "variant": str, "metrics": {name: float}, "config": {...}, "wall_s": float,
   "jax_version": str, "cpu_count": int, "date_utc": "YYYY-MM-DDTHH:MM:SSZ",
   "git_commit": short hash or null, "git_dirty": bool or null, "argv": [str] (optional)}

``variant`` is the record's name: the variant, ``quick`` or ``<variant>-quick`` for a plain run, or the NAME
given to ``--record NAME`` (required when ``--set`` overrides are present, so that e.g. a depth run is not
recorded as the segmentation one).

:func:`record` writes one (the experiment CLI does it after a successful run given ``--record``);
:func:`load` reads one back. ``git_commit`` / ``git_dirty`` are null when the code does not run from a git
checkout (or git is missing); ``git_dirty`` is true when tracked files differ from the commit.
"""

from __future__ import annotations

import datetime
import json
import numbers
import os
import subprocess
from typing import Any, Mapping, Sequence

import numpy as np

# The repository's results folder (this file lives in <repo>/infra/).
DEFAULT_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")


def flat_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
  """Validates and converts a metrics mapping to ``{name: float}``.

  Raises:
    TypeError: a value is not a real scalar (lists, arrays with more than one element, strings) -- metrics
      files are flat dicts of named numbers so that runs can be compared by key.
  """
  out = {}
  for k, v in metrics.items():
    if isinstance(v, (np.ndarray, np.generic)) or hasattr(v, "__array__"):
      arr = np.asarray(v)
      if arr.size != 1:
        raise TypeError(f"metric {k!r} has shape {arr.shape}; metrics must be scalars (split it into keys).")
      v = arr.reshape(()).item()
    if isinstance(v, bool):
      v = int(v)
    if not isinstance(v, numbers.Real):
      raise TypeError(f"metric {k!r} = {v!r} is not a number.")
    out[str(k)] = float(v)
  return out


def _git(*args: str) -> str | None:
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=30, check=True)
  except (OSError, subprocess.SubprocessError):
    return None
  return out.stdout.strip()


def git_state() -> tuple[str | None, bool | None]:
  """``(short commit hash, dirty)`` of the checkout this code runs from; ``(None, None)`` outside git."""
  commit = _git("rev-parse", "--short", "HEAD")
  if not commit:
    return None, None
  status = _git("status", "--porcelain", "--untracked-files=no")
  return commit, (None if status is None else bool(status))


def _plain(config: Any) -> Any:
  """A ConfigDict / mapping / sequence as JSON-ready Python values (tuples become lists)."""
  if hasattr(config, "to_dict"):
    config = config.to_dict()
  if isinstance(config, Mapping):
    return {str(k): _plain(v) for k, v in config.items()}
  if isinstance(config, (list, tuple)):
    return [_plain(v) for v in config]
  if isinstance(config, (np.ndarray, np.generic)):
    return _plain(config.tolist())
  if config is None or isinstance(config, (str, bool, int, float)):
    return config
  raise TypeError(f"config value {config!r} ({type(config).__name__}) cannot be written to a results record; "
                  f"use numbers, strings, booleans, None, lists or nested configs.")


def path(experiment: str, variant: str, root: str | None = None) -> str:
  """``<root>/<experiment>/<variant>.json`` (root defaults to the repository's ``results/``)."""
  for what, name in (("experiment", experiment), ("variant", variant)):
    if not name or os.sep in name or name.startswith("."):
      raise ValueError(f"{what} name {name!r} is not a plain file name; use letters, digits, '_' or '-'.")
  return os.path.join(root or DEFAULT_ROOT, experiment, variant + ".json")


def record(experiment: str, variant: str, metrics: Mapping[str, Any], config: Any, wall_s: float, *,
           root: str | None = None, argv: Sequence[str] | None = None) -> str:
  """Writes the record of one run to :func:`path` (overwriting an older one); returns the path.

  ``variant`` is the record's name (the file name without ``.json``); ``argv`` (optional) the command-line
  arguments of the run.
  """
  import jax  # pylint: disable=g-import-not-at-top  (only the version string; keeps this module light)
  commit, dirty = git_state()
  rec = {
      "experiment": experiment,
      "variant": variant,
      "metrics": flat_metrics(metrics),
      "config": _plain(config),
      "wall_s": float(wall_s),
      "jax_version": jax.__version__,
      "cpu_count": os.cpu_count(),
      "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
      "git_commit": commit,
      "git_dirty": dirty,
  }
  if argv is not None:
    rec["argv"] = [str(a) for a in argv]
  out = path(experiment, variant, root)
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, "w") as f:
    json.dump(rec, f, indent=2, sort_keys=True, allow_nan=True)
    f.write("\n")
  return out


def load(experiment: str, variant: str, root: str | None = None) -> dict[str, Any]:
  """Reads the record written by :func:`record`.

  Raises:
    FileNotFoundError: no record yet; the message names the command that writes it.
  """
  p = path(experiment, variant, root)
  if not os.path.exists(p):
    raise FileNotFoundError(f"no results record {p}. Fix: run `python -m experiments.{experiment} "
                            f"--variant ... --record` (quick runs: `--quick --record`) to write it.")
  with open(p) as f:
    return json.load(f)
