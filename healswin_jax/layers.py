"""Swin building blocks shared by the HEALPix model and the flat baseline (Flax linen).

There is ONE block implementation. Everything geometry-specific -- how a stage is cut into windows, how a
shifted block moves tokens, which tokens of a shifted window may attend to each other, where a token sits
inside its window (for the relative position bias), which tokens are merged into one coarser token -- is
passed in as pure functions and numpy tables (:class:`WindowLayout`, ``group`` / ``ungroup`` callables).
The tables are numpy constants captured when the module is traced: they are not parameters, never receive
gradients, and the forward pass only reshapes and gathers.

Shape conventions: tokens are ``(B, N, C)``; windows are ``(B, nW, ws, C)`` (batch kept separate from the
window axis so that per-window masks broadcast over the batch without being tiled).

References: Swin V1 (Liu et al. 2021, arXiv:2103.14030), Swin V2 (Liu et al. 2022, arXiv:2111.09883),
Swin-Unet (Cao et al. 2021, arXiv:2105.05537), HEAL-SWIN (Carlsson, Gerken et al. 2023, arXiv:2307.07313).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


Array = jax.Array
# Linear layers: truncated normal(0.02) weights, zero bias (as in Swin and the HEAL-SWIN original).
dense_init = nn.initializers.truncated_normal(0.02)
LN_EPS = 1e-5


def relative_position_index(rc: np.ndarray) -> tuple[np.ndarray, int]:
  """Index into a relative-position bias table from in-window (row, col) coordinates.

  Args:
    rc: (ws, 2) integer (row, col) of each in-window token position, 0 <= row, col < s.

  Returns:
    ``(index, table_size)``: index (ws, ws) int32 with
    ``index[n, m] = (r_n - r_m + s - 1) * (2s - 1) + (c_n - c_m + s - 1)`` (the Swin / HEAL-SWIN convention)
    and ``table_size = (2s - 1)**2``. The flat model passes row-major (r, c), the HEALPix model
    ``healpix.windows.window_rc(ws)`` (the original's in-window layout).
  """
  rc = np.asarray(rc, dtype=np.int64)
  s = int(rc.max()) + 1
  d = rc[:, None, :] - rc[None, :, :] + (s - 1)
  return (d[..., 0] * (2 * s - 1) + d[..., 1]).astype(np.int32), (2 * s - 1)**2


# -- region masks of shifted windows --------------------------------------------------------------------------

# Additive logit for query/key pairs with different labels. The original uses -100, which leaks: Swin-V2 cosine
# logits reach +-100 at the temperature clamp (ln 100), so a masked logit can exceed an allowed one by up to
# 100. With -1e9 the masked weight is <= (ws - 1) exp(200 + 2 max|bias| - 1e9), which underflows to exactly 0
# in float32 and bfloat16 for any relative-position bias below ~1e8. float16 cannot hold 1e9, so
# :func:`mask_value` uses half its largest finite value there (still exp(-3e4) = 0).
MASK_VALUE = -1e9


def mask_value(dtype=jnp.float32) -> float:
  """The additive mask constant for logits of ``dtype`` (:data:`MASK_VALUE`, or -max/2 where it overflows)."""
  return float(max(MASK_VALUE, -0.5 * float(jnp.finfo(dtype).max)))


def same_region(labels: np.ndarray, ws: int) -> np.ndarray:
  """(N,) labels -> (N / ws, ws, ws) bool: whether query n and key m of a window may attend."""
  wl = np.asarray(labels).reshape(-1, ws)
  return wl[:, :, None] == wl[:, None, :]


def mask_logits(logits: Array, allowed) -> Array:
  """The attention mask as :class:`WindowAttention` applies it: ``logits`` where ``allowed``, else
  :func:`mask_value` of the logits' dtype (``allowed`` broadcasts against ``logits``; from :func:`same_region`)."""
  return jnp.where(allowed, logits, jnp.asarray(mask_value(logits.dtype), logits.dtype))


@dataclasses.dataclass(frozen=True, eq=False)
class WindowLayout:
  """How one stage of ``num_tokens`` tokens is cut into attention windows and shifted.

  Attributes:
    num_tokens: N tokens per example at this stage.
    window_size: ws tokens per window (N for a stage that attends globally).
    partition: ``(B, N, C) -> (B, nW, ws, C)``.
    reverse: ``(B, nW, ws, C) -> (B, N, C)``, the inverse of ``partition``.
    rel_index: (ws, ws) int index into a ``(table_size, heads)`` bias table, or None (no bias possible, e.g.
      a global stage spanning several faces).
    table_size: rows of the bias table.
    shift: ``(B, N, C) -> (B, N, C)`` applied before partitioning in shifted blocks; None: never shifted.
    unshift: inverse of ``shift``.
    shift_labels: (nW, ws) integer region labels of the shifted window layout; tokens with different labels
      must not attend to each other. None when no shifted window mixes regions (no mask needed at all).
  """
  num_tokens: int
  window_size: int
  partition: Callable[[Array], Array]
  reverse: Callable[[Array], Array]
  rel_index: Optional[np.ndarray] = None
  table_size: int = 0
  shift: Optional[Callable[[Array], Array]] = None
  unshift: Optional[Callable[[Array], Array]] = None
  shift_labels: Optional[np.ndarray] = None

  @property
  def num_windows(self) -> int:
    return self.num_tokens // self.window_size

  @property
  def can_shift(self) -> bool:
    return self.shift is not None

  @functools.cached_property
  def same_region(self) -> Optional[np.ndarray]:
    """(nW, ws, ws) bool: may query n attend to key m in each shifted window (None: everything may)."""
    if self.shift_labels is None:
      return None
    return same_region(self.shift_labels, self.window_size)


def global_layout(num_tokens: int) -> WindowLayout:
  """A stage that attends over all of its tokens: one window, no shift, no relative position bias."""
  return WindowLayout(num_tokens=num_tokens, window_size=num_tokens,
                      partition=lambda x: x[:, None], reverse=lambda w: w[:, 0])


def layer_norm(name: str) -> nn.LayerNorm:
  """LayerNorm (eps 1e-5, weight 1, bias 0) computed and returned in float32 whatever the compute dtype."""
  return nn.LayerNorm(epsilon=LN_EPS, dtype=jnp.float32, name=name)


# -- small layers ---------------------------------------------------------------------------------------------


class DropPath(nn.Module):
  """Stochastic depth: drops the whole residual branch per example with probability ``rate`` (rng 'dropout')."""
  rate: float
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array) -> Array:
    if self.deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class Mlp(nn.Module):
  """Linear(C, hidden) -> exact GELU -> Dropout -> Linear(hidden, C) -> Dropout."""
  hidden: int
  drop: float = 0.0
  dtype: jnp.dtype = jnp.float32
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = x.shape[-1]
    x = nn.Dense(self.hidden, dtype=self.dtype, kernel_init=dense_init, name="fc1")(x)
    x = nn.gelu(x, approximate=False)
    x = nn.Dropout(self.drop, deterministic=self.deterministic)(x)
    x = nn.Dense(c, dtype=self.dtype, kernel_init=dense_init, name="fc2")(x)
    return nn.Dropout(self.drop, deterministic=self.deterministic)(x)


def _l2_normalize(x: Array, eps: float = 1e-12) -> Array:
  """x / max(|x|, eps) along the last axis; the max keeps the gradient finite at x = 0."""
  sq = jnp.sum(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True)
  return (x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps)).astype(x.dtype))


class QKVProjection(nn.Module):
  """The attention's Linear(C -> 3C) returning q, k, v as three contiguous (..., h, d) arrays.

  Parameters are exactly those of ``nn.Dense(3 * C)`` (``kernel`` (C, 3C) truncated-normal(0.02), ``bias``
  (3C,) zero; output channel ``i * C + j * d + e`` is component i of head j, dim e), so checkpoints and the
  parameter tree are unchanged. Three (C -> C) products instead of one (C -> 3C) product and three strided
  slices of its output: XLA on CPU materialises those slices forwards and pads them back into a (..., 3C)
  gradient backwards, both full passes over the largest activation of the block.

  Attributes:
    dim: C.
    num_heads: h (C divisible by h), d = C / h.
  """
  dim: int
  num_heads: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> tuple[Array, Array, Array]:
    """(..., C) -> q, k, v each (..., h, d) in ``self.dtype``."""
    c, h = self.dim, self.num_heads
    kernel = self.param("kernel", dense_init, (x.shape[-1], 3 * c))
    bias = self.param("bias", nn.initializers.zeros_init(), (3 * c,))
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    kernel = kernel.reshape(x.shape[-1], 3, h, c // h)
    bias = bias.reshape(3, h, c // h)
    lead = (1,) * (x.ndim - 1)
    return tuple(jnp.einsum("...c,chd->...hd", x, kernel[:, i]) + bias[i].reshape(lead + bias.shape[1:])
                 for i in range(3))


class WindowAttention(nn.Module):
  """Multi-head self-attention inside windows, with relative position bias and a region mask.

  ``"v1"``: logits = q.k / sqrt(d). ``"v2"``: logits = cos(q, k) * exp(min(tau_h, ln 100)), tau_h learned per
  head and initialised to ln 10. The bias ``T[rel_index]`` (table initialised truncated-normal(0.02)) is added
  to the logits, then :func:`mask_logits` sets pairs in different regions to :data:`MASK_VALUE` (its comment
  explains why not the original's -100); softmax runs in float32, so masked weights underflow to exactly 0.

  Attributes:
    dim: C.
    num_heads: h (C divisible by h).
    rel_index: (ws, ws) int index into the bias table, or None for no bias.
    table_size: rows of the bias table.
    attention: "v1" or "v2".
  """
  dim: int
  num_heads: int
  rel_index: Optional[np.ndarray] = None
  table_size: int = 0
  attention: str = "v2"
  attn_drop: float = 0.0
  proj_drop: float = 0.0
  dtype: jnp.dtype = jnp.float32
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array, same_region: Optional[np.ndarray] = None) -> Array:
    """(B, nW, ws, C), optional (nW, ws, ws) bool (:func:`same_region`: may query n attend to key m) ->
    (B, nW, ws, C)."""
    b, nw, ws, c = x.shape
    h = self.num_heads
    d = c // h
    # Layout (B, nW, ws, h, d) and logits (B, nW, q, k, h) with heads last: no explicit transposes, and the bias
    # (ws, ws, h) and mask (nW, ws, ws) broadcast without copies. On XLA:CPU this was faster than both the
    # heads-first layout with transposes and broadcast-multiply-reduce products (benchmarks.healswin_step).
    q, k, v = QKVProjection(c, h, dtype=self.dtype, name="qkv")(x)
    if self.attention == "v2":
      q, k = _l2_normalize(q), _l2_normalize(k)
    else:
      q = q * jnp.asarray(d**-0.5, q.dtype)
    logits = jnp.einsum("bwqhd,bwkhd->bwqkh", q, k, preferred_element_type=jnp.float32)
    if self.attention == "v2":
      tau = self.param("logit_scale", nn.initializers.constant(math.log(10.0)), (h,))
      logits = logits * jnp.exp(jnp.minimum(tau, math.log(100.0)))[None, None, None, None, :]
    if self.rel_index is not None:
      if self.rel_index.shape != (ws, ws):
        raise ValueError(f"rel_index has shape {self.rel_index.shape} but windows hold {ws} tokens.")
      table = self.param("rel_pos_table", dense_init, (self.table_size, h))
      bias = jnp.take(table, jnp.asarray(self.rel_index.reshape(-1)), axis=0).reshape(ws, ws, h)
      logits = logits + bias[None, None]
    if same_region is not None:
      if same_region.shape != (nw, ws, ws):
        raise ValueError(f"same_region mask has shape {same_region.shape}, expected {(nw, ws, ws)}.")
      logits = mask_logits(logits, jnp.asarray(same_region)[None, :, :, :, None])
    attn = jax.nn.softmax(logits, axis=3).astype(self.dtype)
    attn = nn.Dropout(self.attn_drop, deterministic=self.deterministic)(attn)
    out = jnp.einsum("bwqkh,bwkhd->bwqhd", attn, v).reshape(b, nw, ws, c)
    out = nn.Dense(c, dtype=self.dtype, kernel_init=dense_init, name="proj")(out)
    return nn.Dropout(self.proj_drop, deterministic=self.deterministic)(out)


class SwinBlock(nn.Module):
  """One Swin block: (shifted) window attention and an MLP, each in a residual branch with drop-path.

  v1 (pre-norm):  x += DP(attn(LN(x))); x += DP(mlp(LN(x))).
  v2 (post-norm): x += DP(LN(attn(x))); x += DP(LN(mlp(x))).
  A shifted block gathers tokens with ``layout.shift``, attends within the shifted windows under the region
  mask, and gathers back with ``layout.unshift``.

  Attributes:
    layout: the stage's :class:`WindowLayout` (shared by all blocks of the stage).
    shifted: use the shifted windows (requires ``layout.can_shift``).
  """
  dim: int
  num_heads: int
  layout: WindowLayout
  shifted: bool = False
  mlp_ratio: float = 4.0
  attention: str = "v2"
  rel_pos_bias: bool = True
  drop: float = 0.0
  attn_drop: float = 0.0
  drop_path: float = 0.0
  dtype: jnp.dtype = jnp.float32
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """(B, N, C) -> (B, N, C)."""
    lay = self.layout
    if x.shape[1] != lay.num_tokens:
      raise ValueError(f"SwinBlock got {x.shape[1]} tokens, its layout expects {lay.num_tokens}.")
    if self.shifted and not lay.can_shift:
      raise ValueError("SwinBlock(shifted=True) needs a layout with a shift (global stages never shift).")
    use_bias = self.rel_pos_bias and lay.rel_index is not None
    attn = WindowAttention(self.dim, self.num_heads, rel_index=lay.rel_index if use_bias else None,
                           table_size=lay.table_size, attention=self.attention, attn_drop=self.attn_drop,
                           proj_drop=self.drop, dtype=self.dtype, deterministic=self.deterministic, name="attn")
    mlp = Mlp(int(self.dim * self.mlp_ratio), drop=self.drop, dtype=self.dtype, deterministic=self.deterministic,
              name="mlp")
    drop_path = DropPath(self.drop_path, deterministic=self.deterministic)
    norm1, norm2 = layer_norm("norm1"), layer_norm("norm2")

    def attend(y):
      if self.shifted:
        y = lay.shift(y)
      y = lay.reverse(attn(lay.partition(y), lay.same_region if self.shifted else None))
      return lay.unshift(y) if self.shifted else y

    # The residual stream stays float32 whatever the compute dtype: bf16 rounding of the stream compounds over
    # the blocks (and post-norm v2 re-amplifies it), while the matmuls, where the cost is, run in self.dtype.
    x = x.astype(jnp.float32)
    if self.attention == "v1":
      x = x + drop_path(attend(norm1(x)))
      x = x + drop_path(mlp(norm2(x)))
    else:
      x = x + drop_path(norm1(attend(x)))
      x = x + drop_path(norm2(mlp(x)))
    return x


class SwinStage(nn.Module):
  """``depth`` Swin blocks on one layout; block i is shifted iff i is odd and the layout can shift.

  Attributes:
    drop_paths: per-block stochastic-depth rates (length = depth).
    remat: recompute each block's activations in the backward pass (``jax.checkpoint``).
  """
  dim: int
  depth: int
  num_heads: int
  layout: WindowLayout
  drop_paths: tuple[float, ...]
  mlp_ratio: float = 4.0
  attention: str = "v2"
  rel_pos_bias: bool = True
  drop: float = 0.0
  attn_drop: float = 0.0
  dtype: jnp.dtype = jnp.float32
  remat: bool = False
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array) -> Array:
    block_cls = nn.remat(SwinBlock) if self.remat else SwinBlock
    for i in range(self.depth):
      x = block_cls(self.dim, self.num_heads, self.layout, shifted=bool(i % 2) and self.layout.can_shift,
                    mlp_ratio=self.mlp_ratio, attention=self.attention, rel_pos_bias=self.rel_pos_bias,
                    drop=self.drop, attn_drop=self.attn_drop, drop_path=self.drop_paths[i], dtype=self.dtype,
                    deterministic=self.deterministic, name=f"block{i}")(x)
    return x


class PatchEmbed(nn.Module):
  """Patch embedding: ``group`` P pixels into one token, then Linear(P*C_in -> E).

  For HEALPix, ``group`` is the reshape (B, N, C) -> (B, N/P, P*C) of P consecutive NEST pixels, so this equals
  the original's Conv1d(kernel = stride = P) (a Linear on the concatenated pixels). No norm (the encoder adds one
  with ``SwinConfig.patch_norm``), no absolute position embedding.
  """
  embed_dim: int
  group: Callable[[Array], Array]
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return nn.Dense(self.embed_dim, dtype=self.dtype, kernel_init=dense_init, name="proj")(self.group(x))


class PatchMerging(nn.Module):
  """Concatenate the 4 children of each coarse token -> LN(4C) -> Linear(4C -> 2C, no bias).

  Attributes:
    group: (B, N, C) -> (B, N/4, 4C), children of each coarse token concatenated along channels.
  """
  group: Callable[[Array], Array]
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = x.shape[-1]
    x = layer_norm("norm")(self.group(x))
    return nn.Dense(2 * c, use_bias=False, dtype=self.dtype, kernel_init=dense_init, name="reduction")(x)


class PatchExpand(nn.Module):
  """Decoder patch expansion: Linear(C -> factor*out_dim, no bias) -> split into ``factor`` children -> LN.

  Chunk j of the Linear output becomes child j (the child order of the matching ``group``). The U-Net decoder
  uses ``factor=4, out_dim=C/2`` (tokens x4, channels /2, the default).

  Attributes:
    ungroup: (B, N, factor*out_dim) -> (B, factor*N, out_dim), the inverse of the matching ``group``.
    factor: children per token.
    out_dim: channels of each child (None: C // 2).
  """
  ungroup: Callable[[Array], Array]
  factor: int = 4
  out_dim: Optional[int] = None
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    out_dim = self.out_dim or x.shape[-1] // 2
    x = nn.Dense(self.factor * out_dim, use_bias=False, dtype=self.dtype, kernel_init=dense_init,
                 name="expand")(x)
    return layer_norm("norm")(self.ungroup(x))


class FinalPatchExpand(PatchExpand):
  """Final expansion from tokens back to pixels: Linear(E -> P*E, no bias) -> P children of E channels -> LN.

  Construct with ``factor=P`` (pixels per token) and ``out_dim=E``; ``ungroup`` is the inverse of the patch
  embedding's ``group``.
  """
