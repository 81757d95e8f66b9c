"""HEALPix topology in numpy: NEST index <-> (face, x, y), RING order, and walks across face boundaries.

Conventions are healpy's (Gorski et al. 2005, https://arxiv.org/abs/astro-ph/0409513):

- 12 base pixels ("faces"): 0..3 around the north pole, 4..7 on the equator, 8..11 around the south pole;
  face ``f`` sits in row ``f // 4`` and column ``f % 4`` (column c is centred on phi = 90 c degrees for
  the equatorial row and on 45 + 90 c degrees for the polar rows).
- Inside a face, the NEST index is a Morton interleave of the face-local ``(x, y)``: x on the even bits, y on
  the odd bits (``healpy.pix2xyf``). ``(0, 0)`` is the southern corner of the face, x grows towards the
  north-east and y towards the north-west, so every aligned run of 4^k NEST indices is a 2^k x 2^k square.

A model uses a strictly increasing subset ``faces`` of the base pixels. Its token ``t`` (NEST order restricted
to the used faces) is NEST pixel ``faces[t // nside**2] * nside**2 + t % nside**2``.

Face adjacency is the one table in :data:`_EXIT` below: for each face and each way of leaving it (x and/or y
below 0 or at/above nside) the face that continues the sky there, with the map from the leaving face's
extended coordinates to the neighbour's own. Edges between two polar faces meet at the pole and are rotated
by 90 degrees; every other edge keeps the orientation. Corners where only three faces meet (the east and west
corners of polar faces, the north and south corners of equatorial ones) have no diagonal neighbour.

This module never imports healpy: healpy is the independent oracle of the tests.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

ALL_FACES = tuple(range(12))


def check_nside(nside: int) -> int:
  """Returns ``nside`` as int or raises a ValueError (``"nside: problem. Fix: ..."``) if it is not a positive power of 2.

  The one nside validator: the model config, the data builders and the index tables all call it.
  """
  if isinstance(nside, bool) or not isinstance(nside, (int, np.integer)) or nside < 1 or nside & (nside - 1):
    raise ValueError(f"nside: must be a positive power of 2 (HEALPix NEST order), got {nside!r}. "
                     "Fix: use e.g. nside=16, 32, 64.")
  return int(nside)


def check_faces(faces: Sequence[int] | None) -> tuple[int, ...]:
  """Returns ``faces`` (None: all 12) as a tuple of ints or raises a ValueError (``"faces: problem. Fix: ..."``).

  The one faces validator: the model config, the data builders and the index tables all call it.
  """
  faces = ALL_FACES if faces is None else tuple(faces)
  fix = "Fix: use e.g. tuple(range(12)) (the whole sphere) or tuple(range(8)) (the upper 8 faces)."
  not_int = [f for f in faces if isinstance(f, bool) or not isinstance(f, (int, np.integer))]
  if not_int:
    raise ValueError(f"faces: entries {not_int!r} are not integers (types {sorted({type(f).__name__ for f in not_int})}),"
                     f" got {faces!r}. {fix}")
  if not faces or any(not 0 <= f <= 11 for f in faces) or any(a >= b for a, b in zip(faces, faces[1:])):
    raise ValueError(f"faces: must be a non-empty, strictly increasing tuple of HEALPix base pixels (ints in 0..11), "
                     f"got {faces!r}. {fix}")
  return tuple(int(f) for f in faces)


# -- Morton (NEST) interleave -----------------------------------------------------------------------------------


def _spread_bits(v: np.ndarray, nbits: int) -> np.ndarray:
  """Bit i of ``v`` goes to bit 2i (loop over bits, not pixels)."""
  out = np.zeros_like(v)
  for i in range(nbits):
    out |= ((v >> i) & 1) << (2 * i)
  return out


def _compact_bits(v: np.ndarray, nbits: int) -> np.ndarray:
  """Bit 2i of ``v`` goes to bit i (inverse of :func:`_spread_bits`)."""
  out = np.zeros_like(v)
  for i in range(nbits):
    out |= ((v >> (2 * i)) & 1) << i
  return out


def local_to_xy(local: np.ndarray, nside: int) -> tuple[np.ndarray, np.ndarray]:
  """In-face NEST index in ``[0, nside**2)`` -> face-local ``(x, y)`` (x: even bits, y: odd bits)."""
  local = np.asarray(local, dtype=np.int64)
  nbits = int(nside).bit_length() - 1
  return _compact_bits(local, nbits), _compact_bits(local >> 1, nbits)


def xy_to_local(x: np.ndarray, y: np.ndarray, nside: int) -> np.ndarray:
  """Face-local ``(x, y)`` in ``[0, nside)`` -> in-face NEST index (inverse of :func:`local_to_xy`)."""
  nbits = int(nside).bit_length() - 1
  x = np.asarray(x, dtype=np.int64)
  y = np.asarray(y, dtype=np.int64)
  return _spread_bits(x, nbits) | (_spread_bits(y, nbits) << 1)


def nest_to_fxy(nside: int, pix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """NEST pixel -> ``(face, x, y)``, as ``healpy.pix2xyf(nside, pix, nest=True)`` (which returns x, y, f)."""
  nside = check_nside(nside)
  pix = np.asarray(pix, dtype=np.int64)
  x, y = local_to_xy(pix % (nside * nside), nside)
  return pix // (nside * nside), x, y


def fxy_to_nest(nside: int, f: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """``(face, x, y)`` -> NEST pixel (``healpy.xyf2pix(nside, x, y, f, nest=True)``)."""
  nside = check_nside(nside)
  return np.asarray(f, dtype=np.int64) * nside * nside + xy_to_local(x, y, nside)


def token_fxy(nside: int, faces: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(face, x, y)`` of every token of a map on ``faces`` (arrays of length ``len(faces) * nside**2``)."""
  nside, faces = check_nside(nside), check_faces(faces)
  local = np.arange(nside * nside, dtype=np.int64)
  x, y = local_to_xy(local, nside)
  nf = len(faces)
  return (np.repeat(np.asarray(faces, dtype=np.int64), nside * nside), np.tile(x, nf), np.tile(y, nf))


def token_to_nest(nside: int, faces: Sequence[int] | None = None) -> np.ndarray:
  """Full-sphere NEST pixel of every token of a map on ``faces``."""
  nside, faces = check_nside(nside), check_faces(faces)
  return (np.asarray(faces, dtype=np.int64)[:, None] * nside * nside
          + np.arange(nside * nside, dtype=np.int64)[None, :]).reshape(-1)


def face_position(faces: Sequence[int] | None = None) -> np.ndarray:
  """(12,) int64: the position of each base pixel in ``faces``, -1 for unused ones."""
  faces = check_faces(faces)
  pos = np.full(12, -1, dtype=np.int64)
  pos[list(faces)] = np.arange(len(faces))
  return pos


def fxy_to_token(nside: int, faces: Sequence[int] | None, f: np.ndarray, x: np.ndarray,
                 y: np.ndarray) -> np.ndarray:
  """``(face, x, y)`` -> token index of a map on ``faces``; -1 where ``f`` is -1 or not a used face."""
  nside = check_nside(nside)
  f = np.asarray(f, dtype=np.int64)
  pos = face_position(faces)[np.where(f >= 0, f, 0)]
  ok = (f >= 0) & (pos >= 0)
  tok = pos * nside * nside + xy_to_local(np.where(ok, x, 0), np.where(ok, y, 0), nside)
  return np.where(ok, tok, -1)


# -- Face adjacency ---------------------------------------------------------------------------------------------

# Affine maps (x', y') = A (x, y) + b with b = b_n * nside + b_1, from a face's extended coordinates to a
# neighbour's. Names say where the pole of the polar rows is: around the north pole x, y >= nside leave a
# face towards the next polar face; around the south pole x, y < 0 do.
_IDENT = np.eye(2, dtype=np.int64)
_ROT_CCW = np.array([[0, 1], [-1, 0]], np.int64)  # (x, y) -> (y, -x)
_ROT_CW = np.array([[0, -1], [1, 0]], np.int64)  # (x, y) -> (-y, x)
_ROT_180 = -_IDENT


def _exit_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Builds ``(face, A, b_n, b_1)`` for every (face, ox, oy) with ox, oy in {-1, 0, 1} = floor(coord / nside).

  Derivation (healpy's frame: x to the NE, y to the NW, (0, 0) the face's southern corner):

  - north polar face c (row 0): SW edge -> equatorial 4+c, SE edge -> equatorial 4+(c+1), south corner -> south
    polar 8+c, all with the same orientation. Its NE edge (x = nside-1) is the NW edge of polar face c+1,
    turned by 90 degrees about the pole: (x, y) -> (y, 2 nside - 1 - x); the NW edge likewise goes to c-1 and
    the pole corner to c+2 (a 180 degree turn). East and west corners are three-face corners.
  - equatorial face 4+c (row 1): NE -> polar c, NW -> polar c-1, SE -> south polar 8+c, SW -> south polar
    8+(c-1), E corner -> equatorial 4+(c+1), W corner -> 4+(c-1), all with the same orientation; the north
    and south corners are three-face corners.
  - south polar face 8+c (row 2): the mirror image of row 0: NE -> equatorial 4+(c+1), NW -> 4+c, north
    corner -> polar c (same orientation); the SE edge (y = 0) is the SW edge of 8+(c+1) turned about the south
    pole: (x, y) -> (-1 - y, x); SW goes to 8+(c-1), the pole corner to 8+(c+2).
  """
  face = np.full((12, 3, 3), -1, np.int64)
  mat = np.zeros((12, 3, 3, 2, 2), np.int64)
  b_n = np.zeros((12, 3, 3, 2), np.int64)
  b_1 = np.zeros((12, 3, 3, 2), np.int64)

  def put(f, ox, oy, g, a, bn, b1):
    face[f, ox + 1, oy + 1] = g
    mat[f, ox + 1, oy + 1] = a
    b_n[f, ox + 1, oy + 1] = bn
    b_1[f, ox + 1, oy + 1] = b1

  for c in range(4):
    cp, cm, co = (c + 1) % 4, (c + 3) % 4, (c + 2) % 4
    # Plain translations: (x, y) -> (x - ox n, y - oy n).
    for f, moves in ((c, {(0, 0): c, (-1, 0): 4 + c, (0, -1): 4 + cp, (-1, -1): 8 + c}),
                     (4 + c, {(0, 0): 4 + c, (1, 0): c, (0, 1): cm, (0, -1): 8 + c, (-1, 0): 8 + cm,
                              (1, -1): 4 + cp, (-1, 1): 4 + cm}),
                     (8 + c, {(0, 0): 8 + c, (1, 0): 4 + cp, (0, 1): 4 + c, (1, 1): c})):
      for (ox, oy), g in moves.items():
        put(f, ox, oy, g, _IDENT, (-ox, -oy), (0, 0))
    # Around the north pole.
    put(c, 1, 0, cp, _ROT_CCW, (0, 2), (0, -1))  # (y, 2n - 1 - x)
    put(c, 0, 1, cm, _ROT_CW, (2, 0), (-1, 0))  # (2n - 1 - y, x)
    put(c, 1, 1, co, _ROT_180, (2, 2), (-1, -1))  # (2n - 1 - x, 2n - 1 - y)
    # Around the south pole.
    put(8 + c, 0, -1, 8 + cp, _ROT_CW, (0, 0), (-1, 0))  # (-1 - y, x)
    put(8 + c, -1, 0, 8 + cm, _ROT_CCW, (0, 0), (0, -1))  # (y, -1 - x)
    put(8 + c, -1, -1, 8 + co, _ROT_180, (0, 0), (-1, -1))  # (-1 - x, -1 - y)
  for a in (face, mat, b_n, b_1):
    a.setflags(write=False)
  return face, mat, b_n, b_1


_EXIT = _exit_table()


def walk(nside: int, f: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Resolves extended face coordinates to the face of the sky that holds them.

  Args:
    nside: HEALPix resolution.
    f: base pixels, any shape.
    x, y: extended face-local coordinates of ``f`` in ``[-nside, 2 nside)`` (at most one face step per axis,
      e.g. a pixel plus an offset of at most nside).

  Returns:
    ``(f', x', y')`` with ``x', y'`` in ``[0, nside)``: the same sky position in the frame of the face that
    contains it. ``f'`` is -1 (and x', y' are 0) where the step crosses a three-face corner diagonally, i.e.
    no face continues the sky there.
  """
  nside = check_nside(nside)
  f = np.asarray(f, dtype=np.int64)
  x = np.asarray(x, dtype=np.int64)
  y = np.asarray(y, dtype=np.int64)
  if x.size and (x.min() < -nside or x.max() >= 2 * nside or y.min() < -nside or y.max() >= 2 * nside):
    raise ValueError(f"walk() handles one face step per axis: coordinates must lie in [-{nside}, {2 * nside}).")
  ox, oy = np.floor_divide(x, nside) + 1, np.floor_divide(y, nside) + 1
  face, mat, b_n, b_1 = (t[f, ox, oy] for t in _EXIT)
  xn = mat[..., 0, 0] * x + mat[..., 0, 1] * y + b_n[..., 0] * nside + b_1[..., 0]
  yn = mat[..., 1, 0] * x + mat[..., 1, 1] * y + b_n[..., 1] * nside + b_1[..., 1]
  ok = face >= 0
  return face, np.where(ok, xn, 0), np.where(ok, yn, 0)


# healpy's neighbour order (get_all_neighbours): SW, W, NW, N, NE, E, SE, S as steps in (x, y).
NEIGHBOUR_STEPS = np.array([(-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1)], np.int64)


def neighbours(nside: int, pix: np.ndarray) -> np.ndarray:
  """The 8 neighbours of NEST pixels in healpy's order (SW, W, NW, N, NE, E, SE, S), -1 where none.

  Args:
    nside: HEALPix resolution.
    pix: NEST pixels, shape ``(M,)``.

  Returns:
    ``(8, M)`` int64, the layout of ``healpy.get_all_neighbours(nside, pix, nest=True)``.
  """
  f, x, y = nest_to_fxy(nside, pix)
  g, xn, yn = walk(nside, f[None], x[None] + NEIGHBOUR_STEPS[:, :1], y[None] + NEIGHBOUR_STEPS[:, 1:])
  return np.where(g >= 0, fxy_to_nest(nside, np.maximum(g, 0), xn, yn), -1)


# -- RING order -------------------------------------------------------------------------------------------------

# Ring number of a face's southern corner in units of nside (healpy's jrll) and its longitude index (jpll, in
# units of 45 degrees).
_JRLL = np.array([2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4], np.int64)
_JPLL = np.array([1, 3, 5, 7, 0, 2, 4, 6, 1, 3, 5, 7], np.int64)


def fxy_to_ring(nside: int, f: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """``(face, x, y)`` -> RING pixel index (Gorski et al. 2005, Sec. 4).

  Rings are iso-latitude lines ``x + y = const`` inside a face, numbered 1..4 nside - 1 from north to south;
  RING order runs west to east along each ring (phi increasing) and then on to the next ring (a spiral).
  """
  nside = check_nside(nside)
  jr, nr, kshift, jp = _ring_coords(nside, f, x, y)
  npix = 12 * nside * nside
  north, south = jr < nside, jr > 3 * nside
  start = np.where(north, 2 * jr * (jr - 1),
                   np.where(south, npix - 2 * nr * (nr + 1), 2 * nside * (nside - 1) + (jr - nside) * 4 * nside))
  return start + jp - 1


def _ring_coords(nside: int, f, x, y) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """``(jr, nr, kshift, jp)``: ring number (1..4 nside - 1, north to south), pixels per ring / 4, the half-pixel
  shift of odd equatorial rings, and the 1-based position along the ring (healpy's ``pix2ang_nest``)."""
  f = np.asarray(f, dtype=np.int64)
  x = np.asarray(x, dtype=np.int64)
  y = np.asarray(y, dtype=np.int64)
  jr = _JRLL[f] * nside - x - y - 1
  north, south = jr < nside, jr > 3 * nside
  nr = np.where(north, jr, np.where(south, 4 * nside - jr, nside))
  kshift = np.where(north | south, 0, (jr - nside) & 1)  # odd equatorial rings start half a pixel later
  jp = (_JPLL[f] * nr + x - y + 1 + kshift) // 2
  jp = np.where(jp > 4 * nr, jp - 4 * nr, jp)
  jp = np.where(jp < 1, jp + 4 * nr, jp)
  return jr, nr, kshift, jp


def nest_to_angles(nside: int, pix) -> tuple[np.ndarray, np.ndarray]:
  """NEST pixel -> centre ``(theta, phi)`` in radians, as ``healpy.pix2ang(nside, pix, nest=True)``.

  theta in [0, pi] is the colatitude (0 at the north pole), phi in [0, 2 pi) the longitude (Gorski et al.
  2005, Sec. 4: ``z = cos theta`` is ``1 - nr²/(3 nside²)`` on the northern polar rings, ``(2 nside - jr) 2 /
  (3 nside)`` on the equatorial ones; ``phi = (jp - (kshift + 1)/2) pi / (2 nr)``).
  """
  nside = check_nside(nside)
  jr, nr, kshift, jp = _ring_coords(nside, *nest_to_fxy(nside, pix))
  polar = 1.0 - nr.astype(np.float64) ** 2 / (3.0 * nside * nside)
  z = np.where(jr < nside, polar, np.where(jr > 3 * nside, -polar, (2 * nside - jr) * 2.0 / (3.0 * nside)))
  phi = (jp - (kshift + 1) * 0.5) * (np.pi / 2) / nr
  return np.arccos(np.clip(z, -1.0, 1.0)), phi


def token_angles(nside: int, faces: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
  """``(theta, phi)`` (radians, each (N,)) of the centre of every token of a map on ``faces``: the
  coordinates of row t of a model input (B, N, C)."""
  return nest_to_angles(nside, token_to_nest(nside, faces))


def nest_to_ring(nside: int, pix: np.ndarray) -> np.ndarray:
  """NEST -> RING pixel index (``healpy.nest2ring``)."""
  return fxy_to_ring(nside, *nest_to_fxy(nside, pix))


def ring_to_nest(nside: int, ring: np.ndarray) -> np.ndarray:
  """RING -> NEST pixel index (``healpy.ring2nest``), via the inverse of the full NEST -> RING permutation."""
  nside = check_nside(nside)
  inverse = np.empty(12 * nside * nside, np.int64)
  inverse[nest_to_ring(nside, np.arange(12 * nside * nside))] = np.arange(12 * nside * nside)
  return inverse[np.asarray(ring, dtype=np.int64)]
