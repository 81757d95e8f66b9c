"""HEALPix windows, patch merging/expansion and the in-window coordinates of the relative position bias.

Tokens are (B, N, C) in NEST order restricted to the used faces (see :mod:`healswin_jax.healpix.topology`).
Because the NEST index interleaves the face-local (x, y) bits, every aligned run of 4^k consecutive tokens is
one pixel of the grid at nside / 2^k, i.e. a 2^k x 2^k square inside one face:

- a window of ``ws = 4^k`` tokens is a reshape (it never crosses a face while ``nside**2 >= ws``);
- patch embedding of ``P = 4^k`` pixels and patch merging (4 children ``4k..4k+3`` of the coarse token ``k``,
  concatenated along channels) are reshapes too; merging with mean weights is ``healpy.ud_grade`` in NESTED
  order, and expanding splits channel chunk ``j`` into child ``4k + j`` (:func:`merge_children`,
  :func:`expand_children`).

Everything here is a pure reshape (jnp) or a tiny numpy table.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from healswin_jax.healpix import topology


def check_window_size(window_size: int) -> int:
  """Returns ``window_size`` as int or raises a ValueError unless it is a power of 4 (1, 4, 16, 64, ...)."""
  ws = window_size
  if isinstance(ws, bool) or not isinstance(ws, (int, np.integer)) or ws < 1 or ws & (ws - 1) or (
      ws.bit_length() - 1) % 2:
    raise ValueError(f"window_size={window_size!r} must be a power of 4 (1, 4, 16, 64, ...): a HEALPix window "
                     "is a square of sqrt(ws) x sqrt(ws) pixels, i.e. an aligned run of 4^k NEST indices.")
  return int(ws)


def window_partition(x: jnp.ndarray, ws: int) -> jnp.ndarray:
  """(B, N, C) -> (B * N / ws, ws, C): window ``b * N/ws + w`` holds tokens ``w*ws .. (w+1)*ws - 1`` of row b."""
  b, n, c = x.shape
  if n % ws:
    raise ValueError(f"{n} tokens do not split into windows of {ws}; window_size must divide the token count "
                     "(use a smaller window or a finer stage).")
  return x.reshape(b * (n // ws), ws, c)


def window_reverse(windows: jnp.ndarray, ws: int, batch: int) -> jnp.ndarray:
  """(B * N / ws, ws, C) -> (B, N, C), the inverse of :func:`window_partition`."""
  nwb, w, c = windows.shape
  if w != ws or nwb % batch:
    raise ValueError(f"windows of shape {windows.shape} do not match window size {ws} and batch {batch}.")
  return windows.reshape(batch, (nwb // batch) * ws, c)


def merge_children(x: jnp.ndarray) -> jnp.ndarray:
  """(B, N, C) -> (B, N/4, 4C): concatenates the 4 NEST children ``4k..4k+3`` of coarse token ``k``.

  Channel block ``j`` of the output is child ``4k + j``. Averaging the blocks is ``healpy.ud_grade(m,
  nside // 2, order_in='NESTED', order_out='NESTED')`` (tested), so PatchMerging = LN + Linear on this.
  """
  b, n, c = x.shape
  if n % 4:
    raise ValueError(f"{n} tokens cannot be merged in groups of 4 NEST children.")
  return x.reshape(b, n // 4, 4 * c)


def expand_children(x: jnp.ndarray) -> jnp.ndarray:
  """(B, N, 4C) -> (B, 4N, C): channel chunk ``j`` of token ``k`` becomes child ``4k + j`` (inverse of merge)."""
  b, n, c4 = x.shape
  if c4 % 4:
    raise ValueError(f"{c4} channels cannot be split into 4 NEST children.")
  return x.reshape(b, 4 * n, c4 // 4)


@functools.lru_cache(maxsize=None)
def window_rc(ws: int) -> np.ndarray:
  """In-window (row, col) of each NEST index, the original's convention ``(r, c) = (y, s - 1 - x)``.

  Args:
    ws: window size, a power of 4; ``s = sqrt(ws)``.

  Returns:
    ``(ws, 2)`` int64, read-only: row ``n`` is (r, c) of in-window NEST index ``n`` (healpy's face-local x,
    y of the index, with x reflected; the same layout as the original's recursive ``get_nest_win_idcs``).
  """
  ws = check_window_size(ws)
  s = int(round(np.sqrt(ws)))
  x, y = topology.local_to_xy(np.arange(ws), s)
  rc = np.stack([y, s - 1 - x], axis=1)
  rc.setflags(write=False)
  return rc
