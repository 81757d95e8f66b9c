"""Make ``neural-tangents==0.6.5`` import and run on current JAX, without TensorFlow.

neural-tangents 0.6.5 (the last release) was written against JAX 0.4.x. On JAX >= 0.6 it fails at import
(``jax.core.Jaxpr`` and friends moved to ``jax.extend.core``; ``jax.util`` is gone from 0.8), and its
module ``neural_tangents.experimental.empirical_tf.empirical`` imports TensorFlow and tf2jax at import time.
This module, imported by ``ntk/__init__.py`` *before* ``neural_tangents``, restores exactly the names it
needs and nothing else:

1. ``jax.core.{Jaxpr, JaxprEqn, Literal, Var, Primitive}`` from ``jax.extend.core``; ``jax.core.DShapedArray``
   (only used in an ``isinstance`` check) as a class nothing is an instance of; ``jax.core.get_aval`` and
   ``lattice_join`` (used under ``jax_enable_checks``) from their private homes.
2. ``jax.util.safe_map / safe_zip`` (creating ``jax.util`` if it no longer exists) from ``jax._src.util``.
3. ``jax.interpreters.ad.{source_info_util, config, reducing_transposes, zeros_like_p}`` and
   ``Primitive.map_primitive = False`` (pmap-style map primitives are gone).
4. For ``empirical_ntk_fn(..., implementation=3)`` (structured derivatives): neural-tangents calls the old
   ``ad.linearize(fn, *primals) -> (out, out_pvals, jaxpr, consts)``. :func:`_legacy_linearize` rebuilds it
   from public ``jax.linearize`` + ``jax.make_jaxpr``; it is installed only into neural-tangents' own
   module namespace, so JAX's ``jax.interpreters.ad.linearize`` is left untouched.
5. A replacement ``neural_tangents.experimental.empirical_tf.empirical`` whose functions raise a clear
   ``ImportError`` (the TF path is not installed in this project).

Every piece is applied only where the name is missing, so on a JAX that still has it this is a no-op.
The patched paths are exercised by ``tests/test_nt_compat.py``.
"""

from __future__ import annotations

import sys
import types

import jax
import jax.core
import jax.extend.core as _jex_core
import jax.interpreters.ad as _ad

_TF_MODULE = "neural_tangents.experimental.empirical_tf.empirical"


def _set_if_missing(obj, name: str, value) -> bool:
  """Sets ``obj.name = value`` unless it exists; returns whether it was set."""
  if hasattr(obj, name):
    return False
  setattr(obj, name, value)
  return True


class _NoDShapedArray:
  """Stand-in for the removed ``jax.core.DShapedArray``: no value is ever an instance of it."""


def _legacy_linearize(traceable, *primals, has_aux: bool = False):
  """The JAX 0.4 ``ad.linearize`` contract, rebuilt from public APIs.

  Args:
    traceable: a ``jax.extend.linear_util.WrappedFun`` taking and returning flat lists of arrays.
    *primals: the flat primal inputs.
    has_aux: must be False (neural-tangents never asks for aux).

  Returns:
    ``(primals_out, out_pvals, jaxpr, consts)``: the outputs, one "unknown" partial value per output
    (every tangent output depends on the inputs), the linear tangent jaxpr (invars = input tangents,
    outvars = output tangents) and its constants.
  """
  if has_aux:
    raise NotImplementedError("has_aux=True is not supported by the neural-tangents compatibility shim.")
  # A WrappedFun may be called only once; trace it once here and reuse the linear map.
  primals_out, f_jvp = jax.linearize(lambda *xs: traceable.call_wrapped(*xs), *primals)
  closed = jax.make_jaxpr(f_jvp)(*primals)
  out_pvals = [_UnknownPVal() for _ in closed.jaxpr.outvars]
  return list(primals_out), out_pvals, closed.jaxpr, list(closed.consts)


class _UnknownPVal:
  """A partial value whose value is not known at trace time (all linearized outputs are)."""

  def is_known(self) -> bool:
    return False


def _tf_unavailable(*args, **kwargs):
  raise ImportError(
      "neural_tangents.experimental.empirical_tf needs TensorFlow and tf2jax, which this project "
      "deliberately does not install (2+ GB, unused). Use neural_tangents.empirical_ntk_fn on a JAX / "
      "Flax apply function instead, or install tensorflow and tf2jax yourself.")


def _tf_free_module() -> types.ModuleType:
  mod = types.ModuleType(_TF_MODULE)
  mod.__doc__ = "TensorFlow-free replacement: every function raises ImportError (see ntk._nt_compat)."
  for name in ("empirical_ntk_fn_tf", "get_apply_fn_and_params"):
    setattr(mod, name, _tf_unavailable)
  mod.__getattr__ = _tf_module_getattr  # any other public name fails loudly when called
  return mod


def _tf_module_getattr(name: str):
  # Dunder look-ups (``__file__``, ``__path__``, ...) must stay AttributeErrors: ``inspect.getmodule`` walks
  # ``sys.modules`` and reads ``__file__`` of every module (astropy does this when healpy is imported).
  if name.startswith("__") and name.endswith("__"):
    raise AttributeError(name)
  return _tf_unavailable


def install() -> list[str]:
  """Applies the patches that are needed on this JAX; returns the names that were patched."""
  patched = []

  def _patch(obj, prefix, name, value):
    if _set_if_missing(obj, name, value):
      patched.append(f"{prefix}.{name}")

  for name in ("Jaxpr", "JaxprEqn", "Literal", "Var", "Primitive"):
    _patch(jax.core, "jax.core", name, getattr(_jex_core, name))
  _patch(jax.core, "jax.core", "DShapedArray", _NoDShapedArray)
  import jax._src.core as _src_core  # pylint: disable=g-import-not-at-top
  _patch(jax.core, "jax.core", "get_aval", getattr(_src_core, "get_aval", None) or jax.typeof)
  _patch(jax.core, "jax.core", "lattice_join", getattr(_src_core, "lattice_join", lambda a, b: a))
  if _set_if_missing(_src_core.Primitive, "map_primitive", False):
    patched.append("Primitive.map_primitive")

  import jax._src.util as _src_util  # pylint: disable=g-import-not-at-top
  try:
    import jax.util as jax_util  # pylint: disable=g-import-not-at-top
  except ImportError:  # removed in JAX 0.8
    jax_util = types.ModuleType("jax.util")
    sys.modules["jax.util"] = jax_util
    jax.util = jax_util
    patched.append("jax.util")
  _patch(jax_util, "jax.util", "safe_map", _src_util.safe_map)
  _patch(jax_util, "jax.util", "safe_zip", _src_util.safe_zip)

  import jax._src.source_info_util as _siu  # pylint: disable=g-import-not-at-top
  import jax._src.interpreters.ad as _src_ad  # pylint: disable=g-import-not-at-top
  import jax._src.ad_util as _ad_util  # pylint: disable=g-import-not-at-top
  _patch(_ad, "jax.interpreters.ad", "source_info_util", _siu)
  _patch(_ad, "jax.interpreters.ad", "config", jax.config)
  _patch(_ad, "jax.interpreters.ad", "reducing_transposes", getattr(_src_ad, "reducing_transposes", {}))
  _patch(_ad, "jax.interpreters.ad", "zeros_like_p", _ad_util.zeros_like_p)

  if _TF_MODULE not in sys.modules:
    try:
      import tensorflow  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      sys.modules[_TF_MODULE] = _tf_free_module()
      patched.append(_TF_MODULE)
  return patched


def _needs_legacy_linearize() -> bool:
  import inspect  # pylint: disable=g-import-not-at-top
  params = list(inspect.signature(_ad.linearize).parameters)
  # JAX 0.4: linearize(traceable, *primals, **kwargs); from 0.6: linearize(traceable, primals_ft, ...).
  return len(params) > 1 and params[1] != "primals"


def patch_imported_neural_tangents() -> bool:
  """Points neural-tangents' own ``ad`` at a namespace whose ``linearize`` has the old contract.

  Only neural-tangents' module global is replaced; JAX itself is not modified. Returns whether it patched.
  """
  if not _needs_legacy_linearize():
    return False
  import neural_tangents._src.empirical as nt_empirical  # pylint: disable=g-import-not-at-top
  if getattr(nt_empirical.ad, "_ntk_compat", False):
    return True
  shim = types.SimpleNamespace(**{k: getattr(_ad, k) for k in dir(_ad) if not k.startswith("__")})
  shim.linearize = _legacy_linearize
  shim._ntk_compat = True
  nt_empirical.ad = shim
  return True


def _attach_tf_free_module() -> None:
  """Makes ``import neural_tangents.experimental.empirical_tf.empirical`` resolve to the replacement."""
  mod = sys.modules.get(_TF_MODULE)
  if mod is None or not getattr(mod, "__doc__", "").startswith("TensorFlow-free"):
    return
  import importlib  # pylint: disable=g-import-not-at-top
  pkg = importlib.import_module("neural_tangents.experimental.empirical_tf")
  pkg.empirical = mod
  sys.modules["neural_tangents.experimental"].empirical_tf = pkg


PATCHED = install()
import neural_tangents  # noqa: E402,F401  pylint: disable=g-import-not-at-top,wrong-import-position
_attach_tf_free_module()
LEGACY_LINEARIZE = patch_imported_neural_tangents()
