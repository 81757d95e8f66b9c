"""Shifted HEALPix windows: index tables (numpy, once per geometry) and their pure-gather application.

Every strategy is a token permutation ``src`` with ``shifted[:, p] = x[:, src[p]]`` (undone by the gather with
``inv = argsort(src)``), plus integer region ``labels`` on the shifted layout: tokens of one shifted window with
different labels must not attend to each other (:func:`healswin_jax.layers.mask_logits`). Tables are built by
:func:`build_shift`, cached per ``(nside, faces, window_size, strategy)`` and shared by every block that uses
them; a forward pass only gathers (:func:`apply_shift`, :func:`undo_shift`).

Strategies (``h = sqrt(ws) / 2`` is half a window side, in tokens of the stage):

``"grid"``
  The paper's grid shift, with correct geometry on any face subset: each token takes the content at
  ``(x - h, y - h)`` in its face's frame, walked across face edges with their true orientation
  (:func:`topology.walk`). A diagonal translation of the sphere cannot be a bijection everywhere (hairy
  ball): content leaves through the north-polar faces' pole-side edges and three-face corners and nothing
  arrives at the south-polar faces' pole-side edges. So a move ``s -> d`` is kept only where it is
  consistent both ways (d pulls s and s pushes to d); the remaining destinations ("orphans": whole
  strips ``x < h`` or ``y < h`` or corner blocks of a face) are filled with the remaining sources (whole strips
  ``x >= nside - h`` / ``y >= nside - h`` / corner blocks) of the matching shape, face by face in increasing
  face order, as a wrap-around translation ``((x - h) mod nside, (y - h) mod nside)``. A corner block beside an
  orphan strip instead continues that strip's translation one step across its source face's edge where that
  sky is free (x < h strip first, then y < h). Orphans get label 1 (x < h strip, and a corner continuing it),
  2 (y < h strip, likewise) or 3 (other corners), real moves label 0, so attention never glues sky that is not
  adjacent (tested against ``healpy.get_all_neighbours``). On the original's 8 faces the index arrays equal
  the original ``NestGridShift``'s and the labels induce the same attention mask (checked against golden arrays
  of the original in ``tests/test_healpix_reference_parity.py``): the equatorial faces' southern strips come
  from the polar faces' northern strips, their corner from the next equatorial face's northern corner. Commutes
  exactly with the 90 degree polar rotation for rotation-closed face sets.
``"ring"``
  The paper's spiral shift: a roll along the RING-order spiral, ``src = ring2nest((nest2ring(p) - h) mod
  12 nside^2)``, i.e. ``(x, y) -> (x - h, y + h)`` inside a face: half a window along both face axes. (The
  NNX port rolls by ``ws // 2``, which leaves most windows unmixed.) The roll wraps the spiral's last ``h``
  pixels (around the south pole) onto its first ``h`` (around the north pole): those slots keep that content
  but form their own region, so nothing attends across the sphere. On a subset, exactly the destinations
  whose source is outside the used faces are orphans. They take the used tokens whose destination left the
  domain by collapsing each missing face: the orphans whose content would come out of missing face m hold, in
  NEST order, the tokens whose content would roll into m; leftovers pair up in NEST order. On the original's
  8 faces this is the original ``RingShift`` exactly (its table {4: 7, 5: 4, 6: 5, 7: 6}, leftovers to faces
  0..3; golden arrays in ``tests/test_healpix_reference_parity.py``). Regions of a window: the moved slots
  (label 0); the wrapped ones; the orphans filled across one missing face from one used face (one region per
  such pair); each leftover alone. Non-zero regions are labelled ``1 + face + 12 k`` for the k-th such region of
  the window, which is the original's ``1 + face`` wherever a window holds one, as on 8 faces. The split matters
  on other subsets: with one region per face, slots filled across different missing faces (or from different
  faces) attend to sky up to 180 degrees apart; with it, no attending pair is farther apart than twice a
  window's diameter (healpy-tested).
``"none"``
  Identity (labels 0).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from healswin_jax import layers
from healswin_jax.healpix import topology
from healswin_jax.healpix import windows

STRATEGIES = ("none", "grid", "ring")

@dataclasses.dataclass(frozen=True, eq=False)
class ShiftTables:
  """Index tables of one shifted-window geometry (read-only numpy arrays; hashed by identity).

  Attributes:
    src: (N,) int32 gather index, ``shifted[:, p] = x[:, src[p]]``.
    inv: (N,) int32, ``argsort(src)``: ``x[:, q] = shifted[:, inv[q]]``.
    labels: (N,) int32 region labels on the shifted layout; tokens in one window with different labels must
      not attend to each other.
    strategy: "none", "grid" or "ring".
    nside: token resolution of the stage (a power of 2).
    faces: the used base pixels, strictly increasing.
    window_size: tokens per window (a power of 4, at most nside**2).
  """
  src: np.ndarray
  inv: np.ndarray
  labels: np.ndarray
  strategy: str
  nside: int
  faces: tuple[int, ...]
  window_size: int

  @property
  def num_tokens(self) -> int:
    return int(self.src.shape[0])

  @property
  def window_labels(self) -> np.ndarray:
    """(N / ws, ws) labels per shifted window."""
    return self.labels.reshape(-1, self.window_size)

  @property
  def needs_mask(self) -> bool:
    """Whether some shifted window holds more than one region (else the mask is a no-op)."""
    wl = self.window_labels
    return bool(np.any(wl != wl[:, :1]))


@jax.custom_vjp
def permute_tokens(x: jnp.ndarray, perm: jnp.ndarray, inv: jnp.ndarray) -> jnp.ndarray:
  """(B, N, C) -> (B, N, C), ``out[:, p] = x[:, perm[p]]`` for a permutation ``perm`` with inverse ``inv``.

  The backward pass is the gather with ``inv`` instead of autodiff's scatter-add: same result (a permutation's
  transpose is its inverse), faster on CPU and GPU, and XLA does not try to constant-fold a scatter.
  """
  return x.at[:, perm].get(mode="promise_in_bounds", unique_indices=True)


def _permute_fwd(x, perm, inv):
  return permute_tokens(x, perm, inv), (perm, inv)


def _permute_bwd(res, g):
  perm, inv = res
  return permute_tokens(g, inv, perm), None, None


permute_tokens.defvjp(_permute_fwd, _permute_bwd)


def _check_tokens(x, tables: ShiftTables) -> None:
  if x.ndim != 3 or x.shape[1] != tables.num_tokens:
    raise ValueError(f"x has shape {x.shape}, expected (B, {tables.num_tokens}, C) for the shift tables of "
                     f"nside={tables.nside}, faces={tables.faces}.")


def apply_shift(x: jnp.ndarray, tables: ShiftTables) -> jnp.ndarray:
  """(B, N, C) -> (B, N, C) shifted layout: ``out[:, p] = x[:, src[p]]`` (one gather, also backwards)."""
  _check_tokens(x, tables)
  if tables.strategy == "none":
    return x
  return permute_tokens(x, jnp.asarray(tables.src), jnp.asarray(tables.inv))


def undo_shift(x: jnp.ndarray, tables: ShiftTables) -> jnp.ndarray:
  """Inverse of :func:`apply_shift`: ``out[:, q] = x[:, inv[q]]``."""
  _check_tokens(x, tables)
  if tables.strategy == "none":
    return x
  return permute_tokens(x, jnp.asarray(tables.inv), jnp.asarray(tables.src))


# -- Builders ---------------------------------------------------------------------------------------------------


def _pair_pieces(kind_d, kind_s, key_d, key_s, orphan, lost, src):
  """Fills ``src`` at orphan destinations of each kind with lost sources of the same kind, in key order."""
  for kind in np.unique(kind_d[orphan]):
    d = np.nonzero(orphan & (kind_d == kind))[0]
    s = np.nonzero(lost & (kind_s == kind))[0]
    if len(d) != len(s):  # cannot happen for valid geometry: every piece is all-or-nothing
      raise AssertionError(f"grid shift: {len(d)} orphan destinations but {len(s)} free sources of kind {kind}.")
    src[d[np.argsort(key_d[d], kind="stable")]] = s[np.argsort(key_s[s], kind="stable")]


def _grid(nside: int, faces: tuple[int, ...], ws: int) -> tuple[np.ndarray, np.ndarray]:
  n, h = nside, int(round(np.sqrt(ws))) // 2
  f, x, y = topology.token_fxy(n, faces)
  tok = np.arange(len(f))
  pull = topology.fxy_to_token(n, faces, *topology.walk(n, f, x - h, y - h))
  push = topology.fxy_to_token(n, faces, *topology.walk(n, f, x + h, y + h))
  valid = (pull >= 0) & (push[np.maximum(pull, 0)] == tok)
  src = np.where(valid, pull, -1)
  lost = np.ones(len(f), bool)
  lost[src[valid]] = False
  # Kinds: 1 = strip x < h (from a strip x >= n - h), 2 = strip y < h (from y >= n - h), 3 = corner block.
  kind_d = np.where(x < h, np.where(y < h, 3, 1), np.where(y < h, 2, 0))
  kind_s = np.where(x >= n - h, np.where(y >= n - h, 3, 1), np.where(y >= n - h, 2, 0))
  if np.any(kind_d[~valid] == 0) or np.any(kind_s[lost] == 0):
    raise AssertionError("grid shift: a face interior was not translated in place.")
  # Wrap-around translation inside each piece: the orphan at (x, y) of the k-th orphan face of a kind takes
  # ((x - h) mod n, (y - h) mod n) of the k-th face with a free piece of that kind.
  key_d = f * n * n + topology.xy_to_local((x - h) % n, (y - h) % n, n)
  key_s = f * n * n + topology.xy_to_local(x, y, n)
  orphan = ~valid
  strips = orphan & (kind_d != 3)
  _pair_pieces(kind_d, kind_s, key_d, key_s, strips, lost & (kind_s != 3), src)
  labels = np.where(valid, 0, kind_d)
  # A corner block continues the orphan strip beside it where that sky is free. The x < h strip is a translate
  # of a strip of its source face: slot (x, y + h) holds source (a + x, y) there. So corner slot (x, y) takes
  # (a + x, y - h) of that face, walked across its y = 0 edge, and joins the strip's region (the content is
  # sky-adjacent to the strip's). Likewise with the y < h strip (x and y swapped) where the x < h one fails;
  # the remaining corners pair face by face as above. On the original's 8 faces this is the original's choice:
  # equatorial face 4 + c's corner holds face 4 + (c + 1)'s northern corner, in one region with its x < h
  # strip from polar face c (as the original NestGridShift does).
  taken = ~lost
  taken[src[strips]] = True
  corner = orphan & (kind_d == 3)
  for strip, (dx, dy) in ((1, (0, h)), (2, (h, 0))):
    for g in np.unique(f[corner]):
      d = np.nonzero(corner & (f == g))[0]
      nb = topology.fxy_to_token(n, faces, f[d], x[d] + dx, y[d] + dy)  # strip slot beside each corner slot
      if np.any(labels[nb] != strip):
        continue
      s = src[nb]
      g2, x2, y2 = topology.walk(n, f[s], x[s] - dx, y[s] - dy)
      cand = topology.fxy_to_token(n, faces, g2, x2, y2)
      if np.any(cand < 0) or np.any(taken[cand] | (kind_s[cand] != 3)) or len(np.unique(cand)) != len(cand):
        continue
      src[d], taken[cand], labels[d], corner[d] = cand, True, strip, False
  _pair_pieces(kind_d, kind_s, key_d, key_s, corner, ~taken & (kind_s == 3), src)
  return src, labels


def _region_labels(key: np.ndarray, f: np.ndarray, ws: int) -> np.ndarray:
  """Region keys -> labels: 0 stays 0; in each window, the k-th distinct non-zero key (by first slot) gets
  ``1 + face + 12 k`` (a window lies in one face, so on a set with one back-filled region per window this is the
  original's ``1 + face``)."""
  labels = np.zeros(len(key), np.int64)
  d = np.nonzero(key)[0]
  if not len(d):
    return labels
  pair = (d // ws) * (int(key.max()) + 1) + key[d]
  uniq, first, inv = np.unique(pair, return_index=True, return_inverse=True)
  win = d[first] // ws
  order = np.lexsort((first, win))  # by window, then by first slot
  rank = np.empty(len(uniq), np.int64)
  start = np.searchsorted(win[order], win[order], side="left")
  rank[order] = np.arange(len(uniq)) - start
  labels[d] = 1 + f[d] + 12 * rank[inv.ravel()]
  return labels


def _ring(nside: int, faces: tuple[int, ...], ws: int) -> tuple[np.ndarray, np.ndarray]:
  n, h = nside, int(round(np.sqrt(ws))) // 2
  npix = 12 * n * n
  f = topology.token_fxy(n, faces)[0]
  nest = topology.token_to_nest(n, faces)
  ring = topology.nest_to_ring(n, nest)
  tok_of_nest = np.full(npix, -1, np.int64)
  tok_of_nest[nest] = np.arange(len(nest))
  pull = tok_of_nest[topology.ring_to_nest(n, (ring - h) % npix)]
  valid = pull >= 0
  src = np.where(valid, pull, -1)
  # Region keys (module docstring): 0 moved along the spiral; 1 wrapped from the spiral's end (the south-polar
  # cap) to its start (the north pole); 2 + 12 m + g back-filled across missing face m from face g; 146 + token
  # for a leftover (alone: leftovers pair up in token order and can come from anywhere).
  key = np.where(valid & (ring < h), 1, 0)
  if not np.all(valid):
    lost = np.ones(len(nest), bool)
    lost[src[valid]] = False
    # Collapse each missing face: the used tokens whose content would roll into a missing face m take, in token
    # (NEST) order, the orphan slots whose content would come out of m. The spiral's wrap from its last ring to
    # its first (south pole to north pole) passes through no face (-1). Orphans and lost tokens left over (group
    # sizes differ near phi = 0, where each ring starts inside face 4) pair up in token order at the end, the
    # lost ones in the order of their groups (by first orphan), then those of no group. Compared with pairing
    # along the spiral, grid-adjacent same-label orphan slots hold non-adjacent sky about half as often on 8
    # faces (and less often on most other face sets, over a range of nsides and window sizes).
    m_d = np.where(ring >= h, topology.ring_to_nest(n, (ring - h) % npix) // (n * n), -1)
    m_s = np.where(ring + h < npix, topology.ring_to_nest(n, (ring + h) % npix) // (n * n), -1)
    d_all, s_all = np.nonzero(~valid)[0], np.nonzero(lost)[0]
    groups = [int(m) for m in m_d[d_all][np.sort(np.unique(m_d[d_all], return_index=True)[1])] if m >= 0]
    rest_d, rest_s = [d_all[m_d[d_all] < 0]], []
    for m in groups:
      d, s = d_all[m_d[d_all] == m], s_all[m_s[s_all] == m]
      k = min(len(d), len(s))
      src[d[:k]] = s[:k]
      key[d[:k]] = 2 + 12 * m + f[s[:k]]
      rest_d.append(d[k:])
      rest_s.append(s[k:])
    rest_s.append(s_all[~np.isin(m_s[s_all], groups)])
    d = np.sort(np.concatenate(rest_d))
    src[d] = np.concatenate(rest_s)
    key[d] = 2 + 144 + d
  return src, _region_labels(key, f, ws)


_BUILDERS = {"grid": _grid, "ring": _ring}


@functools.lru_cache(maxsize=256)
def _build(nside: int, faces: tuple[int, ...], ws: int, strategy: str) -> ShiftTables:
  if strategy == "none":
    src = np.arange(len(faces) * nside * nside)
    labels = np.zeros_like(src)
  else:
    src, labels = _BUILDERS[strategy](nside, faces, ws)
  if np.any(np.sort(src) != np.arange(len(src))):  # cheap guard: tables must be a permutation
    raise AssertionError(f"{strategy} shift at nside={nside}, faces={faces}, ws={ws} is not a permutation.")
  src = src.astype(np.int32)
  inv = np.empty_like(src)
  inv[src] = np.arange(len(src), dtype=np.int32)
  labels = labels.astype(np.int32)
  for a in (src, inv, labels):
    a.setflags(write=False)
  return ShiftTables(src=src, inv=inv, labels=labels, strategy=strategy, nside=nside, faces=faces,
                     window_size=ws)


def build_shift(nside: int, faces: Sequence[int] | None, window_size: int, strategy: str) -> ShiftTables:
  """The cached shift tables of one stage geometry.

  Args:
    nside: token resolution of the stage (a power of 2).
    faces: used base pixels, strictly increasing (None: all 12).
    window_size: tokens per window, a power of 4 with ``4 <= window_size <= nside**2`` for "grid"/"ring"
      (half a window side must be a whole token).
    strategy: "none", "grid" or "ring" (module docstring).

  Returns:
    :class:`ShiftTables`, identical object for identical arguments (lru_cache), arrays read-only.

  Raises:
    ValueError: an argument is out of range; the message names it and the fix.
  """
  nside, faces = topology.check_nside(nside), topology.check_faces(faces)
  ws = windows.check_window_size(window_size)
  if strategy not in STRATEGIES:
    raise ValueError(f"shift strategy {strategy!r} is not one of {STRATEGIES}.")
  if ws > nside * nside:
    raise ValueError(f"window_size={ws} exceeds the {nside * nside} tokens of a face at nside={nside}; a stage "
                     "that small attends globally without shifting (or use a smaller window).")
  if strategy != "none" and ws < 4:
    raise ValueError(f"window_size={ws} has no half-window shift; use window_size >= 4 or strategy='none'.")
  return _build(nside, faces, ws, strategy)


# -- Diagnostics (used by tests and experiments.healpix_geometry) -----------------------------------------------


@functools.lru_cache(maxsize=None)
def window_adjacent_pairs(ws: int) -> np.ndarray:
  """(P, 2) int64 pairs of in-window NEST indices that are horizontally, vertically or diagonally adjacent."""
  s = int(round(np.sqrt(ws)))
  x, y = topology.local_to_xy(np.arange(ws), s)
  dx, dy = np.abs(x[:, None] - x[None, :]), np.abs(y[:, None] - y[None, :])
  i, j = np.nonzero((np.maximum(dx, dy) == 1) & (np.arange(ws)[:, None] < np.arange(ws)[None, :]))
  pairs = np.stack([i, j], axis=1)
  pairs.setflags(write=False)
  return pairs


def same_label_adjacent_sources(tables: ShiftTables) -> tuple[np.ndarray, np.ndarray]:
  """Token pairs whose content must be sky neighbours: the sources of same-label, grid-adjacent slots.

  Returns:
    ``(a, b)`` int64 arrays of source tokens (one entry per such slot pair in every shifted window).
  """
  ws = tables.window_size
  pairs = window_adjacent_pairs(ws)
  base = np.arange(0, tables.num_tokens, ws)[:, None]
  p, q = (base + pairs[None, :, 0]).ravel(), (base + pairs[None, :, 1]).ravel()
  keep = tables.labels[p] == tables.labels[q]
  return tables.src[p[keep]].astype(np.int64), tables.src[q[keep]].astype(np.int64)


def originals_per_window(tables: ShiftTables) -> np.ndarray:
  """(N / ws,) number of distinct unshifted windows that feed each shifted window."""
  orig = np.sort(tables.src.reshape(-1, tables.window_size) // tables.window_size, axis=1)
  return 1 + np.count_nonzero(np.diff(orig, axis=1), axis=1)


def attending_pair_angles(tables: ShiftTables, vectors: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
  """Angular distance between the sky content of every pair of slots of a shifted window that may attend.

  Args:
    tables: the shift geometry.
    vectors: (N, 3) unit vectors of the tokens' pixel centres (unshifted token order; e.g. ``healpy.pix2vec``
      of :func:`topology.token_to_nest`, so that the distances come from an independent oracle).
    labels: (N,) region labels to use instead of ``tables.labels`` (e.g. zeros: the shift without its mask).

  Returns:
    (N / ws, ws, ws) float64 radians between ``vectors[src[p]]`` and ``vectors[src[q]]`` for slots p, q of a
    window with the same label, 0 for masked pairs. With ``tables.strategy == "none"`` its maximum is the
    largest window's diameter.
  """
  ws = tables.window_size
  v = np.asarray(vectors, np.float64)[tables.src].reshape(-1, ws, 3)
  same = layers.same_region(tables.labels if labels is None else labels, ws)
  cos = np.where(same, np.einsum("wpc,wqc->wpq", v, v), 1.0)
  return np.arccos(np.clip(cos, -1.0, 1.0))


def far_attending_pairs(tables: ShiftTables, vectors: np.ndarray, labels: np.ndarray | None = None) -> int:
  """Pairs of slots that may attend although their content is farther apart than twice the largest unshifted
  window's diameter (the pixel-centre vectors' largest in-window distance); 0 for a shift that glues no distant
  sky. Arguments as in :func:`attending_pair_angles`."""
  diameter = attending_pair_angles(build_shift(tables.nside, tables.faces, tables.window_size, "none"), vectors)
  return int(np.count_nonzero(attending_pair_angles(tables, vectors, labels) > 2 * diameter.max())) // 2
