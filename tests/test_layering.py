"""The package layering: the two papers side by side, one bridge on top, shared infrastructure below, experiments
and benchmarks as leaves, and no import cycles.

    experiments/, benchmarks/   leaves (only experiments/demo.py may import other experiments)
    healswin_ntk/               the bridge: imports both papers
    healswin_jax/   ntk/        neither imports the other (nor the bridge)
    infra/                      imports none of the above

Imports are read with ``ast`` (including imports inside functions) and, for the papers, checked again in a fresh
interpreter through ``sys.modules`` (which also catches imports made by third-party code on our behalf).
"""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARIES = ("infra", "healswin_jax", "ntk", "healswin_ntk")
# What each library may import from this repository (besides itself).
ALLOWED = {
    "infra": set(),
    "healswin_jax": {"infra"},
    "ntk": {"infra"},
    "healswin_ntk": {"infra", "healswin_jax", "ntk"},
}
OUR_TOP_LEVEL = set(LIBRARIES) | {"experiments", "benchmarks", "tests", "scripts"}


def _module_files(package: str) -> dict[str, str]:
  """``{dotted module name: path}`` of every .py file under ``package`` (``__init__`` names the package)."""
  out = {}
  for dirpath, _, files in os.walk(os.path.join(ROOT, package)):
    for f in files:
      if not f.endswith(".py"):
        continue
      rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].split(os.sep)
      if rel[-1] == "__init__":
        rel = rel[:-1]
      out[".".join(rel)] = os.path.join(dirpath, f)
  return out


ALL_MODULES = {}
for _pkg in LIBRARIES + ("experiments", "benchmarks"):
  ALL_MODULES.update(_module_files(_pkg))


def _imports(name: str, path: str) -> set[str]:
  """Modules of this repository that ``name`` imports anywhere in its body (resolved to module names:
  ``from pkg import sub`` -> ``pkg.sub`` when that is a module, else ``pkg``)."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  is_pkg = path.endswith("__init__.py")
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative import
        parts = name.split(".") if is_pkg else name.split(".")[:-1]
        parts = parts[:len(parts) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
      targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in ALL_MODULES else base for a in node.names]
    else:
      continue
    for t in targets:
      if t.split(".")[0] not in OUR_TOP_LEVEL:
        continue
      while t and t not in ALL_MODULES:  # ``import a.b.c`` of a name inside a.b -> a.b
        t = t.rpartition(".")[0]
      if t and t != name:
        out.add(t)
  return out


GRAPH = {name: _imports(name, path) for name, path in ALL_MODULES.items()}


@pytest.mark.parametrize("package", LIBRARIES)
def test_library_imports_only_the_layers_below(package):
  bad = sorted((m, t) for m, targets in GRAPH.items() if m.split(".")[0] == package
               for t in targets if t.split(".")[0] not in ALLOWED[package] | {package})
  assert not bad, f"{package} may import only {sorted(ALLOWED[package])}; found (importer, imported): {bad}"


def test_experiments_and_benchmarks_are_leaves():
  bad = sorted((m, t) for m, targets in GRAPH.items() for t in targets
               if (m.startswith("experiments.") and m != "experiments.demo" and t.startswith("experiments"))
               or (m.startswith("benchmarks") and t.startswith(("experiments", "benchmarks"))))
  assert not bad, f"experiments and benchmarks must not import each other (only the demo aggregates): {bad}"


def test_no_import_cycles_among_library_modules():
  """Tarjan's strongly connected components of the library import graph are all single modules."""
  nodes = [m for m in GRAPH if m.split(".")[0] in LIBRARIES]
  index, low, on_stack, stack, cycles = {}, {}, set(), [], []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in GRAPH[v]:
      if w not in GRAPH or w.split(".")[0] not in LIBRARIES:
        continue
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        cycles.append(sorted(comp))

  for v in nodes:
    if v not in index:
      visit(v)
  assert not cycles, f"import cycles among library modules: {cycles}"


def test_the_graph_sees_imports():
  """The checks above can fail: the parser finds known edges, including imports inside functions."""
  assert "healswin_jax.layers" in GRAPH["healswin_jax.model"]
  assert {"healswin_jax.model", "ntk.ensemble"} <= GRAPH["healswin_ntk.ensembles"]
  assert "experiments.healswin_segmentation" in GRAPH["experiments.demo"]
  assert "infra.bundled_data" in GRAPH["healswin_jax.data.spherical_mnist"]  # imported inside a function


def _loaded_after_import(packages: tuple[str, ...]) -> set[str]:
  """Top-level names in ``sys.modules`` after importing every module of ``packages`` in a fresh interpreter."""
  mods = sorted(m for m in ALL_MODULES if m.split(".")[0] in packages)
  code = ("import importlib, sys\n"
          f"for m in {mods!r}:\n"
          "  importlib.import_module(m)\n"
          "print(' '.join(sorted({k.split('.')[0] for k in sys.modules})))\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600, check=True)
  return set(out.stdout.split())


def test_healswin_jax_runs_without_ntk_and_neural_tangents():
  loaded = _loaded_after_import(("healswin_jax",))
  assert "healswin_jax" in loaded and "jax" in loaded
  assert not loaded & {"ntk", "neural_tangents", "healswin_ntk", "experiments"}, sorted(loaded)


def test_ntk_and_infra_do_not_load_healswin():
  loaded = _loaded_after_import(("ntk",))
  assert "ntk" in loaded and "neural_tangents" in loaded
  assert not loaded & {"healswin_jax", "healswin_ntk", "experiments"}, sorted(loaded)
  loaded = _loaded_after_import(("infra",))
  assert "infra" in loaded
  assert not loaded & {"healswin_jax", "ntk", "healswin_ntk", "neural_tangents", "experiments"}, sorted(loaded)


def test_both_packages_share_one_accuracy():
  import infra.metrics
  from healswin_jax import metrics as healswin_metrics
  from ntk import metrics as ntk_metrics
  assert healswin_metrics.accuracy is ntk_metrics.accuracy is infra.metrics.accuracy
