"""WoodScape and SynWoodScape readers (a local copy in the published layout) with cached sphere projections.

Layouts read (frame names such as ``00000_FV`` pair the files):

WoodScape (https://github.com/valeoai/WoodScape)::

    ROOT/rgb_images/00000_FV.png
    ROOT/semantic_annotations/gtLabels/00000_FV.png      (uint8 class ids, 0 = void; 10 classes)
    ROOT/calibration/00000_FV.json                        ({"intrinsic": {"k1".."k4", "cx_offset", ...}, ...})

SynWoodScape adds ``ROOT/depth_maps/raw_data/00000_FV.npy`` (float metres; 1000 = sky). Its archives unpack
with a doubled folder (``rgb_images/rgb_images/``, ``calibration/calibration/``), which is accepted too.

The root comes from the argument or the environment variable ``WOODSCAPE_DIR`` / ``SYNWOODSCAPE_DIR``; the
experiments take it with ``--set data.root=/path``. The train/val split is the original's: paths sorted, then
permuted with ``RandomState(42)``, the first 80 % train.

Projections (RGB bilinear, labels and depth nearest; see :mod:`healswin_jax.data.fisheye`) are computed once
per frame and cached as ``.npz`` under ``cache_dir``, keyed by frame, nside, faces and image width.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from typing import Sequence

import numpy as np

from healswin_jax.data.fisheye import FisheyeCamera, make_projection
from infra import files

ENV_WOODSCAPE = "WOODSCAPE_DIR"
ENV_SYNWOODSCAPE = "SYNWOODSCAPE_DIR"
WOODSCAPE_CLASSES = ("void", "road", "lanemarks", "curb", "person", "rider", "vehicles", "bicycle", "motorcycle",
                     "traffic_sign")
SKY_DEPTH = 1000.0  # SynWoodScape's depth value for sky
_CACHE_VERSION = 1


def resolve_root(root: str | None, synthetic: bool = False) -> str:
  """The dataset folder from ``root`` or the environment; a clear error if it is missing."""
  env = ENV_SYNWOODSCAPE if synthetic else ENV_WOODSCAPE
  name = "SynWoodScape" if synthetic else "WoodScape"
  root = root or os.environ.get(env)
  if not root:
    raise FileNotFoundError(f"{name} location not given: set the environment variable {env}=/path/to/{name} "
                            f"or pass --set data.root=/path/to/{name} (folder with rgb_images/, calibration/, ...).")
  if not os.path.isdir(root):
    raise FileNotFoundError(f"{name} folder {root!r} does not exist; fix {env} or --set data.root=... .")
  return root


def _subdir(root: str, *parts: str) -> str:
  """``root/parts``, or SynWoodScape's doubled archive folder ``root/parts[0]/parts[0]/parts[1:]``."""
  path = os.path.join(root, *parts)
  doubled = os.path.join(root, parts[0], *parts)
  return doubled if os.path.isdir(doubled) else path


@dataclasses.dataclass(frozen=True)
class Frame:
  """File paths of one frame (``depth`` is None for WoodScape)."""
  name: str
  rgb: str
  labels: str
  calibration: str
  depth: str | None = None


def list_frames(root: str | None = None, synthetic: bool = False, cam_pos: str | None = None) -> list[Frame]:
  """All frames under ``root`` (sorted by name), optionally one camera (``"FV"``, ``"RV"``, ``"MVL"``, ``"MVR"``).

  Raises:
    FileNotFoundError: the root, a required sub-folder or a frame's label/calibration/depth file is missing.
  """
  root = resolve_root(root, synthetic)
  dirs = dict(rgb=_subdir(root, "rgb_images"), labels=_subdir(root, "semantic_annotations", "gtLabels"),
              calibration=_subdir(root, "calibration"))
  if synthetic:
    dirs["depth"] = _subdir(root, "depth_maps", "raw_data")
  for what, d in dirs.items():
    if not os.path.isdir(d):
      raise FileNotFoundError(f"{d!r} ({what}) not found: {root!r} is not in the published "
                              f"{'SynWoodScape' if synthetic else 'WoodScape'} layout "
                              "(see healswin_jax/data/woodscape.py).")
  names = sorted(os.path.splitext(f)[0] for f in os.listdir(dirs["rgb"]) if f.endswith(".png"))
  if cam_pos is not None:
    names = [n for n in names if n.rsplit("_", 1)[-1].upper() == cam_pos.upper()]
  if not names:
    raise FileNotFoundError(f"no frames (*.png) in {dirs['rgb']!r}" + (f" for camera {cam_pos!r}" if cam_pos else ""))
  frames = []
  for n in names:
    f = Frame(name=n, rgb=os.path.join(dirs["rgb"], n + ".png"), labels=os.path.join(dirs["labels"], n + ".png"),
              calibration=os.path.join(dirs["calibration"], n + ".json"),
              depth=os.path.join(dirs["depth"], n + ".npy") if synthetic else None)
    for p in (f.labels, f.calibration, f.depth):
      if p is not None and not os.path.exists(p):
        raise FileNotFoundError(f"frame {n}: {p!r} is missing (every rgb image needs its label, calibration"
                                f"{' and depth' if synthetic else ''} file).")
    frames.append(f)
  return frames


def train_val_split(frames: Sequence[Frame], train_share: float = 0.8) -> tuple[list[Frame], list[Frame]]:
  """The original's split: sort by name, permute with ``RandomState(42)``, first ``floor(share * n)`` train."""
  if not 0 < train_share < 1:
    raise ValueError(f"train_share={train_share} must be in (0, 1).")
  frames = sorted(frames, key=lambda f: f.name)
  k = int(np.floor(len(frames) * train_share))
  if k == 0 or k == len(frames):
    raise ValueError(f"{len(frames)} frame(s) cannot be split into non-empty train and validation parts "
                     f"(train_share={train_share}). Fix: point data.root at a complete copy of the data set "
                     "(or one with at least two frames per camera selected by data.cam_pos).")
  perm = np.random.RandomState(42).permutation(len(frames))
  return [frames[i] for i in perm[:k]], [frames[i] for i in perm[k:]]


def load_frame(frame: Frame, image_width: int | None = None) -> dict:
  """Reads one frame: ``rgb`` (H, W, 3) uint8, ``labels`` (H, W) int32, ``depth`` (H, W) float32 or absent,
  ``camera`` (:class:`FisheyeCamera`).

  ``image_width`` resizes the images (bilinear RGB, nearest labels/depth) and rescales the intrinsics
  consistently (polynomial and offsets times the scale), so the projection geometry stays exact.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  camera = FisheyeCamera.from_json(frame.calibration)
  fix = "replace it with the data set's original (re-extract or re-download this frame), or delete the frame"
  with files.reading(frame.rgb, "RGB image", fix):
    rgb = Image.open(frame.rgb).convert("RGB")
  with files.reading(frame.labels, "label image", fix):
    lab = Image.open(frame.labels)
    lab.load()
  if lab.mode not in ("L", "P", "I", "I;16"):
    raise ValueError(f"{frame.labels}: label images must be single-channel class ids (gtLabels), got mode {lab.mode}.")
  if rgb.size != (camera.width, camera.height) or lab.size != rgb.size:
    raise ValueError(f"frame {frame.name}: image {rgb.size} / labels {lab.size} do not match the calibration size "
                     f"{(camera.width, camera.height)}.")
  depth = None
  if frame.depth is not None:
    with files.reading(frame.depth, "depth .npy", fix):
      depth = np.load(frame.depth).astype(np.float32)
    if depth.shape != (camera.height, camera.width):
      raise ValueError(f"{frame.depth}: depth shape {depth.shape} != image {(camera.height, camera.width)}.")
  if image_width is not None and image_width != camera.width:
    s = image_width / camera.width
    h = int(round(camera.height * s))
    camera = dataclasses.replace(camera, k1=camera.k1 * s, k2=camera.k2 * s, k3=camera.k3 * s, k4=camera.k4 * s,
                                 cx_offset=camera.cx_offset * s, cy_offset=camera.cy_offset * s,
                                 width=int(image_width), height=h)
    rgb = rgb.resize((image_width, h), Image.BILINEAR)
    lab = lab.resize((image_width, h), Image.NEAREST)
    if depth is not None:
      depth = np.asarray(Image.fromarray(depth).resize((image_width, h), Image.NEAREST))
  out = dict(rgb=np.asarray(rgb, np.uint8), labels=np.asarray(lab).astype(np.int32), camera=camera)
  if depth is not None:
    out["depth"] = clean_depth(depth)
  return out


def clean_depth(depth: np.ndarray) -> np.ndarray:
  """SynWoodScape depth with no-data (0) and sky (1000) as ``inf`` (excluded from losses and metrics)."""
  depth = np.asarray(depth, np.float32)
  return np.where((depth <= 0) | (depth >= SKY_DEPTH) | ~np.isfinite(depth), np.float32(np.inf), depth)


def _cache_path(cache_dir: str, frame: Frame, nside: int, faces: tuple[int, ...], image_width: int | None) -> str:
  """Cache file of one frame's projection, keyed on the settings and every source file's size and mtime.

  A fixed label file (or calibration, image, depth) changes its mtime and so the key: the stale projection is
  never read again.
  """
  sources = [p for p in (frame.rgb, frame.labels, frame.calibration, frame.depth) if p is not None]
  stamps = [[os.path.abspath(p), os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in sources]
  key = json.dumps([_CACHE_VERSION, stamps, nside, list(faces), image_width])
  return os.path.join(cache_dir, f"{frame.name}_{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz")


def load_projected(frames: Sequence[Frame], nside: int, faces: Sequence[int] = tuple(range(8)),
                   image_width: int | None = None, cache_dir: str | None = None,
                   progress: bool = True) -> dict[str, np.ndarray]:
  """Flat frames and their sphere projections, stacked; each frame's projection cached on disk.

  Returns:
    dict with flat ``rgb`` (n, H, W, 3) float32 in [0, 1], ``labels`` (n, H, W), optional ``depth`` (n, H, W);
    sphere ``sphere_rgb`` (n, N, 3), ``sphere_labels`` (n, N), optional ``sphere_depth`` (n, N),
    ``sphere_mask`` (n, N) and ``image_mask`` (n, H, W) (coverage), and ``cameras`` (a list, one per frame;
    WoodScape's four cameras have different calibrations). All frames must share one image size.
  """
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  faces = tuple(int(f) for f in faces)
  if cache_dir:
    os.makedirs(cache_dir, exist_ok=True)
  if not frames:
    raise ValueError("load_projected got no frames. Fix: check data.root / data.cam_pos and the split sizes "
                     "(data.num_train, data.num_test >= 1).")
  rows = []
  for frame in tqdm(frames, desc="project to sphere", disable=not progress):
    flat = load_frame(frame, image_width)
    path = _cache_path(cache_dir, frame, nside, faces, image_width) if cache_dir else None
    sph = None
    if path and os.path.exists(path):
      try:
        with np.load(path) as z:
          sph = {k: z[k] for k in z.files}
      except Exception as e:  # pylint: disable=broad-except  (any unreadable cache entry is rebuilt)
        warnings.warn(f"{path}: corrupt projection cache entry ({type(e).__name__}: {e}); rebuilding it.",
                      stacklevel=2)
    if sph is None:
      proj = make_projection(flat["camera"], nside, faces)
      sph = dict(sphere_rgb=proj.rgb_to_sphere(flat["rgb"].astype(np.float32) / 255.0),
                 sphere_labels=proj.labels_to_sphere(flat["labels"]), sphere_mask=proj.sphere_mask,
                 image_mask=proj.image_mask)
      if "depth" in flat:
        sph["sphere_depth"] = proj.depth_to_sphere(flat["depth"])
      if path:
        tmp = path + ".tmp.npz"
        np.savez_compressed(tmp, **sph)
        os.replace(tmp, path)  # atomic: an interrupted run never leaves a half-written cache file
    rows.append((flat, sph))
  shapes = {r[0]["rgb"].shape for r in rows}
  if len(shapes) > 1:
    raise ValueError(f"frames have different image sizes {sorted(shapes)}; pass image_width to resize them.")
  out = dict(rgb=np.stack([f["rgb"] for f, _ in rows]).astype(np.float32) / 255.0,
             labels=np.stack([f["labels"] for f, _ in rows]), cameras=[f["camera"] for f, _ in rows])
  if all("depth" in f for f, _ in rows):
    out["depth"] = np.stack([f["depth"] for f, _ in rows])
  for k in rows[0][1]:
    out[k] = np.stack([s[k] for _, s in rows])
  return out


def write_fake_dataset(root: str, num_frames: int, camera: FisheyeCamera, synthetic: bool = False,
                       seed: int = 0, doubled_folders: bool = False) -> list[str]:
  """Writes a tiny (Syn)WoodScape copy in the published layout, from procedural scenes (tests and demos).

  Labels are the synthetic scene classes; the calibration files use the real JSON schema. Returns the names.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from healswin_jax.data import synthetic as syn  # pylint: disable=g-import-not-at-top

  def mk(*parts):
    d = os.path.join(root, parts[0], *parts) if doubled_folders else os.path.join(root, *parts)
    os.makedirs(d, exist_ok=True)
    return d

  d_rgb, d_lab, d_cal = mk("rgb_images"), mk("semantic_annotations", "gtLabels"), mk("calibration")
  d_dep = mk("depth_maps", "raw_data") if synthetic else None
  data = syn.make_dataset(num_frames, seed, camera)
  names = []
  for i in range(num_frames):
    name = f"{i:05d}_{('FV', 'RV', 'MVL', 'MVR')[i % 4]}"
    Image.fromarray((data["rgb"][i] * 255).round().astype(np.uint8)).save(os.path.join(d_rgb, name + ".png"))
    Image.fromarray(data["labels"][i].astype(np.uint8)).save(os.path.join(d_lab, name + ".png"))
    with open(os.path.join(d_cal, name + ".json"), "w") as f:
      json.dump(camera.to_json_dict(), f, indent=2)
    if synthetic:
      np.save(os.path.join(d_dep, name + ".npy"),
              np.where(np.isfinite(data["depth"][i]), data["depth"][i], SKY_DEPTH).astype(np.float32))
    names.append(name)
  return names
