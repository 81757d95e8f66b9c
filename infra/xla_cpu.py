"""Work-around for a crash of XLA:CPU in the pinned jaxlib (0.10.2): YNNPACK transpose fusions can segfault.

The crash: ``jax.jit(nt.empirical_ntk_fn(..., vmap_axes=0))`` of a small HEAL-SWIN (and the demo and
``experiments.sphere_equivariance``, which compute it) dies with SIGSEGV in a ``tf_XLAEigen`` thread, inside
``ynn::make_transpose_impl`` -> ``slinky::fuse_contiguous_dims`` (gdb backtrace), deterministically, on a
"__ynn_fusion" custom fusion that XLA:CPU forms by default. The same program eagerly, or with
``vmap_axes=None``, runs. Restricting XLA:CPU's YNNPACK fusions to individual dots
(``--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT``) removes the crash.

:func:`apply` appends that flag to ``XLA_FLAGS`` unless the user already chose a value. XLA reads
``XLA_FLAGS`` once, when the first computation is compiled, so this runs on ``import ntk`` /
``import healswin_jax`` (both call it) and is too late only if JAX already compiled something before; then
it warns. The flag is set only for the jaxlib versions in :data:`AFFECTED` (an unknown flag makes XLA abort
on other versions); re-check the crash (``tests/test_healswin_ntk.py``) when upgrading.
"""

from __future__ import annotations

import os
import sys
import warnings

FLAG_NAME = "xla_cpu_experimental_ynn_fusion_type"
FLAG = f"--{FLAG_NAME}=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
AFFECTED = ("0.10.2",)


def _jaxlib_version() -> str | None:
  try:
    from importlib.metadata import version  # pylint: disable=g-import-not-at-top
    return version("jaxlib")
  except Exception:  # pylint: disable=broad-except  (not installed / unusual packaging: do nothing)
    return None


def _backend_started() -> bool:
  xb = sys.modules.get("jax._src.xla_bridge")
  return bool(getattr(xb, "_backends", None))


def apply() -> bool:
  """Adds :data:`FLAG` to ``XLA_FLAGS`` on affected jaxlib versions; returns whether it is in effect."""
  flags = os.environ.get("XLA_FLAGS", "")
  if FLAG_NAME in flags:
    return FLAG in flags.split()
  if _jaxlib_version() not in AFFECTED:
    return False
  if _backend_started():
    warnings.warn(f"JAX's backend started before `import ntk` / `import healswin_jax`, so the XLA:CPU crash "
                  f"work-around ({FLAG}) cannot take effect in this process; import ntk (or healswin_jax) "
                  f"before running any JAX computation, or set XLA_FLAGS='{FLAG}' yourself.", stacklevel=3)
    return False
  os.environ["XLA_FLAGS"] = (flags + " " + FLAG).strip()
  return True
