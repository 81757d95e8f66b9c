"""Image datasets for the paper's experiments: local real data when given, offline substitutes otherwise.

Real datasets (never downloaded here; point the loaders at a local copy):

- **FashionMNIST** (:func:`load_fashion_mnist`): the four official IDX files
  ``{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (optionally ``.gz``) in a folder given as ``data_dir`` or
  in the environment variable ``FASHION_MNIST_DIR``. :func:`load_rotation_benchmark` falls back to the
  bundled MNIST-5k digits (:mod:`infra.bundled_data`) when neither is set.
- **NCT-CRC-HE-100K** (:func:`load_nct_crc`): Kather et al. 2018/2019, 9 tissue classes, one folder per
  class (``ADI BACK DEB LYM MUC MUS NORM STR TUM``) of 224 x 224 RGB ``.tif`` tiles.
- **MedMNIST PathMNIST** (:func:`load_pathmnist`): ``pathmnist.npz`` (Yang et al. 2023) with
  ``{train,val,test}_images`` (N, 28, 28, 3) uint8 and ``{train,val,test}_labels`` (N, 1).

Offline substitutes and out-of-distribution (OOD) sets, all deterministic by seed:

- :func:`make_textures`: a generated histology-like texture dataset (RGB, stain colours) whose classes differ
  in spatial frequency band, blob size/density and stain balance. Every ingredient is isotropic (white noise
  filtered by radial filters, uniformly placed round blobs), so the distribution has **no preferred
  orientation** -- like tissue slides, and unlike digits. It is a *substitute* for NCT-CRC-HE-100K for
  running the histology experiment offline, not a model of real tissue.
- :func:`skimage_texture_tiles`: real texture photographs bundled with scikit-image (brick, grass, gravel;
  CC0), a labelled orientation-free task (texture x scale); :func:`skimage_tissue_tiles`: real
  immunohistochemistry tissue bundled with scikit-image, as an OOD set.
- :func:`noise_images`, :func:`sample_image_patches` (crops of scikit-learn's two bundled photographs),
  :func:`digits_upscaled` (scikit-learn's 8 x 8 digits resized).

Conventions: images are float32 in [0, 1], grayscale ``(N, H, W)`` or colour ``(N, H, W, 3)`` (channels
last), labels int32 ``(N,)``.
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

from infra import bundled_data
from infra import files as infra_files

FASHION_MNIST_ENV = "FASHION_MNIST_DIR"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
NCT_CRC_CLASSES = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
PATHMNIST_SPLITS = ("train", "val", "test")

# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"); multi-byte values are big-endian.
_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


# ----------------------------------------------------------------------------------------------------------
# FashionMNIST (IDX files)


def read_idx(path: str) -> np.ndarray:
  """Reads one IDX file (``.gz`` or raw) into a native-endian numpy array of its declared shape.

  Raises:
    ValueError: the file is not IDX (bad magic, unknown type code, or size not matching its header).
  """
  opener = gzip.open if path.endswith(".gz") else open
  with infra_files.reading(path, "IDX file", "re-download it (the official FashionMNIST files) or gunzip-check it"):
    with opener(path, "rb") as f:
      raw = f.read()
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
    raise ValueError(f"{path} is not an IDX file: its magic number {raw[:4].hex()} should be 0000TTNN "
                     f"(TT a type code in {sorted(hex(c) for c in _IDX_DTYPES)}, NN the number of dims).")
  dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
  header = 4 + 4 * ndim
  shape = struct.unpack(f">{ndim}I", raw[4:header])
  expected = int(np.prod(shape)) * dtype.itemsize
  if len(raw) - header != expected:
    raise ValueError(f"{path}: header declares shape {shape} ({expected} bytes of data) but the file holds "
                     f"{len(raw) - header}; the file is truncated or corrupt.")
  return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def fashion_mnist_dir(data_dir: str | None = None) -> str | None:
  """The FashionMNIST folder: ``data_dir`` if given, else ``$FASHION_MNIST_DIR``, else None."""
  return data_dir or os.environ.get(FASHION_MNIST_ENV) or None


def _find_idx(folder: str, stem: str) -> str:
  for name in (stem, stem + ".gz"):
    path = os.path.join(folder, name)
    if os.path.exists(path):
      return path
  raise FileNotFoundError(f"FashionMNIST: {stem}[.gz] not found in {folder!r}. The folder must hold the four "
                          f"official IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                          f"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (optionally gzipped).")


def load_fashion_mnist(data_dir: str | None = None, split: str = "train", n: int | None = None, *,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """FashionMNIST from the official IDX files in a local folder.

  Args:
    data_dir: the folder; None reads ``$FASHION_MNIST_DIR``.
    split: ``"train"`` (60,000 images) or ``"test"`` (10,000; the IDX prefix ``t10k``).
    n: a random subset of this size (None: all, in file order).
    seed: subset seed.

  Returns:
    images ``(N, 28, 28)`` float32 in [0, 1]; labels ``(N,)`` int32 in 0..9 (:data:`FASHION_MNIST_CLASSES`).
  """
  folder = fashion_mnist_dir(data_dir)
  if folder is None:
    raise FileNotFoundError(f"FashionMNIST: no folder given; pass data_dir or set ${FASHION_MNIST_ENV} to a folder "
                            f"with the official IDX files.")
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"FashionMNIST: {folder!r} is not a directory.")
  if split not in ("train", "test"):
    raise ValueError(f"split={split!r} must be 'train' or 'test'.")
  prefix = "train" if split == "train" else "t10k"
  images = read_idx(_find_idx(folder, f"{prefix}-images-idx3-ubyte"))
  labels_path = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
  labels = read_idx(labels_path)
  if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
    raise ValueError(f"FashionMNIST {split}: images {images.shape} and labels {labels.shape} do not match "
                     f"(expected (N, 28, 28) and (N,)).")
  if labels.size and (labels.min() < 0 or labels.max() >= len(FASHION_MNIST_CLASSES)):
    raise ValueError(f"{labels_path}: labels must be class ids 0..{len(FASHION_MNIST_CLASSES) - 1}, found "
                     f"{sorted(set(np.unique(labels).tolist()) - set(range(len(FASHION_MNIST_CLASSES))))[:10]}. "
                     "Fix: this is not a FashionMNIST label file; re-download it.")
  if n is not None:
    if not 0 < n <= len(labels):
      raise ValueError(f"n={n} must be in 1..{len(labels)}.")
    idx = np.random.default_rng(seed).permutation(len(labels))[:n]
    images, labels = images[idx], labels[idx]
  return images.astype(np.float32) / 255.0, labels.astype(np.int32)


ROTATION_DATASETS = ("auto", "mnist5k", "fashion_mnist")


def load_rotation_benchmark(n_train: int, n_test: int, *, data_dir: str | None = None, seed: int = 0,
                            dataset: str = "auto"
                            ) -> tuple[str, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
  """Train/test images for the rotated-image classification experiment (E2).

  ``dataset="auto"``: FashionMNIST (train and test splits) when a folder is given (``data_dir`` or
  ``$FASHION_MNIST_DIR``), otherwise disjoint subsets of the bundled MNIST-5k digits (offline default).
  ``"fashion_mnist"`` requires the folder (a clear error names the fix); ``"mnist5k"`` ignores it.

  Returns:
    ``(name, (x_train, y_train), (x_test, y_test))`` with images ``(N, 28, 28)`` float32 in [0, 1].
  """
  if dataset not in ROTATION_DATASETS:
    raise ValueError(f"unknown dataset {dataset!r}; use one of {ROTATION_DATASETS} (FashionMNIST needs a local "
                     f"folder of the IDX files: data_dir or ${FASHION_MNIST_ENV}).")
  if dataset == "fashion_mnist" and fashion_mnist_dir(data_dir) is None:
    raise FileNotFoundError(f"dataset='fashion_mnist' needs a local folder of the four IDX files: pass "
                            f"data_dir=/path or set ${FASHION_MNIST_ENV} (or use dataset='mnist5k').")
  if dataset != "mnist5k" and fashion_mnist_dir(data_dir) is not None:
    return ("fashion_mnist", load_fashion_mnist(data_dir, "train", n_train, seed=seed),
            load_fashion_mnist(data_dir, "test", n_test, seed=seed + 1))
  images, labels = bundled_data.load_mnist5k()
  if n_train + n_test > len(labels):
    raise ValueError(f"MNIST-5k has {len(labels)} digits; n_train + n_test = {n_train + n_test} is too many "
                     f"(give a FashionMNIST folder for more).")
  idx = np.random.default_rng(seed).permutation(len(labels))
  tr, te = idx[:n_train], idx[n_train:n_train + n_test]
  return "mnist5k", (images[tr], labels[tr]), (images[te], labels[te])


# ----------------------------------------------------------------------------------------------------------
# Histology: NCT-CRC-HE-100K tiles and MedMNIST PathMNIST


def _resize(img: np.ndarray, size: int) -> np.ndarray:
  """uint8 ``(h, w, 3)`` -> uint8 ``(size, size, 3)`` (PIL box filter when shrinking: anti-aliased)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if img.shape[:2] == (size, size):
    return img
  return np.asarray(Image.fromarray(img).resize((size, size), Image.BOX if size < img.shape[0] else Image.BILINEAR))


def _as_rgb_uint8(img: np.ndarray, path: str) -> np.ndarray:
  if img.ndim == 2:
    img = np.repeat(img[..., None], 3, axis=-1)
  if img.ndim != 3 or img.shape[-1] not in (3, 4):
    raise ValueError(f"{path}: expected an RGB(A) tile (H, W, 3|4), got shape {img.shape}.")
  img = img[..., :3]
  if img.dtype != np.uint8:
    if np.issubdtype(img.dtype, np.floating) and img.max() <= 1.0:
      img = img * 255.0
    img = np.clip(img, 0, 255).astype(np.uint8)
  return img


def load_nct_crc(root: str, *, size: int = 32, n_per_class: int | None = None,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
  """NCT-CRC-HE-100K (or CRC-VAL-HE-7K) from its class folders of ``.tif`` tiles.

  Args:
    root: folder with one sub-folder per class (e.g. ``NCT-CRC-HE-100K/ADI/ADI-AAAFLCLY.tif``); class names
      are the sorted sub-folder names that contain tiles (normally :data:`NCT_CRC_CLASSES`).
    size: tiles (224 x 224 at 0.5 µm/px) are resized to ``size x size`` (box filter).
    n_per_class: a random subset of tiles per class (None: all; the full set is ~11 GB of tiles).
    seed: subset seed.

  Returns:
    ``(images (N, size, size, 3) float32 in [0, 1], labels (N,) int32, class_names)``.
  """
  import tifffile  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(root):
    raise FileNotFoundError(f"NCT-CRC: {root!r} is not a directory (expected class folders ADI, BACK, ... of "
                            f".tif tiles, e.g. the unzipped NCT-CRC-HE-100K.zip from Zenodo record 1214456).")
  is_tile = lambda f: f.lower().endswith((".tif", ".tiff"))
  classes = tuple(sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
                         and any(is_tile(f) for f in os.listdir(os.path.join(root, d)))))
  if not classes:
    raise FileNotFoundError(f"NCT-CRC: no class folder with .tif tiles under {root!r}.")
  rng = np.random.default_rng(seed)
  images, labels = [], []
  for c, name in enumerate(classes):
    files = sorted(f for f in os.listdir(os.path.join(root, name)) if is_tile(f))
    if n_per_class is not None:
      files = [files[i] for i in np.sort(rng.permutation(len(files))[:n_per_class])]
    for f in files:
      path = os.path.join(root, name, f)
      with infra_files.reading(path, ".tif tile", "replace or delete this tile (re-extract the data set's zip)"):
        tile = tifffile.imread(path)
      images.append(_resize(_as_rgb_uint8(tile, path), size))
      labels.append(c)
  return np.stack(images).astype(np.float32) / 255.0, np.asarray(labels, np.int32), classes


def load_pathmnist(path: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
  """MedMNIST PathMNIST (28 x 28 RGB crops derived from NCT-CRC-HE-100K, 9 classes) from ``pathmnist.npz``.

  Args:
    path: the ``.npz`` file, or a folder containing ``pathmnist.npz``.
    split: ``"train"``, ``"val"`` or ``"test"``.

  Returns:
    images ``(N, H, W, 3)`` float32 in [0, 1]; labels ``(N,)`` int32.
  """
  if os.path.isdir(path):
    path = os.path.join(path, "pathmnist.npz")
  if not os.path.exists(path):
    raise FileNotFoundError(f"PathMNIST: {path!r} not found (download pathmnist.npz from MedMNIST, "
                            f"zenodo.org/records/10519652, and pass its path).")
  if split not in PATHMNIST_SPLITS:
    raise ValueError(f"split={split!r} must be one of {PATHMNIST_SPLITS}.")
  keys = (f"{split}_images", f"{split}_labels")
  with infra_files.reading(path, "PathMNIST .npz", "re-download pathmnist.npz from MedMNIST"):
    with np.load(path) as z:
      arrays = {k: z[k] for k in keys if k in z.files}
      names = sorted(z.files)
  missing = [k for k in keys if k not in arrays]
  if missing:
    raise KeyError(f"PathMNIST: {path} lacks {missing}; it has {names} (is this a MedMNIST .npz?).")
  images, labels = arrays[keys[0]], arrays[keys[1]].reshape(-1)
  if images.ndim == 3:
    images = np.repeat(images[..., None], 3, axis=-1)
  if images.ndim != 4 or len(images) != len(labels):
    raise ValueError(f"PathMNIST {split}: images {images.shape} / labels {labels.shape} are not (N, H, W, 3) / (N,).")
  return images.astype(np.float32) / 255.0, labels.astype(np.int32)


# ----------------------------------------------------------------------------------------------------------
# Real photographs bundled with scikit-image: textures (labelled) and immunohistochemistry tissue (OOD)

# scikit-image's bundled real texture photographs; the licence is stated in each loader's docstring
# (``skimage.data.brick.__doc__`` etc.; the data folder's README.txt lists none): brick (CC0Textures
# "Bricks25"), grass (DeviantArt "Grass-01" by linolafett), gravel (CC0Textures "Gravel04"), all CC0.
SKIMAGE_TEXTURES = ("brick", "grass", "gravel")
# skimage.data.immunohistochemistry: colonic glands, IHC staining of FHL2 (DAB) with hematoxylin
# counterstain, Center for Microscopy And Molecular Imaging (CMMI); "No known copyright restrictions".
SKIMAGE_TISSUE = "immunohistochemistry"
SKIMAGE_SPLITS = ("train", "test")


def _skimage_gray(name: str) -> np.ndarray:
  """One of scikit-image's bundled images as float32 luminance (ITU-R 601) in [0, 1], ``(H, W)``."""
  try:
    from skimage import data as skdata  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("the real-image histology source needs scikit-image (pip install scikit-image; pinned "
                      "in requirements.lock).") from e
  img = getattr(skdata, name)().astype(np.float32) / 255.0
  return img if img.ndim == 2 else img[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)


def _normalized_crops(img: np.ndarray, n: int, crop: int, size: int, rows: tuple[int, int],
                      rng: np.random.Generator) -> np.ndarray:
  """``n`` random ``crop``-pixel squares from ``img[rows[0]:rows[1]]``, box-filtered to ``size``, each
  standardised (zero mean, unit std) and mapped to ``0.5 + 0.2 z`` clipped to [0, 1]: ``(n, size, size)``.

  Standardising removes brightness and contrast, which would tell the source images apart by themselves."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  r = rng.integers(rows[0], rows[1] - crop + 1, n)
  c = rng.integers(0, img.shape[1] - crop + 1, n)
  out = np.stack([np.asarray(Image.fromarray(img[a:a + crop, b:b + crop]).resize((size, size), Image.BOX))
                  for a, b in zip(r, c)])
  z = (out - out.mean((1, 2), keepdims=True)) / (out.std((1, 2), keepdims=True) + 1e-3)
  return np.clip(0.5 + 0.2 * z, 0.0, 1.0).astype(np.float32)


def _split_rows(height: int, split: str, test_fraction: float) -> tuple[int, int]:
  if split not in SKIMAGE_SPLITS:
    raise ValueError(f"split={split!r} is not one of {SKIMAGE_SPLITS}.")
  cut = int(round(height * (1.0 - test_fraction)))
  return (0, cut) if split == "train" else (cut, height)


def skimage_texture_tiles(n_per_class: int, *, size: int = 32, crops: tuple[int, ...] = (48, 96),
                          split: str = "train", test_fraction: float = 0.25,
                          seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
  """A labelled, orientation-free task from real photographs: which texture, at which scale.

  Class ``k = t * len(crops) + s`` holds tiles of texture ``SKIMAGE_TEXTURES[t]`` cut as ``crops[s]``-pixel
  squares and resized to ``size`` (so the scales differ by the zoom factor), grayscale repeated to RGB,
  standardised per tile (:func:`_normalized_crops`). The label does not change under rotations or
  reflections of a tile. Train tiles come from the top ``1 - test_fraction`` of each 512 x 512 photograph, test
  tiles from the rest (disjoint pixels; tiles within a split may overlap).

  Returns:
    ``(x, y, class_names)``: x float32 ``(n_per_class * n_classes, size, size, 3)`` in [0, 1], y int32.

  Raises:
    ValueError: a split name, crop or fraction that cannot work, naming the valid range.
  """
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction={test_fraction} must be in (0, 1).")
  rng = np.random.default_rng([seed, SKIMAGE_SPLITS.index(split) if split in SKIMAGE_SPLITS else 0])
  xs, ys, names = [], [], []
  for t, name in enumerate(SKIMAGE_TEXTURES):
    img = _skimage_gray(name)
    rows = _split_rows(img.shape[0], split, test_fraction)
    for s, crop in enumerate(crops):
      if not size <= crop <= min(rows[1] - rows[0], img.shape[1]):
        raise ValueError(f"crop={crop} must be between size={size} and the {split} region of {name!r} "
                         f"({rows[1] - rows[0]} x {img.shape[1]} pixels; lower test_fraction or the crop).")
      xs.append(_normalized_crops(img, n_per_class, crop, size, rows, rng))
      ys.append(np.full(n_per_class, t * len(crops) + s, np.int32))
      names.append(f"{name}@{crop}px")
  x = np.concatenate(xs)
  return np.repeat(x[..., None], 3, axis=-1), np.concatenate(ys), tuple(names)


def skimage_tissue_tiles(n: int, *, size: int = 32, crop: int = 64, seed: int = 0) -> np.ndarray:
  """Real tissue tiles (``skimage.data.immunohistochemistry``, colonic glands) preprocessed exactly like
  :func:`skimage_texture_tiles` (luminance, standardised): ``(n, size, size, 3)`` float32 in [0, 1]."""
  img = _skimage_gray(SKIMAGE_TISSUE)
  x = _normalized_crops(img, n, crop, size, (0, img.shape[0]), np.random.default_rng(seed))
  return np.repeat(x[..., None], 3, axis=-1)


# ----------------------------------------------------------------------------------------------------------
# Offline substitute: orientation-free textures


def _radial_frequency(size: int) -> np.ndarray:
  """|k| in cycles per pixel on the FFT grid, ``(size, size)`` (symmetric under rot90 and flips)."""
  f = np.fft.fftfreq(size)
  return np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)


# Stain absorbance directions (optical density per RGB channel) of haematoxylin (purple nuclei) and eosin
# (pink stroma), after Ruifrok & Johnston 2001; only used to give the textures a plausible H&E look.
_HEMATOXYLIN = np.array([0.65, 0.70, 0.29])
_EOSIN = np.array([0.07, 0.99, 0.11])


def make_textures(n: int, *, size: int = 32, n_classes: int = 9, seed: int = 0,
                  jitter: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
  """A generated H&E-like texture classification set with no preferred orientation (offline substitute).

  Class c fixes (i) the centre frequency of a band-pass "stroma" field (white noise times a radial ring
  filter), (ii) the radius and density of round "nuclei" blobs (Poisson points blurred by a radial
  Gaussian), and (iii) the haematoxylin/eosin balance. Each image draws its own parameters around its
  class's values (relative ``jitter``), so neighbouring classes overlap and the task is not trivial. All
  filters are radial and positions uniform, hence the image distribution is invariant under rotations
  (exactly under rot90/flips on the pixel grid).

  Args:
    n: number of images (classes balanced: image i has class ``i % n_classes`` before shuffling).
    size: side in pixels.
    n_classes: number of classes (>= 2).
    seed: seed.
    jitter: per-image relative spread of the class parameters.

  Returns:
    images ``(n, size, size, 3)`` float32 in [0, 1]; labels ``(n,)`` int32.
  """
  if n < 1 or size < 8 or n_classes < 2:
    raise ValueError(f"need n >= 1, size >= 8, n_classes >= 2; got n={n}, size={size}, n_classes={n_classes}.")
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.arange(n) % n_classes).astype(np.int32)
  u = (labels + 0.5) / n_classes  # class coordinate in (0, 1)
  # Class parameters interleave (frequency rises with c, blob size alternates), so no single statistic
  # separates all classes.
  perturb = lambda v: v * np.exp(jitter * rng.standard_normal(n))
  f_centre = perturb(0.05 + 0.25 * u)  # cycles / pixel
  blob_radius = perturb(np.where(labels % 2 == 0, 0.9, 1.8) + 0.6 * (labels % 3))
  blob_density = perturb(0.01 + 0.03 * ((labels * 5) % n_classes) / n_classes)  # blobs per pixel
  eosin = np.clip(perturb(0.9 - 0.6 * ((labels * 4) % n_classes) / n_classes), 0.05, 1.5)
  k = _radial_frequency(size)
  # Stroma: band-pass filtered white noise, normalized per image, squashed to [0, 1].
  ring = np.exp(-0.5 * ((k[None] - f_centre[:, None, None]) / (0.25 * f_centre[:, None, None])) ** 2)
  field = np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, size, size))) * ring).real
  field /= field.std(axis=(1, 2), keepdims=True) + 1e-12
  stroma = 1.0 / (1.0 + np.exp(-2.0 * field))
  # Nuclei: Poisson points convolved with a Gaussian of the image's radius (FFT, periodic).
  points = (rng.random((n, size, size)) < blob_density[:, None, None]).astype(np.float64)
  blur = np.exp(-2.0 * (np.pi * k[None] * blob_radius[:, None, None]) ** 2)  # FT of a Gaussian of std r
  nuclei = np.fft.ifft2(np.fft.fft2(points) * blur).real * (2 * np.pi * blob_radius[:, None, None] ** 2)
  nuclei = np.clip(nuclei, 0.0, 1.0)
  # Beer-Lambert: transmitted light = exp(-sum_stains density * absorbance).
  od = (eosin[:, None, None, None] * stroma[..., None] * _EOSIN + 1.6 * nuclei[..., None] * _HEMATOXYLIN)
  images = np.exp(-od) + 0.02 * rng.standard_normal((n, size, size, 3))
  return np.clip(images, 0.0, 1.0).astype(np.float32), labels


# ----------------------------------------------------------------------------------------------------------
# Out-of-distribution inputs


def noise_images(n: int, shape: tuple[int, ...], *, seed: int = 0, kind: str = "uniform") -> np.ndarray:
  """Pure-noise images ``(n, *shape)`` float32: ``uniform`` in [0, 1], or ``gaussian`` N(0.5, 0.25^2)
  (not clipped: off the data manifold also in range)."""
  rng = np.random.default_rng(seed)
  if kind == "uniform":
    return rng.random((n, *shape), dtype=np.float32)
  if kind == "gaussian":
    return (0.5 + 0.25 * rng.standard_normal((n, *shape))).astype(np.float32)
  raise ValueError(f"kind={kind!r} must be 'uniform' or 'gaussian'.")


def sample_image_patches(n: int, size: int, *, seed: int = 0, grayscale: bool = True,
                         crop: int | None = None) -> np.ndarray:
  """Random crops of scikit-learn's two bundled photographs (``china.jpg``, ``flower.jpg``), resized.

  Args:
    n: number of patches.
    size: output side in pixels.
    seed: seed.
    grayscale: luminance (ITU-R 601) ``(n, size, size)``; else RGB ``(n, size, size, 3)``.
    crop: side of the square crop before resizing (default ``4 * size``, at most 400).

  Returns:
    float32 patches in [0, 1].
  """
  from sklearn.datasets import load_sample_images  # pylint: disable=g-import-not-at-top
  photos = load_sample_images().images  # two (427, 640, 3) uint8
  crop = crop or min(4 * size, 400)
  rng = np.random.default_rng(seed)
  which = rng.integers(0, len(photos), n)
  out = []
  for i in range(n):
    p = photos[which[i]]
    r, c = rng.integers(0, p.shape[0] - crop + 1), rng.integers(0, p.shape[1] - crop + 1)
    out.append(_resize(np.ascontiguousarray(p[r:r + crop, c:c + crop]), size))
  patches = np.stack(out).astype(np.float32) / 255.0
  if grayscale:
    patches = patches @ np.array([0.299, 0.587, 0.114], np.float32)
  return patches


def digits_upscaled(n: int, size: int = 28, *, seed: int = 0) -> np.ndarray:
  """scikit-learn's 8 x 8 digits resized (bilinear) to ``(n, size, size)`` float32 in [0, 1]."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  images, _ = bundled_data.load_digits8()
  if not 0 < n <= len(images):
    raise ValueError(f"n={n} must be in 1..{len(images)} (the bundled 8x8 digits).")
  idx = np.random.default_rng(seed).permutation(len(images))[:n]
  return np.stack([np.asarray(Image.fromarray(images[i]).resize((size, size), Image.BILINEAR))
                   for i in idx]).astype(np.float32).clip(0.0, 1.0)


def annulus_points(rng: np.random.Generator, n: int, r_min: float, r_max: float) -> np.ndarray:
  """``(n, 2)`` float64 points in the plane with radius uniform in ``[r_min, r_max)`` and angle uniform in
  ``[0, 2π)`` (radii are drawn first, then angles, from ``rng``)."""
  r, phi = rng.uniform(r_min, r_max, n), rng.uniform(0, 2 * np.pi, n)
  return np.stack([r * np.cos(phi), r * np.sin(phi)], -1)


def square_grid(half_extent: float, n: int) -> np.ndarray:
  """``(n*n, 2)`` points of the ``n x n`` grid over ``[-half_extent, half_extent]^2`` (x fastest, y rows; an odd
  ``n`` contains the origin and is symmetric under 90-degree rotations)."""
  lin = np.linspace(-half_extent, half_extent, n)
  gx, gy = np.meshgrid(lin, lin, indexing="xy")
  return np.stack([gx.ravel(), gy.ravel()], -1)


def unit_sphere_pairs(rng: np.random.Generator, n: int) -> np.ndarray:
  """``(n, 6)`` float64 pairs ``(a, b)`` of independent uniform points on the unit sphere S^2 (normalised
  Gaussians drawn from ``rng``), the data manifold S^2 x S^2 of the cross-product task."""
  v = rng.standard_normal((n, 2, 3))
  return (v / np.linalg.norm(v, axis=-1, keepdims=True)).reshape(n, 6)
