"""WoodScape / SynWoodScape readers on a tiny fake copy in the published layout."""

import json
import os

import numpy as np
import pytest

from healswin_jax.data import woodscape
from healswin_jax.data.fisheye import FisheyeCamera, make_projection

CAM = FisheyeCamera.woodscape_fv(64)


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("woodscape"))
  woodscape.write_fake_dataset(root, 5, CAM, synthetic=False)
  return root


def test_published_layout_and_calibration_schema(fake_root):
  assert sorted(os.listdir(fake_root)) == ["calibration", "rgb_images", "semantic_annotations"]
  with open(os.path.join(fake_root, "calibration", "00000_FV.json")) as f:
    cal = json.load(f)
  assert set(cal["intrinsic"]) >= {"k1", "k2", "k3", "k4", "cx_offset", "cy_offset", "aspect_ratio", "width",
                                   "height"}
  frames = woodscape.list_frames(fake_root)
  assert [f.name for f in frames] == ["00000_FV", "00001_RV", "00002_MVL", "00003_MVR", "00004_FV"]
  assert [f.name for f in woodscape.list_frames(fake_root, cam_pos="FV")] == ["00000_FV", "00004_FV"]
  train, val = woodscape.train_val_split(frames)
  assert len(train) == 4 and len(val) == 1 and not {f.name for f in train} & {f.name for f in val}


def test_missing_paths_name_the_env_var_and_flag(fake_root, tmp_path, monkeypatch):
  monkeypatch.delenv("WOODSCAPE_DIR", raising=False)
  with pytest.raises(FileNotFoundError, match="WOODSCAPE_DIR.*data.root"):
    woodscape.list_frames(None)
  with pytest.raises(FileNotFoundError, match="SYNWOODSCAPE_DIR"):
    woodscape.list_frames(str(tmp_path / "nope"), synthetic=True)
  monkeypatch.setenv("WOODSCAPE_DIR", fake_root)
  assert len(woodscape.list_frames()) == 5
  with pytest.raises(FileNotFoundError, match="depth"):  # a WoodScape copy is not a SynWoodScape copy
    woodscape.list_frames(fake_root, synthetic=True)
  os.remove(os.path.join(fake_root, "calibration", "00004_FV.json"))
  try:
    with pytest.raises(FileNotFoundError, match="00004_FV.json"):
      woodscape.list_frames(fake_root)
  finally:
    with open(os.path.join(fake_root, "calibration", "00004_FV.json"), "w") as f:
      json.dump(CAM.to_json_dict(), f)


def test_projection_is_cached_and_matches_direct(fake_root, tmp_path, monkeypatch):
  frames = woodscape.list_frames(fake_root)[:3]
  cache = str(tmp_path / "cache")
  out = woodscape.load_projected(frames, 8, cache_dir=cache, progress=False)
  assert len(os.listdir(cache)) == 3
  proj = make_projection(CAM, 8)
  np.testing.assert_array_equal(out["sphere_labels"], proj.labels_to_sphere(out["labels"]))
  np.testing.assert_allclose(out["sphere_rgb"], proj.rgb_to_sphere(out["rgb"]), atol=1e-6)
  calls = []
  monkeypatch.setattr(woodscape, "make_projection", lambda *a, **k: calls.append(a))
  again = woodscape.load_projected(frames, 8, cache_dir=cache, progress=False)
  assert not calls  # read from the cache, not recomputed
  for k in ("sphere_rgb", "sphere_labels", "sphere_mask", "image_mask"):
    np.testing.assert_array_equal(again[k], out[k])


def test_synwoodscape_depth_and_resize(tmp_path):
  root = str(tmp_path / "syn")
  woodscape.write_fake_dataset(root, 2, CAM, synthetic=True, doubled_folders=True)
  assert os.path.isdir(os.path.join(root, "rgb_images", "rgb_images"))
  frames = woodscape.list_frames(root, synthetic=True)
  raw = np.load(frames[0].depth)
  assert (raw == woodscape.SKY_DEPTH).any()
  out = woodscape.load_projected(frames, 8, progress=False)
  assert np.isinf(out["depth"][0][raw == woodscape.SKY_DEPTH]).all()
  np.testing.assert_array_equal(out["depth"][0][raw < 1000], raw[raw < 1000])
  small = woodscape.load_projected(frames, 8, image_width=32, progress=False)
  assert small["rgb"].shape == (2, 24, 32, 3)
  assert small["cameras"][0].k1 == pytest.approx(CAM.k1 / 2)
  # The rescaled intrinsics keep the geometry: the sphere sees nearly the same labels.
  agree = (small["sphere_labels"] == out["sphere_labels"])[out["sphere_mask"]].mean()
  assert agree > 0.85
