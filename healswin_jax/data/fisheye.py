"""WoodScape fisheye camera model and the image <-> HEALPix sphere projections (HEAL-SWIN, arXiv:2307.07313).

Camera model (WoodScape ``radial_poly``, as in the original ``project_on_s2.py``): a ray at angle ``theta``
from the optical axis and azimuth ``phi`` in the image plane lands at image radius
``rho(theta) = k1 theta + k2 theta^2 + k3 theta^3 + k4 theta^4`` (pixels) and pixel coordinates

    u = rho cos(phi) + cx_offset + W/2 - 0.5            (column, pixel centres at integers)
    v = aspect_ratio * rho sin(phi) + cy_offset + H/2 - 0.5   (row)

Camera frame: z = optical axis, x = image right (+u), y = image down (+v). By default the optical axis is the
HEALPix north pole and ``phi`` is the HEALPix longitude (``rotate_pole=False`` in the original); a 3x3
``rotation`` maps camera-frame directions to sphere directions otherwise.

:class:`SphereProjection` holds every index table for one (camera, nside, faces, rotation), computed once in
numpy (healpy for ``pix2ang``/``vec2pix``); applying it is a gather:

- image -> sphere: RGB bilinear, labels and depth nearest, at the centres of the HEALPix NEST pixels of the
  used faces (``N = len(faces) * nside**2``, in NEST order face by face, the model's input layout);
  ``sphere_mask`` says which sphere pixels see the image.
- sphere -> image (back-projection): every image pixel's ray is found by inverting the lens polynomial
  (monotone interpolation on a dense theta grid, then Newton steps), and takes the value of the HEALPix pixel
  that contains it; ``image_mask`` (the coverage mask) marks image pixels whose ray lies in the
  used faces. Flat and spherical models are scored on exactly these image pixels.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import os
from typing import Any, Mapping, Sequence

import healpy as hp
import numpy as np

from infra import files

WOODSCAPE_FOV_DEG = 190.0  # the field of view of WoodScape's four fisheye cameras (Yogamani et al. 2019)
# The original's pixel ratio, sphere : image: nside 256 on 8 faces (524,288) vs the 768 x 640 flat input (491,520).
PAPER_PIXEL_RATIO = 524288 / 491520
from healswin_jax.healpix import topology

_INTRINSIC_KEYS = ("k1", "k2", "k3", "k4", "cx_offset", "cy_offset", "aspect_ratio", "width", "height")


@dataclasses.dataclass(frozen=True)
class FisheyeCamera:
  """WoodScape intrinsics (``calibration/*.json`` → ``"intrinsic"``). Frozen and hashable (a cache key).

  Attributes:
    k1, k2, k3, k4: lens polynomial coefficients, ``rho(theta) = sum_i k_i theta^i`` in pixels.
    cx_offset, cy_offset: principal point offset from the image centre, pixels.
    aspect_ratio: vertical / horizontal pixel scale.
    width, height: image size W, H in pixels.
    fov_deg: full field of view in degrees (rays with theta > fov_deg / 2 see nothing; WoodScape's cameras
      have 190); None = every ray of the lens polynomial's monotone range.
  """
  k1: float
  k2: float
  k3: float
  k4: float
  cx_offset: float
  cy_offset: float
  aspect_ratio: float
  width: int
  height: int
  fov_deg: float | None = None

  def __post_init__(self):
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      if v is None and f.name == "fov_deg":  # the only optional field
        continue
      if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise ValueError(f"camera field {f.name} = {v!r} must be a finite number; check the calibration file.")
    if self.width <= 0 or self.height <= 0:
      raise ValueError(f"camera image size must be positive, got width={self.width}, height={self.height}.")
    if not self.aspect_ratio > 0:
      raise ValueError(f"aspect_ratio must be > 0, got {self.aspect_ratio}.")
    if not self.k1 > 0:
      raise ValueError(f"k1 = {self.k1}: the lens polynomial must increase at theta = 0 (k1 > 0); "
                       "check the calibration file.")
    if self.fov_deg is not None and not 0 < self.fov_deg <= 360:
      raise ValueError(f"fov_deg = {self.fov_deg}: the field of view must be in (0, 360] degrees (WoodScape: "
                       f"{WOODSCAPE_FOV_DEG:g}), or None for the lens polynomial's whole range.")

  # ---- construction -------------------------------------------------------------------------------------
  @classmethod
  def from_json(cls, source: str | os.PathLike | Mapping[str, Any]) -> "FisheyeCamera":
    """Reads a WoodScape calibration (a path to ``calibration/<frame>.json`` or its parsed dict)."""
    where = "calibration dict"
    if not isinstance(source, Mapping):
      where = os.fspath(source)
      with files.reading(where, "calibration JSON", "restore the file from the data set (a WoodScape "
                         "calibration/<frame>.json)"):
        with open(where) as f:
          source = json.load(f)
    if "intrinsic" not in source:
      raise KeyError(f"{where}: no 'intrinsic' block; a WoodScape calibration JSON has "
                     f"{{'intrinsic': {{{', '.join(_INTRINSIC_KEYS)}, ...}}, 'extrinsic': ...}}.")
    intr = source["intrinsic"]
    missing = [k for k in _INTRINSIC_KEYS if k not in intr]
    if missing:
      raise KeyError(f"{where}: 'intrinsic' lacks {missing}; expected keys {list(_INTRINSIC_KEYS)}.")
    if intr.get("model", "radial_poly") != "radial_poly":
      raise ValueError(f"{where}: lens model {intr['model']!r} is not supported (only 'radial_poly').")
    try:
      return cls(**{k: float(intr[k]) for k in _INTRINSIC_KEYS[:7]},
                 width=int(round(float(intr["width"]))), height=int(round(float(intr["height"]))))
    except (TypeError, ValueError, OverflowError) as e:
      raise ValueError(f"{where}: invalid intrinsics ({e}). Fix the 'intrinsic' block of this file.") from e

  def to_json_dict(self) -> dict[str, Any]:
    """The calibration JSON schema WoodScape publishes (intrinsic block; identity-free extrinsic stub)."""
    intr = {k: getattr(self, k) for k in _INTRINSIC_KEYS}
    intr.update(model="radial_poly", poly_order=4)
    return {"intrinsic": intr, "extrinsic": {"quaternion": [0.0, 0.0, 0.0, 1.0], "translation": [0.0, 0.0, 0.0]},
            "name": "FV"}

  @classmethod
  def woodscape_fv(cls, width: int = 1280) -> "FisheyeCamera":
    """A WoodScape front-view-like camera (``00000_FV.json`` intrinsics), rescaled to ``width`` pixels.

    Rescaling multiplies the polynomial and offsets by ``width / 1280`` (the field of view is unchanged);
    the height is ``round(966 * width / 1280)``.
    """
    s = width / 1280.0
    return cls(k1=339.749 * s, k2=-31.988 * s, k3=48.275 * s, k4=-7.201 * s, cx_offset=3.942 * s,
               cy_offset=-3.093 * s, aspect_ratio=1.0, width=int(width), height=int(round(966 * s)))

  @classmethod
  def woodscape_fv_crop(cls, width: int, height: int, fov_deg: float | None = None) -> "FisheyeCamera":
    """The WoodScape front camera (``00000_FV.json`` lens, 190-degree field of view) as the original's flat
    inputs see it: the 1280 x 966 image resized so its short side is ``height``, then centre-cropped to
    ``width`` (e.g. 768 x 640 in the segmentation runs, 96 x 80 here: the paper's 6:5 aspect).

    The lens polynomial and the principal-point offset scale by ``height / 966``; the crop keeps the principal
    point at the image centre plus the scaled offset. Corners beyond the field of view see nothing.
    """
    s = height / 966.0
    full_width = int(round(1280 * s))
    if not 0 < width <= full_width:
      raise ValueError(f"woodscape_fv_crop: width {width} must be in 1..{full_width}, the width of the 1280 x 966 "
                       f"image resized to height {height}; use a smaller width or a larger height.")
    cam = cls.woodscape_fv(1280)
    return cls(k1=cam.k1 * s, k2=cam.k2 * s, k3=cam.k3 * s, k4=cam.k4 * s, cx_offset=cam.cx_offset * s,
               cy_offset=cam.cy_offset * s, aspect_ratio=1.0, width=int(width), height=int(height),
               fov_deg=WOODSCAPE_FOV_DEG if fov_deg is None else float(fov_deg))

  # ---- lens polynomial ----------------------------------------------------------------------------------
  @property
  def k(self) -> np.ndarray:
    return np.array([self.k1, self.k2, self.k3, self.k4])

  def rho(self, theta: np.ndarray) -> np.ndarray:
    """Image radius (pixels) of a ray at angle ``theta`` (rad) from the optical axis."""
    t = np.asarray(theta, np.float64)
    return t * (self.k1 + t * (self.k2 + t * (self.k3 + t * self.k4)))

  def drho(self, theta: np.ndarray) -> np.ndarray:
    t = np.asarray(theta, np.float64)
    return self.k1 + t * (2 * self.k2 + t * (3 * self.k3 + t * 4 * self.k4))

  @functools.cached_property
  def theta_max(self) -> float:
    """Largest theta of the lens model: the first zero of ``rho'`` in (0, pi], else pi, capped at half the
    field of view (``fov_deg``).

    Beyond it rho(theta) is not invertible (or not physical) or outside the lens, so no ray there is used.
    """
    roots = np.roots([4 * self.k4, 3 * self.k3, 2 * self.k2, self.k1]) if any(
        (self.k2, self.k3, self.k4)) else np.array([])
    real = np.sort(roots[np.abs(roots.imag) < 1e-12].real)
    real = real[(real > 0) & (real <= np.pi)]
    monotone = float(real[0]) if real.size else float(np.pi)
    return monotone if self.fov_deg is None else min(monotone, float(np.radians(self.fov_deg / 2)))

  @functools.cached_property
  def _rho_table(self) -> tuple[np.ndarray, np.ndarray]:
    theta = np.linspace(0.0, self.theta_max, 4097)
    return theta, self.rho(theta)

  def theta_of_rho(self, rho: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverts the lens polynomial: returns ``(theta, valid)`` for image radii ``rho`` (pixels).

    Monotone linear interpolation of the dense table ``(theta_i, rho(theta_i))`` on [0, theta_max] gives a
    start within ~1e-7 rad; two Newton steps make it exact to float64 round-off. ``valid`` is False where
    ``rho`` exceeds ``rho(theta_max)`` (no ray of the lens model lands there).
    """
    rho = np.asarray(rho, np.float64)
    tt, rr = self._rho_table
    valid = rho <= rr[-1]
    theta = np.interp(rho, rr, tt)
    for _ in range(2):
      d = self.drho(theta)
      theta = np.clip(theta - (self.rho(theta) - rho) / np.where(d > 0, d, 1.0), 0.0, self.theta_max)
    return theta, valid

  # ---- camera <-> image ---------------------------------------------------------------------------------
  @property
  def principal_point(self) -> tuple[float, float]:
    return self.cx_offset + self.width / 2 - 0.5, self.cy_offset + self.height / 2 - 0.5

  def project(self, theta: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera angles (theta from the optical axis, phi azimuth from +u towards +v) -> pixel (u, v)."""
    r = self.rho(theta)
    cu, cv = self.principal_point
    return r * np.cos(phi) + cu, self.aspect_ratio * r * np.sin(phi) + cv

  def unproject(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel (u, v) -> camera angles ``(theta, phi, valid)`` by inverting :meth:`project`."""
    cu, cv = self.principal_point
    x = np.asarray(u, np.float64) - cu
    y = (np.asarray(v, np.float64) - cv) / self.aspect_ratio
    theta, valid = self.theta_of_rho(np.hypot(x, y))
    return theta, np.arctan2(y, x), valid

  def pixel_grid(self) -> tuple[np.ndarray, np.ndarray]:
    """``(u, v)`` of every pixel centre, each (H, W)."""
    v, u = np.meshgrid(np.arange(self.height, dtype=np.float64), np.arange(self.width, dtype=np.float64),
                       indexing="ij")
    return u, v

  def pixel_rays(self) -> tuple[np.ndarray, np.ndarray]:
    """Unit ray directions in the camera frame for every pixel centre: ``(rays (H, W, 3), valid (H, W))``."""
    theta, phi, valid = self.unproject(*self.pixel_grid())
    return angles_to_vec(theta, phi), valid


def angles_to_vec(theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
  """(theta, phi) -> unit vectors (..., 3), healpy's convention (theta colatitude from +z)."""
  st = np.sin(theta)
  return np.stack([st * np.cos(phi), st * np.sin(phi), np.cos(theta)], axis=-1)


def vec_to_angles(vec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  vec = np.asarray(vec, np.float64)
  r = np.linalg.norm(vec, axis=-1)
  return np.arccos(np.clip(vec[..., 2] / r, -1.0, 1.0)), np.arctan2(vec[..., 1], vec[..., 0])


def rotation_matrix(axis: Sequence[float], angle: float) -> np.ndarray:
  """Right-handed rotation by ``angle`` (rad) about ``axis`` (Rodrigues), a (3, 3) float64 matrix."""
  a = np.asarray(axis, np.float64)
  a = a / np.linalg.norm(a)
  k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
  return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


@dataclasses.dataclass(frozen=True, eq=False)
class SphereProjection:
  """Index tables between a fisheye image (H, W) and the HEALPix NEST pixels of the used faces (N).

  Build with :func:`make_projection` (cached). All arrays are read-only numpy.

  Attributes:
    camera, nside, faces, rotation: the key (``rotation`` maps camera to sphere directions, None = identity).
    pix: (N,) global NEST index of every sphere slot (slot order = model input order).
    u, v: (N,) float64 image coordinates of the sphere pixel centres (nan where theta > theta_max).
    sphere_mask: (N,) bool, the sphere pixel centre lands in the image (and within the lens model).
    bilinear_index: (N, 4) int64 flat image indices (row * W + col) of the 4 bilinear neighbours.
    bilinear_weight: (N, 4) float32 weights (0 outside ``sphere_mask``).
    nearest_index: (N,) int64 flat image index of the rounded position (0 outside ``sphere_mask``).
    image_slot: (H, W) int64 sphere slot containing each image pixel's ray, -1 outside the coverage.
    image_mask: (H, W) bool coverage mask = image pixels whose ray lies in the used faces.
    image_dirs: (H, W, 3) unit ray of every image pixel in the sphere frame (zeros where invalid).
  """
  camera: FisheyeCamera
  nside: int
  faces: tuple[int, ...]
  rotation: np.ndarray | None
  pix: np.ndarray
  u: np.ndarray
  v: np.ndarray
  sphere_mask: np.ndarray
  bilinear_index: np.ndarray
  bilinear_weight: np.ndarray
  nearest_index: np.ndarray
  image_slot: np.ndarray
  image_mask: np.ndarray
  image_dirs: np.ndarray

  @property
  def num_pixels(self) -> int:
    return self.pix.shape[0]

  @property
  def image_shape(self) -> tuple[int, int]:
    return self.camera.height, self.camera.width

  # ---- image -> sphere ----------------------------------------------------------------------------------
  def _flat(self, x: np.ndarray, trailing: int) -> tuple[np.ndarray, tuple[int, ...]]:
    h, w = self.image_shape
    x = np.asarray(x)
    lead = x.ndim - 2 - trailing
    if lead < 0 or x.shape[lead:lead + 2] != (h, w):
      raise ValueError(f"expected image array (..., {h}, {w}{', C' * trailing}), got shape {x.shape}; "
                       f"the projection was built for a {w}x{h} camera.")
    return x.reshape(x.shape[:lead] + (h * w,) + x.shape[lead + 2:]), x.shape[:lead]

  def rgb_to_sphere(self, image: np.ndarray) -> np.ndarray:
    """Bilinear sampling at the sphere pixel centres: (..., H, W, C) -> (..., N, C) float32 (0 outside)."""
    flat, lead = self._flat(image, 1)
    g = np.take(flat, self.bilinear_index, axis=len(lead)).astype(np.float32)  # (..., N, 4, C)
    return np.einsum("...nkc,nk->...nc", g, self.bilinear_weight)

  def labels_to_sphere(self, labels: np.ndarray, fill: int = 0) -> np.ndarray:
    """Nearest sampling: (..., H, W) int -> (..., N); sphere pixels that see no image get ``fill`` (void)."""
    flat, lead = self._flat(labels, 0)
    out = np.take(flat, self.nearest_index, axis=len(lead))
    return np.where(self.sphere_mask, out, np.asarray(fill, out.dtype))

  def depth_to_sphere(self, depth: np.ndarray) -> np.ndarray:
    """Nearest sampling of a depth map: (..., H, W) -> (..., N) float32, ``inf`` where there is no image."""
    flat, lead = self._flat(depth, 0)
    out = np.take(flat, self.nearest_index, axis=len(lead)).astype(np.float32)
    return np.where(self.sphere_mask, out, np.float32(np.inf))

  # ---- sphere -> image ----------------------------------------------------------------------------------
  def to_image(self, values: np.ndarray, fill: Any = 0) -> np.ndarray:
    """Back-projection: (..., N, *F) sphere values -> (..., H, W, *F), nearest HEALPix pixel per image pixel.

    Image pixels outside :attr:`image_mask` get ``fill``.
    """
    values = np.asarray(values)
    axis = next((a for a in range(values.ndim) if values.shape[a] == self.num_pixels), None)
    if axis is None:
      raise ValueError(f"no axis of length N={self.num_pixels} (nside={self.nside}, {len(self.faces)} faces) in "
                       f"values of shape {values.shape}.")
    out = np.take(values, np.maximum(self.image_slot, 0), axis=axis)  # (..., H, W, *F)
    mask = self.image_mask.reshape(self.image_shape + (1,) * (values.ndim - axis - 1))
    return np.where(mask, out, np.asarray(fill, dtype=out.dtype))


def make_projection(camera: FisheyeCamera, nside: int, faces: Sequence[int] = tuple(range(8)),
                    rotation: np.ndarray | None = None) -> SphereProjection:
  """Builds (or returns the cached) :class:`SphereProjection`.

  Args:
    camera: the fisheye intrinsics.
    nside: HEALPix resolution (power of 2).
    faces: used base pixels, strictly increasing (default 0..7: the original's upper faces, which contain the
      whole front hemisphere theta <= 90 deg when the optical axis is the north pole).
    rotation: (3, 3) rotation taking camera-frame directions to sphere directions; None = optical axis at
      the north pole, image +u at longitude 0.
  """
  key = None if rotation is None else tuple(np.asarray(rotation, np.float64).round(12).ravel().tolist())
  return _make_projection(camera, topology.check_nside(nside), topology.check_faces(faces), key)


@functools.lru_cache(maxsize=32)
def _make_projection(camera: FisheyeCamera, nside: int, faces: tuple[int, ...],
                     rot_key: tuple[float, ...] | None) -> SphereProjection:
  rot = None if rot_key is None else np.asarray(rot_key).reshape(3, 3)
  if rot is not None and not np.allclose(rot @ rot.T, np.eye(3), atol=1e-9):
    raise ValueError("rotation must be an orthogonal 3x3 matrix (camera -> sphere directions).")
  h, w = camera.height, camera.width
  npf = nside * nside

  # Sphere -> image: where does each HEALPix pixel centre land in the image?
  pix = topology.token_to_nest(nside, faces)
  vec = np.stack(hp.pix2vec(nside, pix, nest=True), axis=-1)
  cam_vec = vec if rot is None else vec @ rot  # rows: R^T v
  theta, phi = vec_to_angles(cam_vec)
  u, v = camera.project(theta, phi)
  in_lens = theta <= camera.theta_max
  u = np.where(in_lens, u, np.nan)
  v = np.where(in_lens, v, np.nan)
  # A sphere pixel sees the image if its centre falls on some pixel's footprint [-0.5, W - 0.5).
  sphere_mask = in_lens & (u >= -0.5) & (u < w - 0.5) & (v >= -0.5) & (v < h - 0.5)
  uc = np.where(sphere_mask, u, 0.0)
  vc = np.where(sphere_mask, v, 0.0)
  # Bilinear from floor and floor + 1 (not ceil: at integer coordinates ceil == floor and the original's
  # weights collapse to 0); neighbours are clamped at the border half-pixel strip.
  u0 = np.clip(np.floor(uc), 0, w - 1)
  v0 = np.clip(np.floor(vc), 0, h - 1)
  fu = np.clip(uc - u0, 0.0, 1.0)
  fv = np.clip(vc - v0, 0.0, 1.0)
  u1 = np.minimum(u0 + 1, w - 1)
  v1 = np.minimum(v0 + 1, h - 1)
  idx = np.stack([v0 * w + u0, v0 * w + u1, v1 * w + u0, v1 * w + u1], axis=-1).astype(np.int64)
  wts = np.stack([(1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv], axis=-1)
  wts = np.where(sphere_mask[:, None], wts, 0.0).astype(np.float32)
  nearest = (np.clip(np.rint(vc), 0, h - 1) * w + np.clip(np.rint(uc), 0, w - 1)).astype(np.int64)

  # Image -> sphere: each image pixel's ray (inverted lens polynomial) and the HEALPix pixel containing it.
  rays, valid = camera.pixel_rays()
  dirs = rays if rot is None else rays @ rot.T
  gpix = hp.vec2pix(nside, dirs[..., 0], dirs[..., 1], dirs[..., 2], nest=True)
  rank = np.full(12, -1, np.int64)
  rank[list(faces)] = np.arange(len(faces))
  face_rank = rank[gpix // npf]
  image_mask = valid & (face_rank >= 0)
  if not sphere_mask.any() and not image_mask.any():
    raise ValueError(f"the camera sees none of the faces {faces} at nside={nside} (0 % coverage): {camera}. Fix: "
                     "check the calibration (a lens polynomial that turns back at once, or a principal point "
                     "offset outside the image) or the faces / rotation.")
  image_slot = np.where(image_mask, face_rank * npf + gpix % npf, -1)
  dirs = np.where(valid[..., None], dirs, 0.0)

  arrays = dict(pix=pix, u=u, v=v, sphere_mask=sphere_mask, bilinear_index=idx, bilinear_weight=wts,
                nearest_index=nearest, image_slot=image_slot, image_mask=image_mask, image_dirs=dirs)
  for a in arrays.values():
    a.setflags(write=False)
  return SphereProjection(camera=camera, nside=nside, faces=faces, rotation=rot, **arrays)


# ---- matched resolutions ------------------------------------------------------------------------------------


def pixel_ratio(nside: int, num_faces: int, width: int, height: int) -> float:
  """Sphere : image pixel count, ``num_faces * nside**2 / (width * height)`` (the paper: 1.067)."""
  return num_faces * nside**2 / (width * height)


def matched_image_size(nside: int, num_faces: int, ratio: float = PAPER_PIXEL_RATIO,
                       aspect: tuple[int, int] = (6, 5)) -> tuple[int, int]:
  """The ``(width, height)`` image with ``width : height = aspect`` and exactly ``num_faces * nside**2 / ratio``
  pixels (nside 32 on 8 faces: 96 x 80, the paper's 1.067 and 6:5).

  Raises:
    ValueError naming the nside values that can be matched when no such image exists.
  """
  def size(ns):
    k2 = num_faces * ns**2 / (ratio * aspect[0] * aspect[1])
    k = int(round(np.sqrt(k2)))
    ok = k >= 1 and abs(k * k * aspect[0] * aspect[1] * ratio - num_faces * ns**2) < 1e-9 * num_faces * ns**2
    return (k * aspect[0], k * aspect[1]) if ok else None

  out = size(nside)
  if out is None:
    valid = [ns for ns in (2**i for i in range(11)) if size(ns)]
    raise ValueError(
        f"no {aspect[0]}:{aspect[1]} image has {num_faces} * {nside}**2 / {ratio:.4g} pixels, so the pixel ratio "
        f"{ratio:.4g} cannot be matched at nside {nside} on {num_faces} faces. Valid choices for {num_faces} faces: "
        + (", ".join(f"nside {ns} with {size(ns)[0]} x {size(ns)[1]}" for ns in valid) if valid else
           "none (use 8 faces: nside 16 with 48 x 40, nside 32 with 96 x 80)") + ".")
  return out


def check_matched_ratio(nside: int, num_faces: int, width: int, height: int, ratio: float = PAPER_PIXEL_RATIO,
                        rel_tol: float = 0.01) -> float:
  """The pixel ratio of (nside, faces) against a ``width x height`` image, or a ValueError naming the matched
  image size (or the matchable nside values) when it is not within ``rel_tol`` of ``ratio``."""
  r = pixel_ratio(nside, num_faces, width, height)
  if abs(r / ratio - 1) > rel_tol:
    w, h = matched_image_size(nside, num_faces, ratio)
    raise ValueError(f"pixel ratio {num_faces} * {nside}**2 : {width} * {height} = {r:.4g} is not the paper's "
                     f"{ratio:.4g}. Fix: use image_width={w}, image_height={h} for nside {nside} on {num_faces} "
                     f"faces.")
  return r


def check_face_coverage(proj: SphereProjection) -> None:
  """Raises a ValueError naming the faces the camera covers when some used face sees no image pixel."""
  seen = proj.sphere_mask.reshape(len(proj.faces), -1).any(1)
  if not seen.all():
    all_faces = _make_projection(proj.camera, proj.nside, tuple(range(12)), None)
    covered = tuple(int(f) for f in np.flatnonzero(all_faces.sphere_mask.reshape(12, -1).any(1)))
    missing = tuple(f for f, s in zip(proj.faces, seen) if not s)
    raise ValueError(f"faces {missing} see no pixel of the {proj.camera.width} x {proj.camera.height} image "
                     f"(field of view {proj.camera.fov_deg} deg). Fix: use faces within {covered}, the faces "
                     f"the image covers (the original uses 0..7).")
