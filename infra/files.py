"""Reading input files so that every failure names the file and the fix.

In a data set of 100k files the path is the whole error message: a decoder's own exception (PIL's "image file
is truncated", zlib's "Error -3 while decompressing", numpy's "cannot reshape array") does not say which file
to replace.
"""

from __future__ import annotations

import contextlib
import os


class UnreadableFileError(ValueError):
  """An input file exists but cannot be decoded; the message starts with its path and ends with the fix."""


@contextlib.contextmanager
def reading(path: str | os.PathLike, what: str, fix: str):
  """Re-raises any decoding error inside the block as :class:`UnreadableFileError` naming ``path``.

  ``FileNotFoundError`` passes unchanged (its message already holds the path), as do errors that are already
  :class:`UnreadableFileError`. The original exception stays attached as ``__cause__``.

  Args:
    path: the file being read.
    what: what it should be, e.g. ``"PNG image"`` or ``"IDX file (FashionMNIST)"``.
    fix: what the user should do, e.g. ``"re-download it"``.
  """
  try:
    yield
  except (FileNotFoundError, UnreadableFileError):
    raise
  except Exception as e:  # pylint: disable=broad-except  (any decoder failure; re-raised with the path)
    raise UnreadableFileError(f"{os.fspath(path)}: cannot read this {what} ({type(e).__name__}: {e}). "
                              f"Fix: {fix}.") from e
