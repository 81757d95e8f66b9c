"""The flat Swin U-Net baseline on H x W images, built from the same blocks as HEAL-SWIN.

Only the :class:`~healswin_jax.swin.SwinGrid` differs from the HEALPix model: tokens are p x p pixel patches
flattened row-major, windows are s x s token squares, the shifted blocks roll the token grid cyclically by
(-s/2, -s/2) (Swin, Liu et al. 2021, arXiv:2103.14030, §3.2) and mask the pairs that the roll glued together
from opposite image borders, and merging concatenates 2 x 2 token squares (children in row-major order).
The models take images ``(B, H, W, C_in)`` and return ``(B, H, W, f_out)`` (or ``(B, num_classes)``).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from healswin_jax import layers
from healswin_jax.config import FlatSwinConfig
from healswin_jax.swin import SwinClassifier, SwinGrid, SwinUNet

Array = jax.Array


def square_group(h: int, w: int, s: int) -> Callable[[Array], Array]:
  """(B, h*w, C) or (B, h, w, C) row-major tokens -> (B, (h/s)*(w/s), s*s, C): s x s squares, row-major inside.

  This single function is the window partition (windows of s x s tokens), the patch grouping (p x p pixels)
  and the merge grouping (2 x 2 tokens, after a reshape of the last two axes).
  """

  def group(x):
    b, c = x.shape[0], x.shape[-1]
    x = x.reshape(b, h // s, s, w // s, s, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // s) * (w // s), s * s, c)

  return group


def square_ungroup(h: int, w: int, s: int) -> Callable[[Array], Array]:
  """Inverse of :func:`square_group`: (B, (h/s)*(w/s), s*s, C) -> (B, h*w, C)."""

  def ungroup(x):
    b, c = x.shape[0], x.shape[-1]
    x = x.reshape(b, h // s, w // s, s, s, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h * w, c)

  return ungroup


def roll_shift_labels(h: int, w: int, s: int) -> np.ndarray:
  """Region labels (h*w,) of the rolled token grid (Swin's ``img_mask``): after rolling by -s/2 in both axes
  the last s/2 rows / columns come from the opposite border, so the grid splits into 3 x 3 regions."""
  shift = s // 2
  lab = np.zeros((h, w), np.int32)
  cuts = (slice(0, -s), slice(-s, -shift), slice(-shift, None))
  for i, rows in enumerate(cuts):
    for j, cols in enumerate(cuts):
      lab[rows, cols] = 3 * i + j
  return lab.reshape(-1)


def flat_layout(h: int, w: int, s: int, shift: bool) -> layers.WindowLayout:
  """The :class:`~healswin_jax.layers.WindowLayout` of an (h, w) token grid with s x s windows."""
  group, ungroup = square_group(h, w, s), square_ungroup(h, w, s)
  rc = np.stack(np.divmod(np.arange(s * s), s), axis=-1)  # row-major (row, col) inside a window
  rel_index, table_size = layers.relative_position_index(rc)
  kwargs = {}
  # A single window covering the whole grid gains nothing from a cyclic shift (Swin sets shift_size = 0).
  if shift and (h > s or w > s):
    d = s // 2

    def roll(x, sign):
      b, c = x.shape[0], x.shape[-1]
      return jnp.roll(x.reshape(b, h, w, c), (sign * d, sign * d), axis=(1, 2)).reshape(b, h * w, c)

    labels = roll_shift_labels(h, w, s)
    win_labels = group(labels.reshape(1, h * w, 1))[0, :, :, 0]
    kwargs = dict(shift=functools.partial(roll, sign=-1), unshift=functools.partial(roll, sign=1),
                  shift_labels=np.asarray(win_labels))
  return layers.WindowLayout(num_tokens=h * w, window_size=s * s, partition=group, reverse=ungroup,
                             rel_index=rel_index, table_size=table_size, **kwargs)


def _flatten(group):
  return lambda x: (lambda g: g.reshape(g.shape[0], g.shape[1], -1))(group(x))


def _unflatten(ungroup, factor, out_shape=None):
  def f(x):
    b, n, c = x.shape
    y = ungroup(x.reshape(b, n, factor, c // factor))
    return y if out_shape is None else y.reshape((b,) + out_shape + (y.shape[-1],))
  return f


@functools.lru_cache(maxsize=32)
def flat_grid(config: FlatSwinConfig) -> SwinGrid:
  """The flat :class:`~healswin_jax.swin.SwinGrid` of a config (cached)."""
  hh, ww = config.image_size
  p, s = config.patch_size, config.window_size
  shapes = [config.stage_shape(k) for k in range(config.num_stages)]
  layouts = tuple(flat_layout(h, w, s, config.shift) for h, w in shapes)
  merges = tuple(_flatten(square_group(h, w, 2)) for h, w in shapes[:-1])
  unmerges = tuple(_unflatten(square_ungroup(h, w, 2), 4) for h, w in shapes[:-1])
  return SwinGrid(input_shape=(hh, ww), patch_size=p * p, patchify=_flatten(square_group(hh, ww, p)),
                  unpatchify=_unflatten(square_ungroup(hh, ww, p), p * p, (hh, ww)),
                  layouts=layouts, merge=merges, unmerge=unmerges)


class FlatSwinUNet(SwinUNet):
  """Flat Swin U-Net: images (B, H, W, C_in) -> (B, H, W, f_out)."""
  config: FlatSwinConfig

  def make_grid(self) -> SwinGrid:
    return flat_grid(self.config)


class FlatSwinClassifier(SwinClassifier):
  """Flat Swin encoder + mean pool + Linear: (B, H, W, C_in) -> (B, num_classes)."""
  config: FlatSwinConfig

  def make_grid(self) -> SwinGrid:
    return flat_grid(self.config)
