"""Exact symmetries of the HEALPix grid as NEST pixel permutations.

Two isometries of the sphere map HEALPix pixel centres onto pixel centres exactly, for every nside:

- ``r``: the rotation by +90 degrees about the polar axis, phi -> phi + pi/2, theta unchanged. In
  (face, x, y) coordinates (healpy ``pix2xyf``) it keeps (x, y) and moves every face to the next one in its
  row of four: ``f -> 4 * (f // 4) + (f + 1) % 4``.
- ``s``: the reflection through the equator, theta -> pi - theta, phi unchanged. It swaps the north-polar
  face f (0..3) with the south-polar face f + 8 below it, keeps the equatorial faces 4..7, and flips each
  face's diamond about its east-west diagonal: ``(x, y) -> (nside - 1 - y, nside - 1 - x)``. In the NEST
  index (healpy's: x on the even bits, y on the odd bits) that is "swap even and odd bits, then complement",
  so no Morton decoding is needed.

``r`` and ``s`` commute, so they generate C4 (elements ``r^k``) or, with the reflection, C4 x Z2 of order 8.
Element ``g = k + 4 m`` stands for ``r^k s^m``; 0 is the identity.

Maps live on the faces a model uses (``faces``, strictly increasing, as in ``HealSwinConfig``): map pixel
``i`` is NEST pixel ``faces[i // nside**2] * nside**2 + i % nside**2``. A group element acts on such a map
only if it maps the used faces onto themselves: C4 needs unions of whole rows ({0..3}, {4..7}, {8..11});
the reflection additionally needs {0..3} and {8..11} together (e.g. all 12 faces, or 4..7 alone).

Convention (active, the one that makes ``act`` a homomorphism): ``dest[g, i]`` is the map pixel that pixel
``i`` moves to; the transformed map is ``(g . m)[dest[g, i]] = m[i]``, i.e. the gather
``g . m = m[src[g]]`` with ``src[g] = dest[g^-1]``, and ``g . (h . m) = (g h) . m``. Rotating a map by ``r``
therefore moves its content to larger phi.

The tables are computed once in numpy; acting on a batch is one gather along the pixel axis. The same group
acts on every stage of a HEAL-SWIN (each stage is a HEALPix grid at nside / 2^k on the same faces), which is
why windowing, patch merging and the grid shift commute with it (tested in ``tests/test_healpix_windows.py`` and
``tests/test_healpix_shifting.py``).
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from healswin_jax.healpix import topology

ALL_FACES = topology.ALL_FACES


def rotate_face(f: np.ndarray, k: int = 1) -> np.ndarray:
  """The base pixel that face ``f`` moves to under the rotation by ``k`` * 90 degrees about the pole."""
  f = np.asarray(f)
  return 4 * (f // 4) + (f + k) % 4


def reflect_face(f: np.ndarray) -> np.ndarray:
  """The base pixel that face ``f`` moves to under theta -> pi - theta (0..3 <-> 8..11, 4..7 fixed)."""
  f = np.asarray(f)
  return np.where(f < 4, f + 8, np.where(f >= 8, f - 8, f))


def reflect_local_nest(local: np.ndarray, nside: int) -> np.ndarray:
  """In-face NEST index after ``(x, y) -> (nside-1-y, nside-1-x)``: swap even/odd bits, then complement.

  Args:
    local: in-face NEST indices in ``[0, nside**2)`` (x on the even bits, y on the odd bits).
    nside: HEALPix resolution (a power of 2).
  """
  local = np.asarray(local, dtype=np.int64)
  nbits = 2 * int(nside).bit_length() - 2  # log2(nside**2)
  even = int("01" * max(nbits // 2, 1), 2) if nbits else 0
  swapped = ((local & even) << 1) | ((local >> 1) & even)
  return swapped ^ (nside * nside - 1)


def _element_faces(faces: tuple[int, ...], k: int, m: int) -> np.ndarray:
  f = np.asarray(faces)
  if m:
    f = reflect_face(f)
  return rotate_face(f, k)


def check_faces_closed(faces: Sequence[int] | None, reflection: bool = False) -> tuple[int, ...]:
  """Validates that ``faces`` is mapped onto itself by the rotation (and the reflection if asked).

  Returns:
    The faces as a tuple.

  Raises:
    ValueError: naming the faces that leave the set and a subset that works.
  """
  faces = topology.check_faces(faces)
  fs = set(faces)
  rot_out = sorted(set(rotate_face(np.asarray(faces)).tolist()) - fs)
  if rot_out:
    raise ValueError(f"faces={faces} is not closed under the 90-degree polar rotation (it reaches faces "
                     f"{rot_out}); use whole rows of four: 0..3, 4..7, 8..11 or unions such as 0..7 or all 12.")
  if reflection:
    ref_out = sorted(set(reflect_face(np.asarray(faces)).tolist()) - fs)
    if ref_out:
      raise ValueError(f"faces={faces} is not closed under the equatorial reflection theta -> pi - theta "
                       f"(it reaches faces {ref_out}); use all 12 faces (or 4..7 alone), or reflection=False.")
  return faces


@functools.lru_cache(maxsize=64)
def _tables(nside: int, faces: tuple[int, ...], reflection: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  npix_face = nside * nside
  order = 8 if reflection else 4
  position = np.full(12, -1, dtype=np.int64)
  position[list(faces)] = np.arange(len(faces))
  local = np.arange(npix_face, dtype=np.int64)
  local_reflected = reflect_local_nest(local, nside)
  dest = np.empty((order, len(faces) * npix_face), dtype=np.int64)
  for g in range(order):  # at most 8 elements; each is one vectorized expression over all pixels
    k, m = g % 4, g // 4
    new_pos = position[_element_faces(faces, k, m)]
    new_local = local_reflected if m else local
    dest[g] = (new_pos[:, None] * npix_face + new_local[None, :]).reshape(-1)
  src = np.empty_like(dest)
  rows = np.arange(order)[:, None]
  src[rows, dest] = np.arange(dest.shape[1])[None, :]  # src[g] = dest[g]^-1 as a permutation
  k = np.arange(order) % 4
  m = np.arange(order) // 4
  table = (k[:, None] + k[None, :]) % 4 + 4 * ((m[:, None] + m[None, :]) % 2)
  for a in (dest, src, table):
    a.setflags(write=False)
  return dest, src, table


def pixel_permutations(nside: int, faces: Sequence[int] | None = None,
                       reflection: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """The NEST pixel permutations of the group generated by r (and s), on maps of the used faces.

  Args:
    nside: HEALPix resolution of the map (a power of 2).
    faces: the used base pixels, strictly increasing (None: all 12).
    reflection: include the equatorial reflection (group C4 x Z2 of order 8; needs a reflection-closed face
      set) instead of C4 alone (order 4).

  Returns:
    ``(dest, src)``, int64 arrays of shape ``(|G|, len(faces) * nside**2)``: ``dest[g, i]`` is where pixel
    ``i`` moves; ``src[g] = argsort(dest[g])`` is the gather index, ``(g . m) = m[..., src[g], :]``.
    Element ``g = k + 4 m`` is ``r^k s^m``.
  """
  nside = topology.check_nside(nside)
  faces = check_faces_closed(faces, reflection)
  dest, src, _ = _tables(nside, faces, bool(reflection))
  return dest, src


def group_table(reflection: bool = False) -> np.ndarray:
  """Composition table ``table[a, b] = a o b`` of C4 (``reflection=False``) or C4 x Z2, elements ``r^k s^m``."""
  return _tables(1, ALL_FACES, bool(reflection))[2]


def element_name(g: int) -> str:
  """Readable name of element ``g = k + 4 m``: 'e', 'r', 'r^2', 'r^3', 's', 'r s', 'r^2 s', 'r^3 s'."""
  k, m = g % 4, g // 4
  rot = {0: "", 1: "r", 2: "r^2", 3: "r^3"}[k]
  if not m:
    return rot or "e"
  return f"{rot} s".strip() if rot else "s"


def rotate_faces_90(nside: int, faces: Sequence[int] | None = None) -> np.ndarray:
  """Token permutation of the +90 degree rotation about the polar axis (phi -> phi + pi/2): element r.

  Returns:
    ``dest`` (N,) int64: token ``t`` moves to token ``dest[t]``; the rotated map is ``m_rot[dest] = m``.

  Raises:
    ValueError: ``faces`` is not a union of whole rows of four (then the rotation leaves the map).
  """
  return pixel_permutations(nside, faces)[0][1]
