"""Manifestly invariant baselines for the rotated-image experiments: canonicalization, a pixel-filter C_k
group-convolution CNN, and the layer pieces shared with the steerable CNN (:mod:`ntk.steerable`).

Gerken & Kessel (ICML 2024, arXiv 2403.03103, Table "OSP") compare deep ensembles trained with data
augmentation against E2CNN (Weiler & Cesa 2019) and learned canonicalization (Kaba et al. 2023,
https://arxiv.org/abs/2211.06489). ``e2cnn``/``escnn`` are PyTorch-only; the E2CNN baseline of this JAX
codebase is :class:`ntk.steerable.SteerableCNN`. This module holds:

- :class:`GroupConvCNN` (Cohen & Welling 2016, https://arxiv.org/abs/1602.07576): a lifting convolution (one
  filter bank rotated by every element of C_k), group convolutions (filters rotated in space *and* cyclically
  shifted along the group axis), ReLU, 2x2 average pooling, then global (mean or max) pooling over space and
  max pooling over the group, and a linear (or one-hidden-layer) classifier. Feature maps are ``(B, H, W, k *
  C)`` with channel index ``r * C + c`` (r the rotation). Rotating the input by element g rotates every
  feature map and shifts the group axis by g; the pooled features are invariant. The filters are rotated with
  the very same gather tables that rotate images (:func:`ntk.groups.rotations_ck` on the ``(K, K)`` filter
  grid), so for **k = 4 (rot90) the network is exactly invariant** (up to float round-off of reordered sums:
  ~1e-7 relative in float32, ~1e-15 in float64). For k = 8, 16 the filters (and images) are rotated by
  bilinear interpolation and invariance is approximate. It is kept as the reference that the steerable
  CNN's C8 / C16 equivariance error is measured against (``tests/test_steerable.py``), not as a baseline.
- :class:`Canonicalizer`: a small scoring network ``h`` rates every orbit element ``rho(a) x`` of the input,
  the input is replaced by its highest-scoring orbit element ``rho(a*) x`` ("rotated back"), and the
  *same* CNN as the ensemble members classifies it. For ``x' = rho(b) x`` the orbit is the same set,
  re-indexed (``rho(a) x' = rho(ab) x``), so the scores are permuted, the argmax moves along, and the
  canonical input is *the same array*: for permutation representations (C4 by rot90) the prediction is
  **bit-for-bit invariant**. Training goes through the argmax with a straight-through estimator (forward:
  the hard choice; backward: the softmax-weighted orbit), as in Kaba et al.

Both modules take NHWC images ``(B, H, W, C)`` and return logits ``(B, num_classes)``.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ntk import groups


@functools.lru_cache(maxsize=None)
def _filter_group(k: int, kernel_size: int) -> groups.FiniteGroup:
  """C_k acting on ``(K, K)`` filters by the same rotation tables as on images (built once per (k, K))."""
  return groups.rotations_ck(k, (kernel_size, kernel_size))


def rotate_filters(w: jax.Array, k: int) -> jax.Array:
  """All k rotations of a filter bank: ``(K, K, ...) -> (k, K, K, ...)``; entry a is rotation by 2πa/k."""
  kk = w.shape[0]
  flat = jnp.moveaxis(w.reshape(kk, kk, -1), -1, 0)  # (n, K, K)
  rot = _filter_group(k, kk).orbit(flat)  # (k, n, K, K)
  return jnp.moveaxis(rot, 1, -1).reshape((k,) + w.shape)


def group_conv_filters(w: jax.Array, k: int) -> jax.Array:
  """The full HWIO filter of a C_k group convolution from its free parameters.

  Args:
    w: ``(K, K, k, C_in, C_out)``: a filter over space and over the input's group axis.

  Returns:
    ``(K, K, k * C_in, k * C_out)``: output rotation r uses ``rot_r(w[:, :, (s - r) mod k])`` on input
    rotation s, so that rotating the input by g rotates the output maps and shifts their group index by g.
  """
  kk, _, kg, c_in, c_out = w.shape
  if kg != k:
    raise ValueError(f"filter group axis {kg} != k={k}.")
  shift = (np.arange(k)[None, :] - np.arange(k)[:, None]) % k  # shift[r, s] = (s - r) mod k
  shifted = jnp.moveaxis(w[:, :, shift], 2, 0)  # (k_r, K, K, k_s, C_in, C_out)
  rep = _filter_group(k, kk).rep_x

  def rotate_one(r, wr):  # rotate slice r by element r only
    flat = jnp.moveaxis(wr.reshape(kk, kk, -1), -1, 0)
    return jnp.moveaxis(rep.apply(r, flat), 0, -1).reshape(wr.shape)

  bank = jax.vmap(rotate_one)(jnp.arange(k), shifted)  # (k_r, K, K, k_s, C_in, C_out)
  return jnp.transpose(bank, (1, 2, 3, 4, 0, 5)).reshape(kk, kk, k * c_in, k * c_out)


def conv_same(x: jax.Array, w: jax.Array) -> jax.Array:
  """Stride-1 SAME cross-correlation of NHWC maps with an HWIO filter (odd K: symmetric padding)."""
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def avg_pool2(x: jax.Array) -> jax.Array:
  """2x2 average pooling of NHWC maps with even sides (odd sides raise: rot90 would not map tiles to tiles)."""
  b, h, w, c = x.shape
  if h % 2 or w % 2:
    # 2x2 tiles of an odd side are not mapped onto tiles by rot90: exact C4 invariance would break.
    raise ValueError(f"2x2 pooling needs even spatial sides, got {(h, w)}; pad the images or set pool_after=().")
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def regular_layers(module: nn.Module, x: jax.Array, k: int, channels: Sequence[int], pool_after: Sequence[int],
                   filters) -> jax.Array:
  """The lifting + group-convolution stack shared by the C_k CNNs: ``(B, H, W, C) -> (B, H', W', k * C_L)``.

  Layer i convolves with ``filters(i, c_in, c)`` (an HWIO filter ``(K, K, c_in', k * c)``, its parameters
  created by the caller; ``c_in`` is the image's channels for i = 0, else the previous layer's fields),
  adds one bias per field shared by all k group elements (so the layer stays equivariant), applies ReLU
  (pointwise, commutes with the regular representation's channel permutation) and, for i in
  ``pool_after``, 2x2 average pooling. Call inside a compact Flax module (parameters ``bias_i``).
  """
  c_prev = x.shape[-1]
  for i, c in enumerate(channels):
    filt = filters(i, c_prev, c)
    b = module.param(f"bias_{i}", nn.initializers.zeros, (c,), x.dtype)
    x = jax.nn.relu(conv_same(x, filt) + jnp.tile(b, k).reshape(1, 1, 1, k * c))
    if i in pool_after:
      x = avg_pool2(x)
    c_prev = c
  return x


def invariant_head(x: jax.Array, k: int, spatial_pool: str, hidden: int, num_classes: int) -> jax.Array:
  """Invariant readout of regular C_k feature maps ``(B, H, W, k * C)`` (channel ``r * C + c``) -> logits.

  Spatial mean or max (both commute with rotations of the map), then max over the group axis (invariant to
  its cyclic shift), then ``Dense(num_classes)`` (after a ReLU layer of width ``hidden`` if > 0). Call
  inside a compact Flax module: the Dense layers are named ``hidden`` and ``readout``.
  """
  if spatial_pool not in ("mean", "max"):
    raise ValueError(f"spatial_pool={spatial_pool!r} must be 'mean' or 'max'.")
  b, h, w, kc = x.shape
  maps = x.reshape(b, h * w, k, kc // k)
  feats = (maps.mean(axis=1) if spatial_pool == "mean" else maps.max(axis=1)).max(axis=1)  # (B, C)
  if hidden:
    feats = jax.nn.relu(nn.Dense(hidden, name="hidden")(feats))
  return nn.Dense(num_classes, name="readout")(feats)


class GroupConvCNN(nn.Module):
  """A C_k-invariant group-convolution CNN ``(B, H, W, C) -> (B, num_classes)`` (see the module docstring).

  Attributes:
    k: order of the rotation group C_k (4: exact rot90; 8, 16: bilinear filter rotation).
    channels: channels per group element of the lifting layer and each following group convolution.
    num_classes: logits.
    kernel_size: odd filter side (odd, so SAME padding is symmetric and rot90 maps the padding onto itself).
    pool_after: indices of layers followed by 2x2 average pooling (needs even sides).
    hidden: width of a ReLU layer between the invariant features and the logits (0: linear readout).
    spatial_pool: ``"mean"`` or ``"max"`` over the final feature map (both commute with rotations of the
      map; max learns faster on digits: it keeps "is this stroke anywhere" rather than its average).
  """
  k: int = 4
  channels: Sequence[int] = (8, 8)
  num_classes: int = 10
  kernel_size: int = 5
  pool_after: Sequence[int] = (0,)
  hidden: int = 0
  spatial_pool: str = "mean"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 4 or x.shape[1] != x.shape[2]:
      raise ValueError(f"GroupConvCNN takes square NHWC images (B, H, H, C), got {x.shape}; add x[..., None].")
    if self.kernel_size % 2 == 0:
      raise ValueError(f"kernel_size={self.kernel_size} must be odd.")
    kk, k = self.kernel_size, self.k
    he = lambda axes: nn.initializers.variance_scaling(2.0, "fan_in", "normal", in_axis=axes, out_axis=-1)

    def filters(i, c_in, c):
      if i == 0:  # lifting: one (K, K, C_in, c) bank, all k rotations
        w = self.param("lift", he((0, 1, 2)), (kk, kk, c_in, c), x.dtype)
        return jnp.moveaxis(rotate_filters(w, k), 0, 3).reshape(kk, kk, c_in, k * c)
      w = self.param(f"gconv_{i}", he((0, 1, 2, 3)), (kk, kk, k, c_in, c), x.dtype)
      return group_conv_filters(w, k)

    x = regular_layers(self, x, k, self.channels, self.pool_after, filters)
    return invariant_head(x, k, self.spatial_pool, self.hidden, self.num_classes)


class Canonicalizer(nn.Module):
  """Learned canonicalization in front of a classifier: ``(B, H, W, C) -> (B, num_classes)``.

  Attributes:
    group: the finite group acting on single images ``(H, W, C)`` (e.g. ``groups.rotations_ck(k, (H, W, C))``).
    classifier: the prediction network (e.g. ``ArchSpec(kind="cnn", ...).flax()``, the ensemble members' CNN).
    scorer: a network ``(N, H, W, C) -> (N, 1)`` rating orbit elements (small; any architecture: the
      construction, not the scorer, makes the model invariant).
  """
  group: groups.FiniteGroup
  classifier: nn.Module
  scorer: nn.Module

  def _scores(self, orbit: jax.Array) -> jax.Array:
    g, b = orbit.shape[:2]
    return self.scorer(orbit.reshape((g * b,) + orbit.shape[2:])).reshape(g, b).T  # (B, |G|)

  def canonical_index(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(scores (B, |G|), a* (B,))``: scores of ``rho(a) x`` for every a, and the chosen element."""
    scores = self._scores(self.group.orbit(x))
    return scores, jnp.argmax(scores, axis=1)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if tuple(x.shape[1:]) != tuple(self.group.input_shape):
      raise ValueError(f"Canonicalizer: images {x.shape[1:]} do not match the group's input shape "
                       f"{self.group.input_shape}; build the group for (H, W, C).")
    orbit = self.group.orbit(x)  # (|G|, B, H, W, C)
    scores = self._scores(orbit)
    hard = jax.nn.one_hot(jnp.argmax(scores, axis=1), self.group.order, dtype=x.dtype)
    soft = jax.nn.softmax(scores, axis=1)
    # Straight-through: the forward value is exactly ``hard`` (the parentheses matter: (soft - soft) == 0
    # exactly, while hard + soft - soft would round), gradients flow via ``soft``.
    weights = hard + (soft - jax.lax.stop_gradient(soft))  # (B, |G|)
    canonical = jnp.einsum("gb...,bg->b...", orbit, weights)  # weights are exactly one-hot: an exact copy
    return self.classifier(canonical)


class SmallScorer(nn.Module):
  """A tiny CNN scorer ``(N, H, W, C) -> (N, 1)`` for :class:`Canonicalizer` (2 convs, 2x2 pooling, linear)."""
  channels: int = 8

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = jax.nn.relu(nn.Conv(self.channels, (5, 5))(x))
    x = nn.avg_pool(x, (2, 2), (2, 2))
    x = jax.nn.relu(nn.Conv(self.channels, (3, 3))(x))
    return nn.Dense(1)(x.reshape(x.shape[0], -1))
