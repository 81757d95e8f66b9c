"""Synthetic fisheye scenes and spherical MNIST: determinism, geometry and the NR/R settings."""

import healpy as hp
import numpy as np
import pytest

from healswin_jax.data import spherical_mnist, synthetic
from healswin_jax.data.fisheye import FisheyeCamera, make_projection

CAM = FisheyeCamera.woodscape_fv(64)


def test_synthetic_is_deterministic_by_seed_and_has_all_classes():
  a = synthetic.make_dataset(6, 3, CAM)
  b = synthetic.make_dataset(6, 3, CAM)
  c = synthetic.make_dataset(6, 4, CAM)
  for k in ("rgb", "labels", "depth"):
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(a["rgb"], c["rgb"])
  assert a["rgb"].shape == (6, CAM.height, CAM.width, 3) and a["rgb"].dtype == np.float32
  present = set(np.unique(a["labels"]))
  assert {synthetic.ROAD, synthetic.SIDEWALK, synthetic.VEHICLE, synthetic.SKY} <= present
  assert (a["rgb"] >= 0).all() and (a["rgb"] <= 1).all()



def test_make_dataset_first_renders_a_range_of_the_larger_dataset():
  whole = synthetic.make_dataset(5, 3, CAM)
  part = synthetic.make_dataset(2, 3, CAM, first=3)
  for k in ("rgb", "labels", "depth"):
    np.testing.assert_array_equal(part[k], whole[k][3:])

def test_synthetic_depth_is_metric_ray_distance():
  scene = synthetic.random_scene(7)
  out = synthetic.render(scene, CAM)
  lab, depth, rays = out["labels"], out["depth"], out["rays"]
  ground = np.isin(lab, [synthetic.ROAD, synthetic.LANEMARK, synthetic.SIDEWALK])
  near = ground & np.isfinite(depth)
  # Ground hits lie on Z = 0: camera height + depth * ray_z = 0; beyond MAX_DEPTH there is no depth target.
  np.testing.assert_allclose(scene.height + depth[near] * rays[near][:, 2], 0.0, atol=1e-5)
  far = ground & ~near
  assert far.any() and (scene.height / -rays[far][:, 2] > synthetic.MAX_DEPTH).all()
  assert depth[near].max() <= synthetic.MAX_DEPTH
  assert np.isinf(depth[lab == synthetic.SKY]).all()
  assert np.isfinite(depth[lab == synthetic.VEHICLE]).all()
  # Vehicle hits are inside their box footprint (within its half length + margin) and below its roof.
  p = np.array([0, 0, scene.height]) + depth[lab == synthetic.VEHICLE][:, None] * rays[lab == synthetic.VEHICLE]
  d = np.min(np.linalg.norm(p[:, None, :2] - scene.boxes[None, :, :2], axis=-1) - np.hypot(
      scene.boxes[:, 3], scene.boxes[:, 4])[None], axis=1)
  assert (d < 1e-6).all() and (p[:, 2] <= scene.boxes[:, 5].max() + 1e-6).all()


def test_synthetic_labels_survive_the_sphere_roundtrip():
  data = synthetic.make_dataset(2, 0, CAM)
  proj = make_projection(CAM, 32)
  back = proj.to_image(proj.labels_to_sphere(data["labels"]))
  agree = (back == data["labels"])[:, proj.image_mask].mean()
  assert agree > 0.9


def test_spherical_mnist_shapes_and_settings():
  d = spherical_mnist.make_spherical_mnist(8, 20, 10, "nr_r", seed=1)
  n = 12 * 8 * 8
  assert d["x_train"].shape == (20, n, 1) and d["x_test"].shape == (10, n, 1)
  assert d["y_train"].shape == (20,) and set(d["y_train"]) <= set(range(10))
  theta, _ = hp.pix2ang(8, np.arange(n), nest=True)
  # non-rotated digits sit on the northern cap (within the 45 deg gnomonic square: theta < ~55 deg)
  mass = d["x_train"][..., 0]
  assert mass[:, theta > np.deg2rad(60)].sum() == 0 and mass.sum() > 0
  # rotated test digits are spread: some of them have mass in the south
  assert (d["x_test"][:, theta > np.pi / 2, 0].sum(1) > 0).any()
  with pytest.raises(ValueError, match="setting"):
    spherical_mnist.make_spherical_mnist(8, 2, 2, "rr")


def test_spherical_mnist_rotation_moves_the_digit():
  """Projecting with rotation R equals projecting without and rotating the map (up to pixelisation)."""
  img = np.zeros((1, 28, 28), np.float32)
  img[0, 8:20, 10:16] = 1.0
  rot = spherical_mnist.random_rotations(1, 5)
  nside = 32
  a = spherical_mnist.project_digits(img, nside, rot, supersample=1)[0, :, 0]
  b = spherical_mnist.project_digits(img, nside, None, supersample=1)[0, :, 0]
  vec = np.stack(hp.pix2vec(nside, np.arange(12 * nside * nside), nest=True), -1)
  # a(v) = b(R^T v): sample b at the pixel containing R^T v
  src = hp.vec2pix(nside, *(vec @ rot[0]).T, nest=True)
  assert np.abs(a - b[src]).mean() < 0.05 * b.mean() + 1e-3
  np.testing.assert_allclose(a.sum(), b.sum(), rtol=0.05)  # equal-area pixels: mass is preserved
  r = spherical_mnist.random_rotations(20, 0)
  np.testing.assert_allclose(r @ r.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (20, 3, 3)), atol=1e-12)
  np.testing.assert_allclose(np.linalg.det(r), 1.0)


def test_spherical_mnist_train_rotations_are_fresh_rotated_copies():
  """Augmentation copies: copy 0 is the un-augmented set, every copy is the same digits under new rotations
  (a rotation moves the digit, so its total mass on the sphere stays within pixelisation error), the test set
  does not change."""
  base = spherical_mnist.make_spherical_mnist(8, 12, 4, "r_r", seed=2)
  aug = spherical_mnist.make_spherical_mnist(8, 12, 4, "r_r", seed=2, train_rotations=3)
  assert aug["x_train"].shape == (36, 12 * 64, 1)
  np.testing.assert_array_equal(aug["x_train"][:12], base["x_train"])
  np.testing.assert_array_equal(aug["y_train"], np.tile(base["y_train"], 3))
  np.testing.assert_array_equal(aug["x_test"], base["x_test"])
  copies = aug["x_train"][..., 0].reshape(3, 12, -1)
  assert not np.allclose(copies[1], copies[0]) and not np.allclose(copies[2], copies[1])
  # Equal-area pixels: the summed intensity of a digit is rotation invariant up to resampling.
  mass = copies.sum(-1)
  np.testing.assert_allclose(mass[1:], np.broadcast_to(mass[0], (2, 12)), rtol=0.15)
  with pytest.raises(ValueError, match="train_rotations=2 needs rotated or jittered training digits"):
    spherical_mnist.make_spherical_mnist(8, 2, 2, "nr_nr", train_rotations=2)
  with pytest.raises(ValueError, match="train_rotations=0 must be an integer >= 1"):
    spherical_mnist.make_spherical_mnist(8, 2, 2, "r_r", train_rotations=0)


def test_spherical_mnist_jitter_copies_stay_near_the_north_pole():
  """NR jitter copies: copy 0 and the test digits are the un-jittered NR arrays; the copies' rotations are
  within ``jitter_deg`` of the identity (the angle of R from its trace), so each copy's centre of mass stays
  within that angle of the un-jittered digit's, while a Haar-rotated digit lands anywhere."""
  nside, deg = 16, 10.0
  base = spherical_mnist.make_spherical_mnist(nside, 12, 4, "nr_nr", seed=3)
  jit = spherical_mnist.make_spherical_mnist(nside, 12, 4, "nr_nr", seed=3, train_rotations=3, jitter_deg=deg)
  np.testing.assert_array_equal(jit["x_train"][:12], base["x_train"])
  np.testing.assert_array_equal(jit["x_test"], base["x_test"])
  np.testing.assert_array_equal(jit["y_train"], np.tile(base["y_train"], 3))
  rots = spherical_mnist.random_rotations(500, 0, max_angle_deg=deg)
  angles = np.degrees(np.arccos(np.clip((np.trace(rots, axis1=1, axis2=2) - 1) / 2, -1, 1)))
  assert angles.max() <= deg + 1e-9 and angles.max() > 0.9 * deg
  np.testing.assert_allclose(rots @ rots.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (500, 3, 3)), atol=1e-12)
  vec = np.stack(hp.pix2vec(nside, np.arange(12 * nside * nside), nest=True), -1)

  def centre(maps):  # (n, N) -> (n, 3) unit centre-of-mass directions
    c = maps @ vec
    return c / np.linalg.norm(c, axis=-1, keepdims=True)

  copies = jit["x_train"][..., 0].reshape(3, 12, -1)
  moved = np.degrees(np.arccos(np.clip(np.sum(centre(copies[1:]) * centre(copies[0]), -1), -1, 1)))
  assert moved.max() < deg + 3.0 and not np.allclose(copies[1], copies[0])  # + pixelisation of the centre
  with pytest.raises(ValueError, match="jitter_deg=5.0 must be >= 0, and 0 for setting='r_r'"):
    spherical_mnist.make_spherical_mnist(8, 2, 2, "r_r", jitter_deg=5.0)
  with pytest.raises(ValueError, match="jitter_deg=nan must be >= 0"):  # not silently Haar-rotated NR copies
    spherical_mnist.make_spherical_mnist(8, 2, 2, "nr_nr", train_rotations=2, jitter_deg=float("nan"))
  with pytest.raises(ValueError, match="max_angle_deg=0"):
    spherical_mnist.random_rotations(2, 0, max_angle_deg=0)


def test_planar_digits_are_the_spherical_split_before_projection():
  sphere = spherical_mnist.make_spherical_mnist(8, 12, 5, "nr_nr", seed=4)
  flat = spherical_mnist.planar_digits(12, 5, seed=4, multiple=8)
  assert flat["x_train"].shape == (12, 32, 32, 1) and flat["x_test"].shape == (5, 32, 32, 1)
  np.testing.assert_array_equal(flat["y_train"], sphere["y_train"])
  np.testing.assert_array_equal(flat["y_test"], sphere["y_test"])
  # Even padding (2 on each side); the unpadded digits project onto the very maps of the NR setting.
  assert not flat["x_train"][:, :2].any() and not flat["x_train"][:, -2:].any()
  for part in ("train", "test"):
    digits = flat[f"x_{part}"][:, 2:-2, 2:-2, 0]
    np.testing.assert_array_equal(spherical_mnist.project_digits(digits, 8, None), sphere[f"x_{part}"])
  with pytest.raises(ValueError, match="multiple"):
    spherical_mnist.planar_digits(2, 2, multiple=0)


def test_flat_classification_data_is_nr_nr_only():
  from healswin_jax import run_config, tasks
  c = run_config.base_config()
  c.task = "classification"
  c.data.update(source="spherical_mnist", num_train=6, num_test=3, nside=4, faces=tuple(range(12)))
  c.model = run_config.flat_model_config(c.model)
  d = tasks.build_data(c)
  assert d.train["inputs"].shape == (6, 32, 32, 1) and d.num_classes == 10
  c.data.setting = "r_r"
  with pytest.raises(ValueError, match="NR/NR setting only.*data.setting=nr_nr"):
    tasks.build_data(c)
