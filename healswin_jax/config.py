"""Frozen, validated, JSON-serializable model configurations for HEAL-SWIN and the flat Swin baseline.

A config is pure data: it is validated once in ``__post_init__`` (every error names the offending field and
says how to fix it), hashed and compared by value, and round-trips through ``to_dict`` / ``from_dict`` /
``to_json`` / ``from_json`` so that it can be logged next to a checkpoint and rebuilt exactly.

Conventions (HEAL-SWIN, Carlsson, Gerken et al., CVPR 2024, arXiv:2307.07313):

* The input is a HEALPix map in NESTED order restricted to ``faces`` (base pixels), concatenated face by face:
  ``N = len(faces) * nside**2`` pixels, array layout ``(B, N, C)``.
* ``patch_size`` P = 4^k consecutive NEST pixels form one token (a sqrt(P) x sqrt(P) square), so stage k has
  token resolution ``nside_k = nside / (sqrt(P) * 2**k)`` and ``N_k = len(faces) * nside_k**2`` tokens.
* ``window_size`` ws = 4^k consecutive tokens form one attention window (a sqrt(ws) x sqrt(ws) square inside a
  face). A stage whose faces hold fewer than ws tokens (``nside_k**2 < ws``) cannot be cut into windows without
  gluing faces together, so it attends *globally* over all ``N_k`` tokens, is never shifted and has no
  relative position bias (in-window (row, col) is undefined across faces). :meth:`HealSwinConfig.stage_plan`
  lists which stages are windowed and which are global; the original implementation crashes in this case.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping

import numpy as np
from healswin_jax.healpix import topology

SHIFT_STRATEGIES = ("grid", "ring", "none")
ATTENTIONS = ("v1", "v2")
HEADS = ("segmentation", "depth", "classification")
POOLS = ("max", "mean")
DTYPES = ("float32", "bfloat16")
NUM_FACES = 12


def _is_power_of(n: int, base: int) -> bool:
  if not isinstance(n, int) or isinstance(n, bool) or n < 1:
    return False
  while n % base == 0:
    n //= base
  return n == 1


def _fail(field: str, problem: str, fix: str) -> None:
  raise ValueError(f"{field}: {problem}. Fix: {fix}.")


@dataclasses.dataclass(frozen=True)
class SwinConfig:
  """Hyperparameters shared by the HEALPix and the flat Swin U-Net (see the subclasses for the grid).

  Attributes:
    in_channels: input channels C_in.
    embed_dim: token dimension E of stage 0; stage k has ``E * 2**k`` (must be divisible by every stage's heads).
    depths: Swin blocks per stage; the last stage is the bottleneck. The decoder reuses ``depths[:-1]``.
    num_heads: attention heads per stage (same length as ``depths``).
    mlp_ratio: hidden width of the MLP relative to the stage dimension.
    attention: ``"v1"``: scaled dot product q.k/sqrt(d), pre-norm residuals (Swin V1, Liu et al. 2021,
      arXiv:2103.14030). ``"v2"``: cosine attention cos(q, k) * exp(min(tau_h, ln 100)) with a learned
      per-head tau_h initialised to ln 10, post-norm residuals (Swin V2, Liu et al. 2022, arXiv:2111.09883);
      the HEAL-SWIN paper runs use v2.
    rel_pos_bias: learned relative position bias table ((2s-1)^2, heads) over in-window (row, col) offsets.
    patch_norm: LayerNorm on the patch embedding's output (Swin's ``patch_norm``; the HEAL-SWIN original has
      none, and feeds raw 0-255 RGB). It fixes the token scale whatever the input scale: without it, inputs
      in [-1, 1] give small stage-0 tokens, the V2 post-norm blocks (cosine attention, LN after each branch)
      divide by those small norms, their gradients dwarf all others and the V2 classifier stays at chance.
    pool: how the classifier reduces the bottleneck tokens to one vector: ``"max"`` (per channel over tokens,
      the default) or ``"mean"``. A mean over the whole sphere is dominated by the tokens that see background
      (a spherical-MNIST digit covers ~1/6 of the sphere): their features are the same for every example,
      the example-dependent part of the pooled vector is small and training stays at chance; the max keeps
      the strongest (content) responses. Ignored by the dense heads.
    drop_rate: dropout after the patch embedding and inside the MLP / attention projection.
    attn_drop_rate: dropout on the attention weights.
    drop_path_rate: stochastic depth, linearly increasing from 0 over all encoder blocks (decoder stage k
      reuses encoder stage k's rates, as in the original).
    head: ``"segmentation"`` (per-pixel ``num_classes`` logits), ``"depth"`` (per-pixel ``depth_channels``:
      1 = depth, 2 = depth and log-variance) or ``"classification"`` (encoder only, ``pool``, ``num_classes``).
    num_classes: classes for the segmentation / classification heads (ignored by ``"depth"``).
    depth_channels: 1 or 2 output channels of the depth head (ignored otherwise).
    dtype: compute dtype of the matmuls (Dense layers and attention products); parameters, LayerNorms, softmax,
      the residual stream and the output head stay float32.
    remat: recompute each Swin block's activations in the backward pass (``jax.checkpoint``) to save memory.
  """

  in_channels: int = 3
  embed_dim: int = 96
  depths: tuple[int, ...] = (2, 2, 6, 2)
  num_heads: tuple[int, ...] = (3, 6, 12, 24)
  mlp_ratio: float = 4.0
  attention: str = "v2"
  rel_pos_bias: bool = True
  patch_norm: bool = False
  pool: str = "max"
  drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.1
  head: str = "segmentation"
  num_classes: int = 10
  depth_channels: int = 1
  dtype: str = "float32"
  remat: bool = False

  def __post_init__(self):
    # Lists from JSON become tuples so the config stays hashable and compares by value.
    for name in ("depths", "num_heads"):
      value = getattr(self, name)
      if isinstance(value, (list, tuple)):
        object.__setattr__(self, name, tuple(value))
    self._validate_common()

  # -- validation -------------------------------------------------------------------------------------------

  def _validate_common(self) -> None:
    def pos_int(name):
      v = getattr(self, name)
      if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        _fail(name, f"must be a positive int, got {v!r}", f"pass e.g. {name}=1")

    pos_int("in_channels")
    pos_int("embed_dim")
    if not isinstance(self.depths, tuple) or not self.depths:
      _fail("depths", f"must be a non-empty sequence of ints, got {self.depths!r}", "pass e.g. depths=(2, 2, 2)")
    if not isinstance(self.num_heads, tuple) or not self.num_heads:
      _fail("num_heads", f"must be a non-empty sequence of ints, got {self.num_heads!r}",
            "pass e.g. num_heads=(3, 6, 12)")
    for name in ("depths", "num_heads"):
      for v in getattr(self, name):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
          _fail(name, f"entries must be positive ints, got {getattr(self, name)!r}", "use positive integers")
    if len(self.depths) != len(self.num_heads):
      _fail("num_heads", f"has {len(self.num_heads)} entries but depths has {len(self.depths)} "
            f"(one head count per stage)", "give depths and num_heads the same length")
    for k, h in enumerate(self.num_heads):
      dim = self.embed_dim * 2**k
      if dim % h:
        _fail("num_heads", f"stage {k} has dim embed_dim*2**{k} = {dim}, not divisible by {h} heads",
              f"choose num_heads[{k}] dividing {dim} or change embed_dim")
    if (not isinstance(self.mlp_ratio, (int, float)) or isinstance(self.mlp_ratio, bool)
        or not math.isfinite(self.mlp_ratio) or self.mlp_ratio <= 0):
      _fail("mlp_ratio", f"must be a positive number, got {self.mlp_ratio!r}", "use e.g. mlp_ratio=4.0")
    if int(self.embed_dim * self.mlp_ratio) < 1:
      _fail("mlp_ratio", "gives an MLP hidden width < 1", "increase mlp_ratio")
    if self.attention not in ATTENTIONS:
      _fail("attention", f"unknown value {self.attention!r}", f"use one of {ATTENTIONS}")
    for name in ("rel_pos_bias", "patch_norm"):
      if not isinstance(getattr(self, name), bool):
        _fail(name, f"must be a bool, got {getattr(self, name)!r}", "pass True or False")
    if self.pool not in POOLS:
      _fail("pool", f"unknown value {self.pool!r}", f"use one of {POOLS}")
    for name in ("drop_rate", "attn_drop_rate", "drop_path_rate"):
      v = getattr(self, name)
      if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v < 1.0:
        _fail(name, f"must be a probability in [0, 1), got {v!r}", f"pass e.g. {name}=0.1")
    if self.head not in HEADS:
      _fail("head", f"unknown value {self.head!r}", f"use one of {HEADS}")
    if self.head in ("segmentation", "classification"):
      if not isinstance(self.num_classes, int) or isinstance(self.num_classes, bool) or self.num_classes < 2:
        _fail("num_classes", f"must be an int >= 2 for head={self.head!r}, got {self.num_classes!r}",
              "pass the number of classes, e.g. num_classes=10")
    if self.head == "depth" and self.depth_channels not in (1, 2):
      _fail("depth_channels", f"must be 1 (depth) or 2 (depth + log-variance), got {self.depth_channels!r}",
            "pass depth_channels=1 or 2")
    if self.dtype not in DTYPES:
      _fail("dtype", f"unknown compute dtype {self.dtype!r}", f"use one of {DTYPES} (params stay float32)")
    if not isinstance(self.remat, bool):
      _fail("remat", f"must be a bool, got {self.remat!r}", "pass True or False")

  # -- derived quantities -----------------------------------------------------------------------------------

  @property
  def num_stages(self) -> int:
    return len(self.depths)

  @property
  def out_dim(self) -> int:
    """Channels f_out of the head's output."""
    return self.depth_channels if self.head == "depth" else self.num_classes

  def stage_dim(self, k: int) -> int:
    return self.embed_dim * 2**k

  def drop_path_rates(self) -> tuple[tuple[float, ...], ...]:
    """Per-stage, per-block stochastic-depth rates: linspace(0, drop_path_rate, sum(depths)) split by stage."""
    total = sum(self.depths)
    rates = [self.drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
    out, start = [], 0
    for d in self.depths:
      out.append(tuple(rates[start:start + d]))
      start += d
    return tuple(out)

  # -- serialization ----------------------------------------------------------------------------------------

  def to_dict(self) -> dict[str, Any]:
    """Plain JSON-compatible dict (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      out[f.name] = list(v) if isinstance(v, tuple) else v
    return out

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]):
    """Inverse of :meth:`to_dict`; unknown and missing keys raise.

    A typo must not silently fall back to a default, and neither may a field missing from a saved config
    (it would rebuild a different model than the one that was logged).
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(f"{cls.__name__}.from_dict: unknown field(s) {unknown}. Fix: use only {sorted(names)}.")
    missing = sorted(names - set(d))
    if missing:
      raise ValueError(f"{cls.__name__}.from_dict: missing field(s) {missing}. Fix: give every field (a config "
                       f"written by to_dict/to_json has all of them), e.g. start from {cls.__name__}().to_dict().")
    return cls(**dict(d))

  def to_json(self, **kwargs) -> str:
    return json.dumps(self.to_dict(), sort_keys=True, **kwargs)

  @classmethod
  def from_json(cls, text: str):
    return cls.from_dict(json.loads(text))

  def replace(self, **changes):
    """A validated copy with some fields changed."""
    return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class StagePlan:
  """How one encoder stage of the HEALPix model is laid out.

  Attributes:
    stage: index k.
    nside: token resolution nside_k of the stage.
    num_tokens: N_k = len(faces) * nside_k**2.
    dim: token dimension E * 2**k.
    num_heads: attention heads.
    window_size: tokens per attention window (= N_k for a global stage).
    windowed: False when the stage attends globally (faces hold fewer than ``window_size`` tokens).
    shifted: whether odd blocks shift (False for global stages and ``shift_strategy="none"``).
  """
  stage: int
  nside: int
  num_tokens: int
  dim: int
  num_heads: int
  window_size: int
  windowed: bool
  shifted: bool


@dataclasses.dataclass(frozen=True)
class HealSwinConfig(SwinConfig):
  """HEAL-SWIN on the HEALPix sphere (NESTED order); see the module docstring for the grid conventions.

  Attributes:
    nside: input HEALPix resolution (a power of 2).
    faces: strictly increasing base pixels used, a subset of 0..11 (the original uses the first 8).
    patch_size: P = 4^k consecutive NEST pixels per token (4 = 2x2 pixels, the paper's setting).
    window_size: ws = 4^k tokens per attention window (64 = 8x8, the paper's setting).
    shift_strategy: ``"grid"`` (half-window diagonal shift within faces, crossing seams into the correct
      neighbour face; the paper's grid shifting), ``"ring"`` (roll along the RING-order iso-latitude spiral; the
      paper's spiral shifting) or ``"none"`` (no shifted blocks).
  """

  nside: int = 16
  faces: tuple[int, ...] = tuple(range(NUM_FACES))
  patch_size: int = 4
  window_size: int = 16
  shift_strategy: str = "grid"

  def __post_init__(self):
    if isinstance(self.faces, (list, tuple, range, np.ndarray)):
      # range(12) and numpy integers are accepted and stored as a tuple of Python ints (hashable, JSON).
      items = self.faces.tolist() if isinstance(self.faces, np.ndarray) else self.faces
      object.__setattr__(self, "faces", tuple(int(f) if isinstance(f, np.integer) else f for f in items))
    super().__post_init__()
    self._validate_grid()

  def _validate_grid(self) -> None:
    object.__setattr__(self, "nside", topology.check_nside(self.nside))
    object.__setattr__(self, "faces", topology.check_faces(self.faces))
    if not _is_power_of(self.patch_size, 4):
      _fail("patch_size", f"must be a power of 4 (a square of NEST pixels), got {self.patch_size!r}",
            "use 1, 4 (2x2, the paper), 16 (4x4), ...")
    if not _is_power_of(self.window_size, 4) or self.window_size < 4:
      _fail("window_size", f"must be a power of 4 >= 4 (a square of NEST tokens), got {self.window_size!r}",
            "use 4 (2x2), 16 (4x4) or 64 (8x8, the paper)")
    if self.shift_strategy not in SHIFT_STRATEGIES:
      _fail("shift_strategy", f"unknown value {self.shift_strategy!r}", f"use one of {SHIFT_STRATEGIES}")
    side = math.isqrt(self.patch_size)
    levels = 2**(self.num_stages - 1)
    if self.nside < side * levels:
      need = side * levels
      _fail("nside", f"{self.nside} is too small for patch_size={self.patch_size} ({side}x{side} pixels) and "
            f"{self.num_stages} stages (each merge halves nside; needs nside >= {need})",
            f"use nside >= {need}, a smaller patch_size or fewer stages")
    tokens_per_face0 = (self.nside // side)**2
    if self.window_size > tokens_per_face0:
      _fail("window_size", f"{self.window_size} is larger than a face at stage 0 ({tokens_per_face0} tokens = "
            f"(nside/sqrt(patch_size))**2), so no stage could use windows",
            f"use window_size <= {tokens_per_face0} or a larger nside")

  # -- derived quantities -----------------------------------------------------------------------------------

  @property
  def num_pixels(self) -> int:
    """N = len(faces) * nside**2, the input length."""
    return len(self.faces) * self.nside**2

  def stage_nside(self, k: int) -> int:
    """Token resolution nside_k = nside / (sqrt(P) * 2**k) of stage k."""
    return self.nside // (math.isqrt(self.patch_size) * 2**k)

  def stage_plan(self) -> tuple[StagePlan, ...]:
    """The per-stage layout (which stages are windowed, shifted or global)."""
    plans = []
    for k in range(self.num_stages):
      ns = self.stage_nside(k)
      n = len(self.faces) * ns**2
      windowed = ns**2 >= self.window_size and n > self.window_size
      plans.append(StagePlan(stage=k, nside=ns, num_tokens=n, dim=self.stage_dim(k), num_heads=self.num_heads[k],
                             window_size=self.window_size if windowed else n, windowed=windowed,
                             shifted=windowed and self.shift_strategy != "none"))
    return tuple(plans)


@dataclasses.dataclass(frozen=True)
class FlatSwinConfig(SwinConfig):
  """The flat Swin U-Net baseline on (H, W) images (Swin-Unet, Cao et al. 2021, arXiv:2105.05537).

  Attributes:
    image_size: (H, W) in pixels.
    patch_size: side p of the square p x p pixel patches (P = p**2 pixels per token).
    window_size: side s of the square s x s token windows (ws = s**2 tokens).
    shift: cyclic shift by s//2 in both axes on odd blocks (masked across the wrap-around), as in Swin.
  """

  image_size: tuple[int, int] = (64, 64)
  patch_size: int = 2
  window_size: int = 4
  shift: bool = True

  def __post_init__(self):
    if isinstance(self.image_size, (list, tuple)):
      object.__setattr__(self, "image_size", tuple(self.image_size))
    super().__post_init__()
    if (not isinstance(self.image_size, tuple) or len(self.image_size) != 2
        or any(not isinstance(v, int) or v < 1 for v in self.image_size)):
      _fail("image_size", f"must be (H, W) positive ints, got {self.image_size!r}", "pass e.g. image_size=(64, 128)")
    for name in ("patch_size", "window_size"):
      v = getattr(self, name)
      if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        _fail(name, f"must be a positive int (a side length), got {v!r}", f"pass e.g. {name}=2")
    if not isinstance(self.shift, bool):
      _fail("shift", f"must be a bool, got {self.shift!r}", "pass True or False")
    p, s, f = self.patch_size, self.window_size, 2**(self.num_stages - 1)
    for axis, size in zip("HW", self.image_size):
      if size % (p * s * f):
        _fail("image_size", f"{axis}={size} is not divisible by patch_size*window_size*2**(stages-1) = "
              f"{p}*{s}*{f} = {p * s * f}", f"use {axis} a multiple of {p * s * f}")

  @property
  def num_pixels(self) -> int:
    return self.image_size[0] * self.image_size[1]

  def stage_shape(self, k: int) -> tuple[int, int]:
    """(h_k, w_k) token grid of stage k."""
    f = self.patch_size * 2**k
    return self.image_size[0] // f, self.image_size[1] // f


# Named model sizes of this project's CPU-scale experiments, as overrides of HealSwinConfig fields
# (HealSwinConfig's own defaults are the paper's). "small": the training default (``run_config.base_config``);
# "full": the full modes of the scene and spherical-MNIST experiments. Quick modes shrink further on their own.
MODEL_SIZES: Mapping[str, Mapping[str, Any]] = {
    "small": dict(embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 8), window_size=4, mlp_ratio=2.0,
                  drop_path_rate=0.0),
    "full": dict(embed_dim=48, depths=(2, 2, 2), num_heads=(3, 6, 12)),
}
