"""Loaders read tiny files written here in the published formats; substitutes and OOD sets behave."""

import gzip
import os
import struct

import numpy as np
import pytest
from skimage import data as skimage_data

from ntk import datasets


def _write_idx(path, array, type_code=0x08):
  """IDX as published: 2 zero bytes, type code, ndim, big-endian uint32 dims, big-endian data."""
  dt = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[type_code]
  payload = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
  payload += np.asarray(array).astype(dt).tobytes()
  with (gzip.open if path.endswith(".gz") else open)(path, "wb") as f:
    f.write(payload)


@pytest.fixture
def fashion_dir(tmp_path):
  rng = np.random.default_rng(0)
  arrays = {}
  for prefix, n, gz in (("train", 12, True), ("t10k", 5, False)):
    x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, n, dtype=np.uint8)
    ext = ".gz" if gz else ""
    _write_idx(str(tmp_path / f"{prefix}-images-idx3-ubyte{ext}"), x)
    _write_idx(str(tmp_path / f"{prefix}-labels-idx1-ubyte{ext}"), y)
    arrays[prefix] = (x, y)
  return tmp_path, arrays


def test_read_idx_types_and_shapes(tmp_path):
  a = np.arange(24, dtype=np.int16).reshape(2, 3, 4) - 7
  _write_idx(str(tmp_path / "a.idx"), a, 0x0B)
  np.testing.assert_array_equal(datasets.read_idx(str(tmp_path / "a.idx")), a)
  f = np.linspace(-1, 1, 5, dtype=np.float32)
  _write_idx(str(tmp_path / "f.idx.gz"), f, 0x0D)
  np.testing.assert_array_equal(datasets.read_idx(str(tmp_path / "f.idx.gz")), f)


def test_read_idx_rejects_garbage_and_truncation(tmp_path):
  (tmp_path / "bad").write_bytes(b"\x89PNG\r\n")
  with pytest.raises(ValueError, match="not an IDX file"):
    datasets.read_idx(str(tmp_path / "bad"))
  _write_idx(str(tmp_path / "t"), np.zeros((4, 28, 28), np.uint8))
  (tmp_path / "t").write_bytes((tmp_path / "t").read_bytes()[:-10])
  with pytest.raises(ValueError, match="truncated"):
    datasets.read_idx(str(tmp_path / "t"))


def test_fashion_mnist_from_dir_and_env(fashion_dir, monkeypatch):
  folder, arrays = fashion_dir
  x, y = datasets.load_fashion_mnist(str(folder), "train")
  assert x.shape == (12, 28, 28) and x.dtype == np.float32 and y.dtype == np.int32
  np.testing.assert_array_equal(x, arrays["train"][0] / np.float32(255.0))
  np.testing.assert_array_equal(y, arrays["train"][1])
  monkeypatch.setenv(datasets.FASHION_MNIST_ENV, str(folder))
  xt, yt = datasets.load_fashion_mnist(split="test", n=3, seed=1)
  assert xt.shape == (3, 28, 28)
  name, (a, _), (b, _) = datasets.load_rotation_benchmark(4, 2)
  assert name == "fashion_mnist" and a.shape == (4, 28, 28) and b.shape == (2, 28, 28)


def test_fashion_mnist_errors(tmp_path, monkeypatch):
  monkeypatch.delenv(datasets.FASHION_MNIST_ENV, raising=False)
  with pytest.raises(FileNotFoundError, match="FASHION_MNIST_DIR"):
    datasets.load_fashion_mnist()
  with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
    datasets.load_fashion_mnist(str(tmp_path))
  with pytest.raises(ValueError, match="split"):
    datasets.load_fashion_mnist(str(tmp_path), "validation")


def test_rotation_benchmark_falls_back_to_mnist5k(monkeypatch):
  monkeypatch.delenv(datasets.FASHION_MNIST_ENV, raising=False)
  name, (x, y), (xt, yt) = datasets.load_rotation_benchmark(50, 20, seed=3)
  assert name == "mnist5k" and x.shape == (50, 28, 28) and xt.shape == (20, 28, 28)
  # Disjoint splits: no test digit equals a training digit.
  assert not np.any(np.all(x.reshape(50, 1, -1) == xt.reshape(1, 20, -1), axis=-1))
  with pytest.raises(ValueError, match="too many"):
    datasets.load_rotation_benchmark(4000, 2000)


def test_nct_crc_class_folders_of_tifs(tmp_path):
  import tifffile
  rng = np.random.default_rng(0)
  tiles = {}
  for cls in ("TUM", "ADI", "LYM"):
    os.makedirs(tmp_path / cls)
    tiles[cls] = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(3)]
    for i, t in enumerate(tiles[cls]):
      tifffile.imwrite(str(tmp_path / cls / f"{cls}-{i:04d}.tif"), t)
  (tmp_path / "README.txt").write_text("not a class")
  os.makedirs(tmp_path / "empty")
  x, y, names = datasets.load_nct_crc(str(tmp_path), size=28, n_per_class=2, seed=0)
  assert names == ("ADI", "LYM", "TUM")
  assert x.shape == (6, 28, 28, 3) and x.dtype == np.float32 and np.bincount(y).tolist() == [2, 2, 2]
  # Box-filter resizing 224 -> 28 averages 8 x 8 blocks.
  full, _, _ = datasets.load_nct_crc(str(tmp_path), size=224)
  np.testing.assert_array_equal(full[0], tiles["ADI"][0] / np.float32(255.0))
  small, _, _ = datasets.load_nct_crc(str(tmp_path), size=28)
  block_mean = tiles["ADI"][0].reshape(28, 8, 28, 8, 3).mean(axis=(1, 3)) / 255.0
  np.testing.assert_allclose(small[0], block_mean, atol=1.5 / 255)


def test_nct_crc_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="not a directory"):
    datasets.load_nct_crc(str(tmp_path / "nope"))
  with pytest.raises(FileNotFoundError, match="no class folder"):
    datasets.load_nct_crc(str(tmp_path))


def test_pathmnist_npz(tmp_path):
  rng = np.random.default_rng(0)
  arrays = {}
  for split, n in (("train", 7), ("val", 3), ("test", 4)):
    arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
    arrays[f"{split}_labels"] = rng.integers(0, 9, (n, 1), dtype=np.uint8)
  np.savez_compressed(tmp_path / "pathmnist.npz", **arrays)
  x, y = datasets.load_pathmnist(str(tmp_path), "val")  # a folder holding pathmnist.npz
  assert x.shape == (3, 28, 28, 3) and y.shape == (3,) and y.dtype == np.int32
  np.testing.assert_array_equal(y, arrays["val_labels"][:, 0])
  x, _ = datasets.load_pathmnist(str(tmp_path / "pathmnist.npz"), "test")
  np.testing.assert_array_equal(x, arrays["test_images"] / np.float32(255.0))
  with pytest.raises(ValueError, match="split"):
    datasets.load_pathmnist(str(tmp_path), "dev")
  np.savez(tmp_path / "other.npz", images=np.zeros((2, 28, 28, 3)))
  with pytest.raises(KeyError, match="lacks"):
    datasets.load_pathmnist(str(tmp_path / "other.npz"))
  with pytest.raises(FileNotFoundError, match="MedMNIST"):
    datasets.load_pathmnist(str(tmp_path / "missing.npz"))


def test_textures_deterministic_balanced_and_orientation_free():
  x, y = datasets.make_textures(600, size=24, n_classes=3, seed=0)
  x2, y2 = datasets.make_textures(600, size=24, n_classes=3, seed=0)
  np.testing.assert_array_equal(x, x2)
  np.testing.assert_array_equal(y, y2)
  assert x.shape == (600, 24, 24, 3) and 0 <= x.min() and x.max() <= 1 and np.bincount(y).tolist() == [200] * 3
  # Classes differ in statistics ...
  means = np.stack([x[y == c].mean() for c in range(3)])
  assert np.ptp(means) > 0.02
  # ... but have no preferred orientation: horizontal and vertical gradient energy agree per class (a
  # striped/oriented generator would fail this by far more than the sampling noise).
  for c in range(3):
    gx = (np.diff(x[y == c], axis=2) ** 2).mean(axis=(1, 2, 3))
    gy = (np.diff(x[y == c], axis=1) ** 2).mean(axis=(1, 2, 3))
    z = (gx - gy).mean() / ((gx - gy).std() / np.sqrt(len(gx)))
    assert abs(z) < 4.0, (c, z)


def test_ood_sets():
  u = datasets.noise_images(5, (28, 28), seed=0)
  g = datasets.noise_images(5, (8, 8, 3), seed=0, kind="gaussian")
  assert u.shape == (5, 28, 28) and 0 <= u.min() and u.max() <= 1 and g.shape == (5, 8, 8, 3) and g.min() < 0
  with pytest.raises(ValueError, match="kind"):
    datasets.noise_images(1, (2, 2), kind="pink")
  p = datasets.sample_image_patches(6, 28, seed=1)
  q = datasets.sample_image_patches(6, 32, seed=1, grayscale=False)
  assert p.shape == (6, 28, 28) and q.shape == (6, 32, 32, 3) and p.std() > 0.02
  np.testing.assert_array_equal(p, datasets.sample_image_patches(6, 28, seed=1))
  d = datasets.digits_upscaled(4, 28)
  assert d.shape == (4, 28, 28) and d.max() > 0.5


def test_skimage_texture_tiles_are_real_labelled_and_split_by_pixels():
  x, y, names = datasets.skimage_texture_tiles(5, size=16, crops=(16, 32), split="train", seed=0)
  assert x.shape == (30, 16, 16, 3) and x.dtype == np.float32 and y.dtype == np.int32
  assert names == ("brick@16px", "brick@32px", "grass@16px", "grass@32px", "gravel@16px", "gravel@32px")
  np.testing.assert_array_equal(np.bincount(y), [5] * 6)
  assert 0.0 <= x.min() and x.max() <= 1.0
  np.testing.assert_array_equal(x[..., 0], x[..., 2])  # luminance repeated to RGB
  np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), 0.5, atol=0.05)  # standardised: no brightness cue
  again, _, _ = datasets.skimage_texture_tiles(5, size=16, crops=(16, 32), split="train", seed=0)
  np.testing.assert_array_equal(x, again)
  # The crops are of the real photograph: a 16-pixel crop at scale 1 is the standardised image patch itself.
  brick = skimage_data.brick().astype(np.float32) / 255.0
  windows = np.lib.stride_tricks.sliding_window_view(brick[:384], (16, 16)).reshape(-1, 16, 16)
  z = (windows - windows.mean((1, 2), keepdims=True)) / (windows.std((1, 2), keepdims=True) + 1e-3)
  ref = np.clip(0.5 + 0.2 * z, 0.0, 1.0)
  assert np.min(np.abs(ref - x[0, ..., 0]).max(axis=(1, 2))) < 1e-5
  # Test tiles come from the bottom quarter only: none equals a window of the training rows.
  xt, _, _ = datasets.skimage_texture_tiles(5, size=16, crops=(16, 32), split="test", seed=0)
  assert np.min(np.abs(ref - xt[0, ..., 0]).max(axis=(1, 2))) > 1e-3
  tissue = datasets.skimage_tissue_tiles(4, size=16, crop=32)
  assert tissue.shape == (4, 16, 16, 3) and 0.0 <= tissue.min() and tissue.max() <= 1.0


def test_skimage_texture_tiles_bad_arguments():
  with pytest.raises(ValueError, match="split='val' is not one of"):
    datasets.skimage_texture_tiles(2, split="val")
  with pytest.raises(ValueError, match="crop=300 must be between"):
    datasets.skimage_texture_tiles(2, crops=(300,), split="test")
