"""What identifies a model for resuming a run: its class, its configuration and, for your own classes, their code.

A checkpoint restored into a model with the same parameter shapes but a different function (another activation
in a custom head, another shift strategy) would silently continue the wrong run. :func:`model_identity` is a
JSON-able description that goes into the run stamp stored with each checkpoint (``infra.run_guard.stamp``), so
that such a resume is refused with the differing field named.

- ``class``: ``module.QualName`` of the model;
- ``config``: the module's dataclass fields (Flax modules are dataclasses; ``parent`` and ``name`` excluded), as
  address-free ``repr`` strings; fields that are themselves modules are described recursively;
- ``code``: a digest of the bytecode of the methods of every class involved that is defined outside this
  repository's packages and Flax (your own modules), so that editing a custom head's code between two runs in
  one directory is detected too. It ignores comments, docstrings' positions and line numbers, and works for
  classes defined in notebooks or ``exec``-ed code (no source file needed). Library classes are identified by
  name and config only, so upgrading the library does not invalidate old runs.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import inspect
import re
import types
from typing import Any

_LIBRARY_PREFIXES = ("healswin_jax", "ntk", "healswin_ntk", "infra", "flax", "jax", "optax")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _is_library(cls: type) -> bool:
  mod = cls.__module__ or ""
  if mod == "builtins":   # a real builtin, or a class exec-ed without __name__ (user code)
    return getattr(builtins, cls.__name__, None) is cls
  return any(mod == p or mod.startswith(p + ".") for p in _LIBRARY_PREFIXES)


def _describe(value: Any, classes: list[type]) -> Any:
  if dataclasses.is_dataclass(value) and not isinstance(value, type) and _is_module_like(value):
    return _fields(value, classes)
  if isinstance(value, (types.FunctionType, types.BuiltinFunctionType)):
    return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}"
  return _ADDRESS.sub("", repr(value))


def _is_module_like(value: Any) -> bool:
  """A Flax module (described field by field and by class) rather than a plain config dataclass."""
  try:
    import flax.linen as nn  # pylint: disable=g-import-not-at-top
  except ImportError:  # pragma: no cover
    return False
  return isinstance(value, nn.Module)


def _fields(module: Any, classes: list[type]) -> dict[str, Any]:
  cls = type(module)
  classes.append(cls)
  out: dict[str, Any] = {"class": f"{cls.__module__}.{cls.__qualname__}"}
  for f in dataclasses.fields(module):
    if f.name in ("parent", "name"):
      continue
    out[f.name] = _describe(getattr(module, f.name), classes)
  return out


def _code_digest(code: types.CodeType, h) -> None:
  h.update(code.co_code)
  h.update(repr(code.co_names).encode())
  for c in code.co_consts:
    if isinstance(c, types.CodeType):
      _code_digest(c, h)
    else:
      h.update(_ADDRESS.sub("", repr(c)).encode())


def _names(code: types.CodeType) -> set[str]:
  out = set(code.co_names)
  for c in code.co_consts:
    if isinstance(c, types.CodeType):
      out |= _names(c)
  return out


def _class_digest(cls: type, h) -> list[type]:
  """Hashes the methods of ``cls`` and its non-library bases; returns the non-library classes they name
  (e.g. a head module created inside ``__call__``), which are hashed too."""
  referenced = []
  for klass in cls.__mro__:
    if _is_library(klass):
      continue
    h.update(klass.__qualname__.encode())
    for name, attr in sorted(vars(klass).items()):
      fn = inspect.unwrap(attr) if callable(attr) else None
      if isinstance(fn, types.FunctionType):
        h.update(name.encode())
        _code_digest(fn.__code__, h)
        for n in sorted(_names(fn.__code__)):
          ref = fn.__globals__.get(n)
          if isinstance(ref, type) and not _is_library(ref):
            referenced.append(ref)
  return referenced


def model_identity(model: Any) -> dict[str, Any]:
  """JSON-able identity of ``model`` (a Flax module, or any object: then its class and address-free repr).

  Returns:
    ``{"class": ..., "config": {...} or repr, "code": hex digest or ""}`` (see the module docstring).
  """
  classes: list[type] = []
  if _is_module_like(model):
    config = _fields(model, classes)
    config.pop("class")
  else:
    classes.append(type(model))
    config = _ADDRESS.sub("", repr(model))
  todo = sorted({c for c in classes if not _is_library(c)}, key=lambda c: f"{c.__module__}.{c.__qualname__}")
  seen: set[type] = set()
  h = hashlib.sha256()
  while todo:
    cls = todo.pop(0)
    if cls not in seen:
      seen.add(cls)
      todo += _class_digest(cls, h)
  digest = h.hexdigest()[:16] if seen else ""
  cls = type(model)
  return {"class": f"{cls.__module__}.{cls.__qualname__}", "config": config, "code": digest}
