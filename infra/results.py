"""Run records as data: ``results/<experiment>/<variant>.json``.

A record is one JSON object::

  {"experiment": str, "variant": str, "metrics": {name: float}, "config": {...}, "wall_s": float,
   "jax_version": str, "cpu_count": int, "date_utc": "YYYY-MM-DDTHH:MM:SSZ",
   "git_commit": short hash or null, "git_dirty": bool or null, "argv": [str] (optional),
   "git_at_write": {"commit": ..., "dirty": ...} (only when the checkout changed while the run was going)}

``variant`` is the record's name: the variant, ``quick`` or ``<variant>-quick`` for a plain run, or the NAME
given to ``--record NAME`` (required when ``--set`` overrides are present, so that e.g. a depth run is not
recorded as the segmentation one).

:func:`record` writes one (the experiment CLI does it after a successful run given ``--record``);
:func:`load` reads one back. ``git_commit`` / ``git_dirty`` are null when the code does not run from a git
checkout (or git is missing); ``git_dirty`` is true when tracked files differ from the commit. They describe the
checkout when the run started (the code that ran, given ``launch_git``); a record written after the checkout moved
or was edited names that state too (``git_at_write``), so a record never silently claims code it did not run.
"""

from __future__ import annotations

import datetime
import difflib
import json
import numbers
import os
import re
import string
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
           root: str | None = None, argv: Sequence[str] | None = None,
           launch_git: tuple[str | None, bool | None] | None = None) -> str:
  """Writes the record of one run to :func:`path` (overwriting an older one); returns the path.

  ``variant`` is the record's name (the file name without ``.json``); ``argv`` (optional) the command-line
  arguments of the run; ``launch_git`` the :func:`git_state` taken when the run started (default: now).
  """
  import jax  # pylint: disable=g-import-not-at-top  (only the version string; keeps this module light)
  now = git_state()
  commit, dirty = now if launch_git is None else launch_git
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
  if tuple(now) != (commit, dirty):
    rec["git_at_write"] = {"commit": now[0], "dirty": now[1]}
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


# -------------------------------------------------------------------------------------------------------------
# README tables generated from the records.
#
# README.md marks each generated table with a pair of comments,
#
#   <!-- results:NAME -->
#   | ... the table, rewritten by `python -m infra.results --readme` ... |
#   <!-- /results:NAME -->
#
# and ``results/tables.json`` (:data:`TABLES_SPEC`, the one place that says what each table shows) maps NAME to
#
#   {"record": "<experiment>/<record name>",          the record the cells read unless they name another
#    "header": ["column", ...],
#    "rows": [["cell template", ...], ...]}           or {"record": "...", "cells": [...]} for a row of its own
#
# A cell template is text with ``{key:format}`` fields (Python format specs, e.g. ``{miou_sphere:.3f}``,
# ``{wall_s:,.0f}``); ``key`` is a metric of the record, or a top-level number of it (``wall_s``, ``cpu_count``);
# ``{key@experiment/name:format}`` reads another record; ``{key~mean@experiment/a,b,c:format}`` (or ``~std``, the
# sample standard deviation, ddof 1; ``~min``, ``~max``) aggregates the key over several records of one
# experiment, e.g. the runs of different seeds.
#
# A number in the README's prose is generated the same way: ``<!-- value:TEMPLATE -->0.93<!-- /value -->`` on one
# line, where TEMPLATE is a cell template whose fields name their record (``{acc@rotated_digits/default:.2f}``);
# the text between the two comments is rewritten, and ``--check`` and the test report it when it is stale.

REPO_ROOT = os.path.dirname(DEFAULT_ROOT)
README = os.path.join(REPO_ROOT, "README.md")
TABLES_SPEC = os.path.join(DEFAULT_ROOT, "tables.json")
# Markers stand on lines of their own (a marker quoted inside text is not one).
_BLOCK = re.compile(r"^<!-- results:([\w-]+) -->\n(.*?)^<!-- /results:\1 -->$", re.S | re.M)
_OPEN = re.compile(r"^<!-- results:([\w-]+) -->$", re.M)
_VALUE = re.compile(r"<!-- value:(.+?) -->(.*?)<!-- /value -->")


def load_ref(ref: str, root: str | None = None, _cache: dict | None = None) -> dict[str, Any]:
  """The record ``"<experiment>/<record name>"`` (see :func:`load`)."""
  if ref.count("/") != 1:
    raise ValueError(f"record reference {ref!r} must be '<experiment>/<record name>', e.g. 'histology/quick'.")
  if _cache is not None and ref in _cache:
    return _cache[ref]
  rec = load(*ref.split("/"), root=root)
  if _cache is not None:
    _cache[ref] = rec
  return rec


_AGGREGATES = {"mean": np.mean, "std": lambda v: np.std(v, ddof=1), "min": np.min, "max": np.max}


class _CellFormatter(string.Formatter):
  """Resolves ``{key}`` / ``{key@experiment/name}`` fields against results records."""

  def __init__(self, table: str, default_ref: str | None, root: str | None, cache: dict):
    super().__init__()
    self.table, self.default_ref, self.root, self.cache = table, default_ref, root, cache

  def get_field(self, field_name, args, kwargs):
    key, _, ref = field_name.partition("@")
    key, _, agg = key.partition("~")
    ref = ref or self.default_ref
    if not ref:
      raise ValueError(f"table {self.table!r}: field {{{field_name}}} names no record and the table or row has no "
                       f"'record'. Fix: add \"record\" to the table in {TABLES_SPEC} or write {{{key}@exp/name}}.")
    experiment, _, names = ref.partition("/")
    names = names.split(",")
    if agg or len(names) > 1:
      if agg not in _AGGREGATES or len(names) < 2:
        raise ValueError(f"table {self.table!r}: field {{{field_name}}}: an aggregate needs one of "
                         f"{sorted(_AGGREGATES)} after '~' and at least two records, e.g. "
                         f"{{{key}~mean@{experiment}/a,b}}.")
      values = [self._value(key, f"{experiment}/{n}") for n in names]
      return float(_AGGREGATES[agg](values)), key
    return self._value(key, ref), key

  def _value(self, key: str, ref: str) -> float:
    try:
      rec = load_ref(ref, self.root, self.cache)
    except FileNotFoundError as e:
      raise FileNotFoundError(f"table {self.table!r} reads {ref!r}: {e}") from None
    if key in rec["metrics"]:
      return rec["metrics"][key]
    if isinstance(rec.get(key), numbers.Real) and not isinstance(rec.get(key), bool):
      return rec[key]
    near = difflib.get_close_matches(key, list(rec["metrics"]), n=3)
    raise KeyError(f"table {self.table!r}: record {ref!r} has no metric {key!r}"
                   + (f" (close: {', '.join(near)})" if near else "")
                   + f". Fix: correct the key in {TABLES_SPEC}, or re-run the experiment with --record.")


def render_table(name: str, spec: Mapping[str, Any], root: str | None = None, _cache: dict | None = None) -> str:
  """The markdown table ``name`` of the spec (see the comment above), formatted from the records."""
  cache = {} if _cache is None else _cache
  header = list(spec["header"])
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for i, row in enumerate(spec["rows"]):
    ref, cells = (row.get("record", spec.get("record")), row["cells"]) if isinstance(row, Mapping) \
        else (spec.get("record"), row)
    if len(cells) != len(header):
      raise ValueError(f"table {name!r} row {i}: {len(cells)} cells for {len(header)} columns.")
    fmt = _CellFormatter(name, ref, root, cache)
    lines.append("| " + " | ".join(fmt.format(c) for c in cells) + " |")
  return "\n".join(lines) + "\n"


def load_tables(spec_path: str = TABLES_SPEC) -> dict[str, Any]:
  with open(spec_path) as f:
    return json.load(f)


def readme_blocks(text: str) -> dict[str, str]:
  """``{name: content}`` of the README's ``<!-- results:NAME -->`` blocks."""
  blocks = {}
  for m in _BLOCK.finditer(text):
    if m.group(1) in blocks:
      raise ValueError(f"README block results:{m.group(1)} appears twice.")
    blocks[m.group(1)] = m.group(2)
  opened = set(_OPEN.findall(text))
  if opened != set(blocks):
    raise ValueError(f"README blocks opened but not closed by <!-- /results:NAME -->: {sorted(opened - set(blocks))}")
  return blocks


def readme_values(text: str) -> list[tuple[str, str]]:
  """``[(template, text)]`` of the README's inline ``<!-- value:TEMPLATE -->text<!-- /value -->`` numbers."""
  return _VALUE.findall(text)


def render_values(text: str, root: str | None = None, _cache: dict | None = None) -> str:
  """``text`` with every inline value rewritten from the records its template names (each field needs its
  ``@experiment/name``: prose has no default record)."""
  cache = {} if _cache is None else _cache
  def one(m):
    rendered = _CellFormatter(f"README value {m.group(1)}", None, root, cache).format(m.group(1))
    return f"<!-- value:{m.group(1)} -->{rendered}<!-- /value -->"
  return _VALUE.sub(one, text)


def generate_readme(text: str, tables: Mapping[str, Any], root: str | None = None) -> str:
  """``text`` with every ``results:NAME`` block and every inline value rewritten from the records.

  Raises:
    ValueError: a block has no table in the spec, or a table no block (each table is shown once).
    FileNotFoundError / KeyError: a table reads a missing record or key (the message names both).
  """
  blocks = readme_blocks(text)
  if set(blocks) != set(tables):
    raise ValueError(f"README blocks {sorted(set(blocks) - set(tables))} have no table in {TABLES_SPEC}; tables "
                     f"{sorted(set(tables) - set(blocks))} have no <!-- results:NAME --> block in the README.")
  cache: dict = {}
  rendered = {name: render_table(name, tables[name], root, cache) for name in tables}
  text = _BLOCK.sub(lambda m: f"<!-- results:{m.group(1)} -->\n{rendered[m.group(1)]}<!-- /results:{m.group(1)} -->",
                    text)
  return render_values(text, root, cache)


def _main(argv: Sequence[str] | None = None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog="python -m infra.results",
                                   description="Rewrites README.md's results blocks from results/*/*.json "
                                               "through results/tables.json.")
  parser.add_argument("--readme", action="store_true", help="rewrite the blocks in place")
  parser.add_argument("--check", action="store_true", help="only report whether the README is up to date")
  args = parser.parse_args(argv)
  if not (args.readme or args.check):
    parser.error("give --readme (rewrite) or --check")
  with open(README) as f:
    text = f.read()
  new = generate_readme(text, load_tables())
  if args.check:
    stale = [n for n, c in readme_blocks(new).items() if readme_blocks(text)[n] != c]
    stale += [f"value {t} ({old!r} -> {v!r})" for (t, old), (_, v) in zip(readme_values(text), readme_values(new))
              if old != v]
    print("README results blocks and values up to date" if not stale else f"stale README: {'; '.join(stale)}")
    return 1 if stale else 0
  if new != text:
    with open(README, "w") as f:
      f.write(new)
  print(f"rewrote {len(readme_blocks(new))} results blocks and {len(readme_values(new))} values in {README}")
  return 0


if __name__ == "__main__":
  raise SystemExit(_main())
