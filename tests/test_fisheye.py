"""Fisheye camera model and image <-> HEALPix projections; healpy is the oracle."""

import dataclasses

import healpy as hp
import numpy as np
import pytest

from healswin_jax.data import fisheye
from healswin_jax.data.fisheye import FisheyeCamera, make_projection

CAM = FisheyeCamera.woodscape_fv(96)


def _theta_by_roots(cam, r):
  """Independent lens inversion: the smallest real root in [0, theta_max] of k4 t^4 + ... + k1 t - r."""
  roots = np.roots([cam.k4, cam.k3, cam.k2, cam.k1, -r])
  real = roots[np.abs(roots.imag) < 1e-9].real
  return real[(real >= -1e-12) & (real <= cam.theta_max + 1e-9)].min()


def test_calibration_json_roundtrip_and_errors(tmp_path):
  path = tmp_path / "00000_FV.json"
  path.write_text(__import__("json").dumps(CAM.to_json_dict()))
  assert FisheyeCamera.from_json(path) == CAM
  bad = CAM.to_json_dict()
  del bad["intrinsic"]["k3"]
  with pytest.raises(KeyError, match="k3"):
    FisheyeCamera.from_json(bad)
  with pytest.raises(KeyError, match="intrinsic"):
    FisheyeCamera.from_json({"extrinsic": {}})


def test_lens_inversion_matches_polynomial_roots():
  r = np.linspace(0.0, CAM.rho(CAM.theta_max) * 0.999, 37)
  theta, valid = CAM.theta_of_rho(r)
  assert valid.all()
  np.testing.assert_allclose(theta, [_theta_by_roots(CAM, x) for x in r], atol=1e-10)
  np.testing.assert_allclose(CAM.rho(theta), r, atol=1e-9)
  assert not CAM.theta_of_rho(np.array([CAM.rho(CAM.theta_max) + 1.0]))[1].any()


def test_theta_max_stops_at_non_monotone_lens():
  cam = FisheyeCamera(k1=100.0, k2=0.0, k3=-20.0, k4=0.0, cx_offset=0.0, cy_offset=0.0, aspect_ratio=1.0,
                      width=64, height=48)
  assert cam.theta_max == pytest.approx(np.sqrt(100.0 / 60.0))  # rho' = 100 - 60 t^2
  assert CAM.theta_max == pytest.approx(np.pi)  # the WoodScape FV lens is monotone on [0, pi]


def test_project_unproject_roundtrip():
  u, v = CAM.pixel_grid()
  theta, phi, valid = CAM.unproject(u, v)
  u2, v2 = CAM.project(theta, phi)
  np.testing.assert_allclose(u2[valid], u[valid], atol=1e-9)
  np.testing.assert_allclose(v2[valid], v[valid], atol=1e-9)


@pytest.mark.parametrize("faces,rot", [((0, 1, 2, 3, 4, 5, 6, 7), None), ((0, 4, 8), None),
                                       (tuple(range(12)), "tilt"), ((1, 5, 6, 9), "tilt")])
def test_coverage_mask_is_pixels_whose_ray_lies_in_used_faces(faces, rot):
  nside = 8
  rotation = fisheye.rotation_matrix([1.0, 0.3, 0.0], 1.1) if rot else None
  proj = make_projection(CAM, nside, faces, rotation)
  rng = np.random.default_rng(0)
  rows = rng.integers(0, CAM.height, 300)
  cols = rng.integers(0, CAM.width, 300)
  cu, cv = CAM.principal_point
  for r, c in zip(rows, cols):  # per-pixel oracle: independent inversion + healpy
    x, y = c - cu, (r - cv) / CAM.aspect_ratio
    theta = _theta_by_roots(CAM, np.hypot(x, y))
    vec = fisheye.angles_to_vec(theta, np.arctan2(y, x))
    if rotation is not None:
      vec = rotation @ vec
    pix = hp.vec2pix(nside, *vec, nest=True)
    inside = pix // nside ** 2 in faces
    assert proj.image_mask[r, c] == inside
    if inside:
      assert proj.pix[proj.image_slot[r, c]] == pix
    else:
      assert proj.image_slot[r, c] == -1


def test_sphere_pixels_land_where_the_camera_model_says():
  rotation = fisheye.rotation_matrix([0.0, 1.0, 0.0], 0.4)
  proj = make_projection(CAM, 16, range(12), rotation)
  vec = np.stack(hp.pix2vec(16, proj.pix, nest=True), -1)
  m = proj.sphere_mask
  theta, phi, _ = CAM.unproject(proj.u[m], proj.v[m])
  np.testing.assert_allclose(fisheye.angles_to_vec(theta, phi) @ rotation.T, vec[m], atol=1e-9)
  assert (proj.u[m] >= -0.5).all() and (proj.u[m] < CAM.width - 0.5).all()
  # pixels outside the sphere mask are exactly those whose centre falls off the image
  off = ~m & np.isfinite(proj.u)
  assert ((proj.u[off] < -0.5) | (proj.u[off] >= CAM.width - 0.5) | (proj.v[off] < -0.5)
          | (proj.v[off] >= CAM.height - 0.5)).all()


def test_bilinear_rgb_is_exact_on_linear_images():
  proj = make_projection(CAM, 16)
  u, v = CAM.pixel_grid()
  img = np.stack([0.3 * u + 0.1 * v + 2.0, -0.2 * u + 0.5 * v], axis=-1)
  sph = proj.rgb_to_sphere(img[None])[0]
  interior = proj.sphere_mask & (proj.u >= 0) & (proj.u <= CAM.width - 1) & (proj.v >= 0) & (
      proj.v <= CAM.height - 1)
  assert interior.sum() > 1000
  np.testing.assert_allclose(sph[interior, 0], (0.3 * proj.u + 0.1 * proj.v + 2.0)[interior], rtol=1e-5)
  np.testing.assert_allclose(sph[interior, 1], (-0.2 * proj.u + 0.5 * proj.v)[interior], atol=1e-4)
  assert (sph[~proj.sphere_mask] == 0).all()


def test_label_roundtrip_reproduces_labels_inside_coverage():
  """Labels -> sphere (nearest) -> image (containing HEALPix pixel) is the identity inside the coverage,
  except within one pixel of a label boundary (nearest-neighbour error), when the sphere is finer than the
  image."""
  proj = make_projection(CAM, 64)
  u, v = CAM.pixel_grid()
  theta, phi, _ = CAM.unproject(u, v)
  labels = (np.floor((phi + np.pi) / (2 * np.pi) * 7).astype(int) % 7 + 7 * (theta > 1.1) + 1).astype(np.int32)
  back = proj.to_image(proj.labels_to_sphere(labels[None]), fill=-1)[0]
  m = proj.image_mask
  assert (back[~m] == -1).all()
  pad = np.pad(labels, 1, mode="edge")
  uniform = np.ones_like(m)
  for dr in (0, 1, 2):
    for dc in (0, 1, 2):
      uniform &= pad[dr:dr + labels.shape[0], dc:dc + labels.shape[1]] == labels
  assert (back[m & uniform] == labels[m & uniform]).all()
  assert (back == labels)[m].mean() > 0.95


def test_to_image_keeps_trailing_feature_axes_and_fill():
  proj = make_projection(CAM, 8)
  vals = np.arange(2 * proj.num_pixels * 3, dtype=np.float32).reshape(2, proj.num_pixels, 3)
  img = proj.to_image(vals, fill=np.nan)
  assert img.shape == (2, CAM.height, CAM.width, 3)
  assert np.isnan(img[:, ~proj.image_mask]).all()
  r, c = np.argwhere(proj.image_mask)[0]
  np.testing.assert_array_equal(img[:, r, c], vals[:, proj.image_slot[r, c]])


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match="power of 2"):
    make_projection(CAM, 12)
  with pytest.raises(ValueError, match="strictly increasing"):
    make_projection(CAM, 8, (3, 1))
  with pytest.raises(ValueError, match="camera"):
    make_projection(CAM, 8).labels_to_sphere(np.zeros((10, 10), np.int32))
  with pytest.raises(ValueError, match="k1"):
    FisheyeCamera(k1=-1.0, k2=0, k3=0, k4=0, cx_offset=0, cy_offset=0, aspect_ratio=1, width=8, height=8)


def test_woodscape_crop_camera_has_the_190_degree_field_of_view():
  """The original's flat input (short side resized, centre crop) at 96 x 80: WoodScape's k1..k4 scaled by
  80 / 966 and no ray beyond 95 degrees; healpy angles decide which sphere pixels may see the image."""
  cam = FisheyeCamera.woodscape_fv_crop(96, 80)
  full = FisheyeCamera.woodscape_fv(1280)
  np.testing.assert_allclose(cam.k, full.k * 80 / 966, rtol=1e-12)
  assert (cam.width, cam.height, cam.fov_deg) == (96, 80, 190.0)
  assert cam.theta_max == pytest.approx(np.radians(95.0))
  # Pixels: valid exactly where the independent inversion gives theta <= 95 degrees.
  u, v = cam.pixel_grid()
  cu, cv = cam.principal_point
  r = np.hypot(u - cu, v - cv)
  theta = np.array([_theta_by_roots(dataclasses.replace(cam, fov_deg=None), x) for x in r.ravel()]).reshape(r.shape)
  _, valid = cam.pixel_rays()
  np.testing.assert_array_equal(valid, theta <= np.radians(95.0))
  assert not valid[0, 0] and not valid[-1, -1] and valid[40, 0] and valid[40, -1]  # corners cut, edges seen
  proj = make_projection(cam, 32, range(8))
  th, _ = hp.pix2ang(32, proj.pix, nest=True)
  assert not proj.sphere_mask[th > np.radians(95.0)].any()
  assert proj.sphere_mask[(th > np.radians(88.0)) & (th <= np.radians(95.0))].any()  # the periphery is seen
  with pytest.raises(ValueError, match=r"width 120 must be in 1\.\.106"):
    FisheyeCamera.woodscape_fv_crop(120, 80)
  with pytest.raises(ValueError, match="fov_deg"):
    dataclasses.replace(cam, fov_deg=0.0)


def test_pixel_ratio_matched_sizes_and_errors():
  assert fisheye.PAPER_PIXEL_RATIO == pytest.approx(524288 / 491520)
  assert fisheye.matched_image_size(32, 8) == (96, 80)
  assert fisheye.matched_image_size(16, 8) == (48, 40)
  assert fisheye.pixel_ratio(32, 8, 96, 80) == pytest.approx(8192 / 7680)
  assert fisheye.check_matched_ratio(16, 8, 48, 40) == pytest.approx(2048 / 1920)
  with pytest.raises(ValueError, match=r"0\.6667 is not the paper's 1\.067\. Fix: use image_width=96, image_height=80"):
    fisheye.check_matched_ratio(32, 8, 128, 96)
  with pytest.raises(ValueError, match=r"cannot be matched at nside 32 on 12 faces\. Valid choices for 12 faces: none"):
    fisheye.matched_image_size(32, 12)
  with pytest.raises(ValueError, match=r"Valid choices for 8 faces: nside 2 with 6 x 5, .*nside 32 with 96 x 80"):
    fisheye.check_matched_ratio(1, 8, 6, 5)


def test_face_subset_the_image_does_not_cover_is_an_error():
  narrow = dataclasses.replace(FisheyeCamera.woodscape_fv_crop(48, 40), fov_deg=60.0)
  fisheye.check_face_coverage(make_projection(narrow, 16, range(4)))
  with pytest.raises(ValueError, match=r"faces \(4, 5, 6, 7\) see no pixel .* use faces within \(0, 1, 2, 3\)"):
    fisheye.check_face_coverage(make_projection(narrow, 16, range(8)))
