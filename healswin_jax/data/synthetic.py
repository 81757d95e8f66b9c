"""Procedural 3-D street scenes rendered through the fisheye camera model (offline default dataset).

Each scene is deterministic given its seed: a ground plane with a straight road (dashed centre line, solid
edge lines) and sidewalks, sky, and vehicles (oriented boxes), pedestrians and poles (vertical cylinders) at
known positions. Every image pixel's ray comes from :meth:`FisheyeCamera.pixel_rays` -- the same inverted
lens polynomial the back-projection uses -- and is ray-cast in numpy (all rays x all objects at once), which
gives RGB (Lambertian shading + procedural texture), semantic labels and metric depth (Euclidean distance
along the ray, ``inf`` for sky, beyond 100 m and outside the lens model, like SynWoodScape's sky/no-data).

World frame: X forward, Y left, Z up, ground at Z = 0; the camera sits at (0, 0, height), its optical axis
pitched down by ``pitch`` and turned by ``yaw``. Camera frame (fisheye.py): x right, y down, z optical axis.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from healswin_jax.data.fisheye import FisheyeCamera

CLASSES = ("void", "road", "lanemark", "sidewalk", "vehicle", "person", "pole", "sky")
VOID, ROAD, LANEMARK, SIDEWALK, VEHICLE, PERSON, POLE, SKY = range(len(CLASSES))
NUM_CLASSES = len(CLASSES)
# RGB used to draw label maps in figures.
CLASS_COLORS = np.array([[0, 0, 0], [128, 64, 128], [255, 255, 255], [244, 35, 232], [0, 0, 142],
                         [220, 20, 60], [153, 153, 153], [70, 130, 180]], np.uint8)

_SUN = np.array([0.4, 0.3, 0.87]) / np.linalg.norm([0.4, 0.3, 0.87])


@dataclasses.dataclass(frozen=True, eq=False)
class Scene:
  """One procedural scene (all lengths in metres, angles in radians).

  Attributes:
    height, pitch, yaw: camera pose (pitch > 0 looks down).
    road_offset, road_heading, road_half_width: the road is |Y'| < half width in the frame rotated by
      ``road_heading`` and shifted laterally by ``road_offset``.
    boxes: (K, 7) vehicles ``[x, y, yaw, half_length, half_width, height, 0]``, standing on the ground.
    box_colors: (K, 3) base colours.
    cylinders: (M, 5) ``[x, y, radius, height, class]`` (class PERSON or POLE).
    cylinder_colors: (M, 3).
    tint: (3,) global colour cast of the ground (lighting variation between scenes).
  """
  height: float
  pitch: float
  yaw: float
  road_offset: float
  road_heading: float
  road_half_width: float
  boxes: np.ndarray
  box_colors: np.ndarray
  cylinders: np.ndarray
  cylinder_colors: np.ndarray
  tint: np.ndarray


def random_scene(seed: int) -> Scene:
  """A scene drawn from ``numpy.random.default_rng(seed)``: 2-5 vehicles, 1-4 pedestrians, 2-5 poles."""
  rng = np.random.default_rng(seed)
  half = rng.uniform(3.0, 5.0)
  offset = rng.uniform(-1.5, 1.5)
  heading = rng.uniform(-0.15, 0.15)
  c, s = np.cos(heading), np.sin(heading)

  def to_world(xr, yr):  # road frame -> world
    return c * xr - s * (yr + offset), s * xr + c * (yr + offset)

  nv = rng.integers(2, 6)
  xr = rng.uniform(-3.0, 25.0, nv)
  yr = rng.choice([-0.5, 0.5], nv) * half + rng.uniform(-0.6, 0.6, nv)
  # Keep vehicles off the camera itself (the ego car is at the origin).
  xr = np.where((np.abs(xr) < 4.0) & (np.abs(to_world(xr, yr)[1]) < 2.5), xr + 8.0, xr)
  bx, by = to_world(xr, yr)
  boxes = np.stack([bx, by, heading + rng.normal(0, 0.1, nv), rng.uniform(1.8, 2.4, nv),
                    rng.uniform(0.8, 1.0, nv), rng.uniform(1.4, 1.9, nv), np.zeros(nv)], axis=1)
  hue = rng.uniform(0, 1, (nv, 1))
  box_colors = 0.15 + 0.75 * np.abs(np.concatenate([np.sin(6.28 * hue), np.sin(6.28 * (hue + 0.33)),
                                                    np.sin(6.28 * (hue + 0.66))], axis=1))

  npers = rng.integers(1, 5)
  npole = rng.integers(2, 6)
  side = rng.choice([-1.0, 1.0], npers + npole)
  xr = np.concatenate([rng.uniform(0.0, 15.0, npers), rng.uniform(-2.0, 25.0, npole)])
  yr = side * (half + np.concatenate([rng.uniform(0.8, 3.0, npers), rng.uniform(0.3, 0.6, npole)]))
  cx, cy = to_world(xr, yr)
  cyl = np.stack([cx, cy, np.concatenate([rng.uniform(0.25, 0.35, npers), rng.uniform(0.08, 0.14, npole)]),
                  np.concatenate([rng.uniform(1.6, 1.9, npers), rng.uniform(3.0, 5.0, npole)]),
                  np.concatenate([np.full(npers, PERSON), np.full(npole, POLE)])], axis=1)
  cyl_colors = np.concatenate([rng.uniform(0.1, 0.9, (npers, 3)),
                               np.repeat(rng.uniform(0.45, 0.6, (npole, 1)), 3, axis=1)], axis=0)
  return Scene(height=rng.uniform(0.8, 1.2), pitch=rng.uniform(0.1, 0.3), yaw=rng.uniform(-0.1, 0.1),
               road_offset=offset, road_heading=heading, road_half_width=half, boxes=boxes,
               box_colors=box_colors, cylinders=cyl, cylinder_colors=cyl_colors,
               tint=rng.uniform(0.85, 1.15, 3))


def camera_to_world(pitch: float, yaw: float) -> np.ndarray:
  """(3, 3) rotation with columns = camera x (right), y (down), z (optical axis) in world coordinates."""
  cp, sp, cyw, syw = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
  z = np.array([cp * cyw, cp * syw, -sp])
  x = np.array([syw, -cyw, 0.0])
  return np.stack([x, np.cross(z, x), z], axis=1)


def _ray_boxes(o, d, boxes):
  """Slab test against yawed boxes standing on Z = 0: (t (K, R) with inf = miss, normals (K, R, 3))."""
  k = boxes.shape[0]
  if k == 0:
    return np.full((0, d.shape[0]), np.inf), np.zeros((0, d.shape[0], 3))
  c, s = np.cos(boxes[:, 2]), np.sin(boxes[:, 2])
  # Ray in each box frame (box axes: length along yaw, width across, height up), box centre at half height.
  ox = o[0] - boxes[:, 0]
  oy = o[1] - boxes[:, 1]
  lo = np.stack([c * ox + s * oy, -s * ox + c * oy, np.full(k, o[2]) - boxes[:, 5] / 2], axis=1)  # (K, 3)
  ld = np.stack([c[:, None] * d[None, :, 0] + s[:, None] * d[None, :, 1],
                 -s[:, None] * d[None, :, 0] + c[:, None] * d[None, :, 1],
                 np.broadcast_to(d[None, :, 2], (k, d.shape[0]))], axis=-1)  # (K, R, 3)
  half = np.stack([boxes[:, 3], boxes[:, 4], boxes[:, 5] / 2], axis=1)  # (K, 3)
  with np.errstate(divide="ignore", invalid="ignore"):
    inv = 1.0 / ld
    t1 = (-half[:, None, :] - lo[:, None, :]) * inv
    t2 = (half[:, None, :] - lo[:, None, :]) * inv
  tmin = np.nan_to_num(np.minimum(t1, t2), nan=-np.inf)
  tmax = np.nan_to_num(np.maximum(t1, t2), nan=np.inf)
  t_near = tmin.max(-1)
  t_far = tmax.min(-1)
  hit = (t_near <= t_far) & (t_near > 1e-6)
  axis = tmin.argmax(-1)  # the slab that is entered last gives the face normal
  n_local = -np.sign(np.take_along_axis(ld, axis[..., None], -1)[..., 0])[..., None] * np.eye(3)[axis]
  nx = c[:, None] * n_local[..., 0] - s[:, None] * n_local[..., 1]
  ny = s[:, None] * n_local[..., 0] + c[:, None] * n_local[..., 1]
  return np.where(hit, t_near, np.inf), np.stack([nx, ny, n_local[..., 2]], axis=-1)


def _ray_cylinders(o, d, cyl):
  """Vertical cylinders (side surface only; tops are above the camera): (t (M, R), normals (M, R, 3))."""
  if cyl.shape[0] == 0:
    return np.full((0, d.shape[0]), np.inf), np.zeros((0, d.shape[0], 3))
  ox = (o[0] - cyl[:, 0])[:, None]
  oy = (o[1] - cyl[:, 1])[:, None]
  a = d[None, :, 0] ** 2 + d[None, :, 1] ** 2
  b = 2 * (ox * d[None, :, 0] + oy * d[None, :, 1])
  cc = ox ** 2 + oy ** 2 - cyl[:, 2:3] ** 2
  disc = b * b - 4 * a * cc
  with np.errstate(invalid="ignore", divide="ignore"):
    t = (-b - np.sqrt(disc)) / (2 * a)
  z = o[2] + t * d[None, :, 2]
  hit = (disc > 0) & (a > 1e-12) & (t > 1e-6) & (z >= 0) & (z <= cyl[:, 3:4])
  t = np.where(hit, t, np.inf)
  px = np.where(hit, ox + t * d[None, :, 0], 1.0)
  py = np.where(hit, oy + t * d[None, :, 1], 0.0)
  r = np.hypot(px, py)
  return t, np.stack([px / r, py / r, np.zeros_like(r)], axis=-1)


MAX_DEPTH = 100.0  # metres; farther hits (the ground near the horizon) have no depth target, like sky


def render(scene: Scene, camera: FisheyeCamera, max_depth: float = MAX_DEPTH) -> dict[str, np.ndarray]:
  """Ray-casts ``scene`` through ``camera``.

  Returns:
    dict with ``rgb`` (H, W, 3) float32 in [0, 1], ``labels`` (H, W) int32 in ``CLASSES``, ``depth`` (H, W)
    float32 metres along the ray (inf for sky, beyond ``max_depth`` and outside the lens model), ``rays``
    (H, W, 3) world-frame unit rays, ``valid`` (H, W) bool (inside the lens model).
  """
  rays_cam, valid = camera.pixel_rays()
  h, w = valid.shape
  d = rays_cam.reshape(-1, 3) @ camera_to_world(scene.pitch, scene.yaw).T  # (R, 3) world rays
  o = np.array([0.0, 0.0, scene.height])
  nr = d.shape[0]

  # Nearest hit among ground, boxes and cylinders.
  with np.errstate(divide="ignore"):
    t_ground = np.where(d[:, 2] < -1e-9, -o[2] / d[:, 2], np.inf)
  t_box, n_box = _ray_boxes(o, d, scene.boxes)
  t_cyl, n_cyl = _ray_cylinders(o, d, scene.cylinders)
  t_all = np.concatenate([t_ground[None], t_box, t_cyl], axis=0)  # (1 + K + M, R)
  n_all = np.concatenate([np.broadcast_to([0.0, 0.0, 1.0], (1, nr, 3)), n_box, n_cyl], axis=0)
  first = t_all.argmin(0)
  t = t_all[first, np.arange(nr)]
  normal = n_all[first, np.arange(nr)]
  hit = np.isfinite(t)
  kb = scene.boxes.shape[0]
  obj_class = np.concatenate([[ROAD], np.full(kb, VEHICLE), scene.cylinders[:, 4].astype(int)]).astype(np.int32)
  obj_color = np.concatenate([np.zeros((1, 3)), scene.box_colors, scene.cylinder_colors], axis=0)
  labels = np.where(hit, obj_class[first], SKY)
  base = obj_color[first]
  p = o + np.where(hit, t, 0.0)[:, None] * d  # hit points

  # Ground: road / markings / sidewalk in the road frame.
  ground = hit & (first == 0)
  ch, sh = np.cos(scene.road_heading), np.sin(scene.road_heading)
  xr = ch * p[:, 0] + sh * p[:, 1]
  yr = -sh * p[:, 0] + ch * p[:, 1] - scene.road_offset
  on_road = np.abs(yr) < scene.road_half_width
  centre = (np.abs(yr) < 0.1) & (np.mod(xr, 6.0) < 3.0)
  edge = np.abs(np.abs(yr) - (scene.road_half_width - 0.25)) < 0.1
  ground_class = np.where(on_road, np.where(centre | edge, LANEMARK, ROAD), SIDEWALK)
  labels = np.where(ground, ground_class, labels)
  ground_color = np.where((ground_class == ROAD)[:, None], [0.32, 0.32, 0.34],
                          np.where((ground_class == LANEMARK)[:, None], [0.92, 0.92, 0.88], [0.62, 0.55, 0.45]))
  base = np.where(ground[:, None], ground_color * scene.tint, base)

  # Shading: ambient + Lambert with a fixed sun, plus a smooth procedural texture so surfaces are not flat.
  lambert = np.clip(normal @ _SUN, 0.0, 1.0)
  texture = 0.06 * np.sin(2.3 * p[:, 0] + 1.7 * p[:, 1]) * np.sin(3.1 * p[:, 1] - 0.7 * p[:, 2] + 1.3 * p[:, 0])
  fog = np.exp(-np.where(hit, t, 0.0) / 120.0)[:, None]
  sky = np.array([0.55, 0.7, 0.95]) * (0.75 + 0.25 * np.clip(d[:, 2:3], 0, 1)) + 0.1 * (1 - np.abs(d[:, 2:3]))
  surf = base * (0.45 + 0.6 * lambert)[:, None] + texture[:, None]
  rgb = np.where(hit[:, None], fog * surf + (1 - fog) * np.array([0.7, 0.75, 0.8]), sky)

  valid_r = valid.reshape(-1)
  labels = np.where(valid_r, labels, VOID).astype(np.int32)
  rgb = np.where(valid_r[:, None], np.clip(rgb, 0.0, 1.0), 0.0).astype(np.float32)
  depth = np.where(valid_r & hit & (t <= max_depth), t, np.inf).astype(np.float32)
  return dict(rgb=rgb.reshape(h, w, 3), labels=labels.reshape(h, w), depth=depth.reshape(h, w),
              rays=d.reshape(h, w, 3), valid=valid)


def scene_seed(seed: int, index: int) -> int:
  """Independent per-scene seeds from a dataset seed (SeedSequence, so nearby seeds do not overlap)."""
  return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def make_dataset(num: int, seed: int, camera: FisheyeCamera, first: int = 0) -> dict[str, np.ndarray]:
  """``num`` scenes rendered through ``camera``: ``rgb`` (num, H, W, 3), ``labels`` (num, H, W),
  ``depth`` (num, H, W); scene i (i = first ... first + num - 1) uses ``random_scene(scene_seed(seed, i))``, so
  a range of a larger dataset can be rendered on its own (e.g. its test scenes at another resolution).

  The camera rays are shared (``rays_camera`` (H, W, 3) in the camera frame, ``valid`` (H, W)).
  """
  out = [render(random_scene(scene_seed(seed, i)), camera) for i in range(first, first + num)]
  rays, valid = camera.pixel_rays()
  return dict(rgb=np.stack([o["rgb"] for o in out]), labels=np.stack([o["labels"] for o in out]),
              depth=np.stack([o["depth"] for o in out]), rays_camera=rays, valid=valid)
