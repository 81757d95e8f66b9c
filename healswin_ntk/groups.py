"""The exact HEALPix symmetries (:mod:`healswin_jax.healpix.symmetry`) as ``ntk.groups.FiniteGroup`` objects.

:func:`healpix_group` wraps the numpy NEST pixel permutations of the polar rotation (C4) and the equatorial
reflection (C4 x Z2) as gather representations (``ntk.groups.GatherRep``) on maps ``(n, N, C)``, so that the
ensemble and kernel machinery of :mod:`ntk` (full-orbit augmentation, orbit metrics, block-circulant solves)
runs on HEAL-SWIN's inputs and dense outputs unchanged.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from healswin_jax.healpix.symmetry import group_table, pixel_permutations
from healswin_jax.healpix.topology import check_faces
from ntk.groups import FiniteGroup, GatherRep


def _pixel_rep(src: np.ndarray, channels: int):
  """GatherRep of the pixel permutations ``src (|G|, N)`` on per-example maps ``(N, channels)``."""
  order, npix = src.shape
  # Flattened (N, C) index p * C + c: every channel of pixel p comes from the same source pixel.
  idx = (src[:, :, None] * channels + np.arange(channels)[None, None, :]).reshape(order, npix * channels, 1)
  return GatherRep(idx.astype(np.int32), np.ones(idx.shape), (npix, channels))


def healpix_group(nside: int, faces: Sequence[int] | None = None, *, reflection: bool = False,
                  channels: int = 1, equivariant_output: bool = False, out_channels: int | None = None):
  """The HEALPix symmetry group as an ``ntk.groups.FiniteGroup`` acting on NEST maps of the used faces.

  Args:
    nside: HEALPix resolution of the maps (a power of 2).
    faces: the used base pixels, strictly increasing (None: all 12); must be closed under the group.
    reflection: C4 x Z2 (order 8, needs a reflection-closed face set such as all 12) instead of C4.
    channels: C of the inputs ``(n, N, C)``, ``N = len(faces) * nside**2``.
    equivariant_output: False for invariant tasks (classification: rho_Y trivial); True for dense tasks
      (segmentation, depth) whose outputs ``(n, N, out_channels)`` permute with the input.
    out_channels: C_out of the outputs when ``equivariant_output`` (default: ``channels``).

  Returns:
    A ``FiniteGroup`` with ``act_x(g, x) = x[:, src[g], :]`` (bit-exact gathers), ``exact=True`` and
    ``cyclic_factors`` (4,) or (2, 4) (element ``4 m + k`` = ``r^k s^m``, as in :func:`pixel_permutations`),
    so ``ntk.blockcirc`` can block-diagonalize augmented kernels over it.
  """
  if not isinstance(channels, int) or channels < 1:
    raise ValueError(f"channels={channels!r} must be a positive int (the C of inputs (n, N, C)).")
  if out_channels is not None and (not isinstance(out_channels, int) or out_channels < 1):
    raise ValueError(f"out_channels={out_channels!r} must be a positive int (the C_out of outputs (n, N, C_out)).")
  _, src = pixel_permutations(nside, faces, reflection)
  faces = check_faces(faces)
  rep_y = _pixel_rep(src, out_channels or channels) if equivariant_output else None
  kind = "C4 x Z2 (polar rotation, equatorial reflection)" if reflection else "C4 (90-degree polar rotation)"
  name = f"HEALPix {kind}, nside {nside}, {len(faces)} faces"
  return FiniteGroup(name, group_table(reflection), _pixel_rep(src, channels), rep_y, True,
                     (2, 4) if reflection else (4,))
