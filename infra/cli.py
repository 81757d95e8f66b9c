"""The one command-line and output convention shared by every experiment and benchmark.

An experiment module defines ``get_config(quick: bool) -> ml_collections.ConfigDict`` and
``run(config, workdir) -> dict[str, float]`` and ends with::

    if __name__ == "__main__":
      cli.main(get_config, run, name="my_experiment")

which gives ``python -m experiments.my_experiment [--quick] [--workdir DIR] [--set key=value ...]``.
``run`` writes figures (PNG) with :func:`save_figure` and a short ``summary.md`` with :func:`write_summary`;
:func:`main` writes the returned flat metrics dict to ``DIR/metrics.json`` (and ``config.json`` beside it).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: experiments only ever write PNG files
import ml_collections  # noqa: E402

from infra import mesh as mesh_lib  # noqa: E402
from infra import results  # noqa: E402
from infra import run_guard  # noqa: E402
from infra.results import flat_metrics  # noqa: E402,F401  (part of this module's interface)


def write_metrics(workdir: str, metrics: Mapping[str, Any], filename: str = "metrics.json") -> dict[str, float]:
  """Writes ``workdir/metrics.json`` (NaN/inf are written as JSON null-free strings by ``allow_nan``)."""
  flat = flat_metrics(metrics)
  if not mesh_lib.is_primary():  # across processes only process 0 writes files
    return flat
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, filename), "w") as f:
    json.dump(flat, f, indent=2, sort_keys=True, allow_nan=True)
  return flat


def write_summary(workdir: str, text: str) -> None:
  if not mesh_lib.is_primary():
    return
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "summary.md"), "w") as f:
    f.write(text.rstrip() + "\n")


def save_figure(fig, workdir: str, name: str, dpi: int = 110) -> str:
  """Saves a matplotlib figure as ``workdir/name.png`` and closes it; returns the path."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, name if name.endswith(".png") else name + ".png")
  if mesh_lib.is_primary():
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
  plt.close(fig)
  return path


def markdown_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
  """A GitHub-markdown table; floats are printed with 4 significant digits."""
  fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


def _parse_value(text: str, current: Any) -> Any:
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError) as e:
    raise ValueError(f"cannot parse {text!r} as a Python literal") from e
  if isinstance(current, bool) or current is None:
    return value
  if isinstance(current, float) and isinstance(value, int):
    return float(value)
  if isinstance(current, tuple) and isinstance(value, list):
    return tuple(value)
  return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
  """Applies ``key=value`` overrides (dotted keys for nested configs; values are Python literals)."""
  for item in overrides:
    if "=" not in item:
      raise ValueError(f"--set expects key=value, got {item!r}")
    key, text = item.split("=", 1)
    parent = config
    parts = key.split(".")
    for p in parts[:-1]:
      if p not in parent:
        raise KeyError(f"--set {key}: no field {p!r}; fields are {sorted(parent.keys())}")
      parent = parent[p]
    leaf = parts[-1]
    if leaf not in parent:
      raise KeyError(f"--set {key}: no field {leaf!r}; fields are {sorted(parent.keys())}")
    with parent.unlocked() if hasattr(parent, "unlocked") else _nullcontext():
      parent[leaf] = _parse_value(text, parent[leaf])
  return config


class _nullcontext:  # pylint: disable=invalid-name
  def __enter__(self):
    return self

  def __exit__(self, *a):
    return False


DEFAULT_VARIANT = "default"


def module_name(name: str) -> str:
  """The dotted module a run was started as (``benchmarks.<name>`` or ``experiments.<name>``, the default)."""
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  main = getattr(spec, "name", None) or ""
  return main if main.rsplit(".", 1)[-1] == name else f"experiments.{name}"


def parse_args(name: str, argv: Sequence[str] | None = None,
               variants: Sequence[str] = (DEFAULT_VARIANT,)) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog=f"python -m {module_name(name)}", description=sys.modules["__main__"].__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--quick", action="store_true",
                      help="small setting that finishes in about a minute on 2 CPU cores")
  parser.add_argument("--variant", default=DEFAULT_VARIANT, choices=tuple(variants),
                      help=f"named configuration (one of: {', '.join(variants)}; default: {DEFAULT_VARIANT})")
  parser.add_argument("--workdir", default=os.path.join("runs", name), help="output folder (default: runs/<name>)")
  parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config field (repeatable), e.g. --set width=1024")
  parser.add_argument("--record", nargs="?", const="", default=None, metavar="NAME",
                      help="after a successful run also write results/<name>/NAME.json; without NAME the record "
                           "is named for the variant (quick, <variant>-quick or <variant>), which --set overrides "
                           "would not show, so with --set a NAME is required")
  parser.add_argument("--distributed", action="store_true",
                      help="join the other processes of a multi-host job with jax.distributed (see the README, "
                           "'More than one machine'); HEAL-SWIN training then runs data-parallel over all devices")
  return parser.parse_args(argv)


def record_name(variant: str, quick: bool) -> str:
  """The results file name (without .json) of a run: the variant, ``quick``, or ``<variant>-quick``."""
  if not quick:
    return variant
  return "quick" if variant == DEFAULT_VARIANT else f"{variant}-quick"


def resolve_record_name(record: str | None, variant: str, quick: bool, overrides: Sequence[str]) -> str | None:
  """The results file name for ``--record [NAME]`` (None without ``--record``).

  A bare ``--record`` names the record for the variant (:func:`record_name`). That name says nothing about
  ``--set`` overrides, so a run with overrides would silently replace the plain variant's record: it needs an
  explicit NAME (e.g. ``--record quick-depth`` for ``--quick --set task=depth``).

  Raises:
    ValueError: a bare ``--record`` with overrides, or a NAME that is not a plain file name.
  """
  if record is None:
    return None
  if not record:
    if overrides:
      default = record_name(variant, quick)
      raise ValueError(f"--record without a NAME would write results/.../{default}.json, the record of the plain "
                       f"{default!r} run, but this run has --set {' --set '.join(overrides)}. Fix: name the "
                       f"record, e.g. --record {default}-<what you changed>.")
    return record_name(variant, quick)
  results.path("x", record)  # the same file-name check as the writer, before any work
  return record


def check_overrides(overrides: Sequence[str], fixed: Mapping[str, str]) -> None:
  """Refuses ``--set`` of a field the experiment sets itself (it would be silently overwritten).

  Args:
    overrides: the ``key=value`` strings.
    fixed: ``{dotted field: why it cannot be set}``.
  """
  for item in overrides:
    key = item.split("=", 1)[0]
    for field, why in fixed.items():
      if key == field or key.startswith(field + "."):
        raise ValueError(f"--set {key}: this experiment sets {field} itself ({why}), so the override would be "
                         f"ignored. Fix: drop --set {key}.")


def main(get_config: Callable[..., ml_collections.ConfigDict],
         run: Callable[[ml_collections.ConfigDict, str], Mapping[str, Any]],
         name: str, argv: Sequence[str] | None = None, *,
         variants: Sequence[str] = (DEFAULT_VARIANT,),
         results_root: str | None = None,
         validate: Callable[[ml_collections.ConfigDict], None] | None = None,
         fixed: Mapping[str, str] | None = None) -> dict[str, float]:
  """Parses the command line, runs the experiment and writes ``metrics.json`` and ``config.json``.

  Every ``--set`` takes effect or fails before any work: ``fixed`` names the fields ``run`` sets itself
  (overriding them is refused), and ``validate(config)`` checks the whole config (raising ``ValueError`` that
  names the field and the fix) before the workdir is touched. The workdir has one owner from ``config.json`` to
  ``metrics.json`` (:func:`infra.run_guard.workdir_lock`): a second run started on it is refused before it
  overwrites either.

  Args:
    get_config: ``get_config(quick)``; called as ``get_config(quick, variant)`` for a variant other than
      ``"default"``.
    run: ``run(config, workdir) -> metrics``.
    name: the experiment's name (``python -m experiments.<name>``; the results folder).
    argv: command-line arguments (default ``sys.argv[1:]``).
    variants: the valid ``--variant`` names; an unknown one exits with an error listing these.
    results_root: where ``--record`` writes (default: the repository's ``results/``).
    validate: ``validate(config)`` raising ``ValueError`` (field and fix) for a config that cannot run.
    fixed: ``{dotted field: why}`` for the fields ``run`` sets itself.
  """
  if DEFAULT_VARIANT not in variants:
    raise ValueError(f"variants {tuple(variants)} of {name!r} must include {DEFAULT_VARIANT!r} (what runs "
                     f"without --variant).")
  args = parse_args(name, argv, variants)
  check_overrides(args.overrides, fixed or {})
  record_as = resolve_record_name(args.record, args.variant, args.quick, args.overrides)
  if args.distributed:
    mesh_lib.initialize_distributed()
  config = get_config(args.quick) if args.variant == DEFAULT_VARIANT else get_config(args.quick, args.variant)
  config = apply_overrides(config, args.overrides)
  if validate is not None:
    validate(config)
  config.lock() if hasattr(config, "lock") else None
  # One owner per workdir from config.json to metrics.json (infra.run_guard; only the primary process of a
  # jax.distributed run holds it): a second run started on it is refused before it overwrites either.
  with run_guard.workdir_lock(args.workdir, f"{module_name(name)} run"):
    if mesh_lib.is_primary():
      with open(os.path.join(args.workdir, "config.json"), "w") as f:
        f.write(config.to_json(indent=2) if hasattr(config, "to_json") else json.dumps(dict(config), indent=2))
    launch_git = results.git_state() if record_as is not None else None  # the code that runs, not what is
    t0 = time.perf_counter()                                               # checked out when it ends
    metrics = dict(run(config, args.workdir))
    wall_s = time.perf_counter() - t0
    metrics.setdefault("wall_seconds", wall_s)
    flat = write_metrics(args.workdir, metrics)
  if not mesh_lib.is_primary():
    return flat
  width = max(len(k) for k in flat)
  for k in sorted(flat):
    v = flat[k]
    print(f"  {k:<{width}}  {v:.6g}" if math.isfinite(v) else f"  {k:<{width}}  {v}")
  print(f"wrote {os.path.join(args.workdir, 'metrics.json')}")
  if record_as is not None:
    path = results.record(name, record_as, flat, config, wall_s, root=results_root,
                          argv=list(sys.argv[1:] if argv is None else argv), launch_git=launch_git)
    print(f"wrote {path}")
  return flat
