"""The geometry-agnostic Swin core (Flax linen): encoder, U-Net and classifier over a :class:`SwinGrid`.

The core (:class:`SwinEncoder`, :class:`SwinUNet`, :class:`SwinClassifier`) only sees a :class:`SwinGrid`: the
pure functions and numpy tables that say how pixels become tokens, how each stage is windowed and shifted, and
how 4 tokens merge into one. :func:`healswin_jax.model.healpix_grid` builds it for HEALPix;
:func:`healswin_jax.flat_swin.flat_grid` for H x W images. Both models therefore run the very same blocks.
A subclass supplies ``make_grid()``.

Architecture (Swin-Unet, arXiv:2105.05537, as used by HEAL-SWIN, arXiv:2307.07313):

  pixels (B, *input_shape, C_in) -> patch embed (P pixels -> E) -> dropout
  encoder: for k = 0..L-1: [merge if k > 0] -> skip_k = x -> depth_k Swin blocks   (stage L-1 = bottleneck)
  LN
  decoder: for k = L-2..0: expand (x4 tokens, /2 channels) -> Linear(concat[x, skip_k] -> C_k) -> depth_k blocks
  LN -> final expand (x P tokens) -> Linear(E -> f_out, no bias)  ->  (B, *input_shape, f_out)

The classifier is the encoder, LN, max (or mean, ``config.pool``) over tokens and Linear(-> num_classes).

Composition: :class:`SwinBody` is the U-Net without its head (everything up to the final expand), returning
per-pixel features (B, *input_shape, embed_dim); put any head on it as a separate module, e.g.
``nn.Dense(3)(HealSwinBody(cfg, name="body")(x, deterministic))``. :class:`SwinUNet` is that body with the
1x1 ``Dense(out_dim, use_bias=False)`` head; both create the same parameter names (one definition,
``_unet_features``).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from healswin_jax import layers
from healswin_jax.config import SwinConfig

Array = jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class SwinGrid:
  """Everything geometry-specific a Swin U-Net needs (pure functions and numpy tables, no parameters).

  Attributes:
    input_shape: spatial shape of the input without batch and channels: (N,) for HEALPix, (H, W) for images.
    patch_size: P pixels per token.
    patchify: (B, *input_shape, C) -> (B, N_0, P*C), the pixels of each token concatenated.
    unpatchify: (B, N_0, P*C) -> (B, *input_shape, C), the inverse.
    layouts: one :class:`layers.WindowLayout` per stage.
    merge: L-1 functions (B, N_k, C) -> (B, N_{k+1}, 4C), the 4 children of each token of stage k+1.
    unmerge: their inverses (B, N_{k+1}, 4C) -> (B, N_k, C).
  """
  input_shape: tuple[int, ...]
  patch_size: int
  patchify: Callable[[Array], Array]
  unpatchify: Callable[[Array], Array]
  layouts: tuple[layers.WindowLayout, ...]
  merge: tuple[Callable[[Array], Array], ...]
  unmerge: tuple[Callable[[Array], Array], ...]


def _dtype(config: SwinConfig):
  return jnp.dtype(config.dtype)


def check_input(x: Array, config: SwinConfig, grid: SwinGrid, name: str) -> None:
  """Raises a ValueError naming ``name`` unless ``x`` is a batch (B, *grid.input_shape, config.in_channels)."""
  want = grid.input_shape + (config.in_channels,)
  if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
    raise ValueError(f"{name} expects input (B, {', '.join(map(str, want))}), got {tuple(x.shape)}. "
                     f"Fix: pass a batch of maps matching the config (in_channels={config.in_channels}).")
  if x.shape[0] == 0:
    raise ValueError(f"{name} got an empty batch (B = 0, input {tuple(x.shape)}). Fix: pass at least one example "
                     "(check batch_size / eval_batch_size and the number of examples).")


class SwinEncoder(nn.Module):
  """Patch embedding and the encoder stages; returns the normed bottleneck and the skips.

  Returns:
    ``(x, skips)``: x (B, N_{L-1}, E*2^(L-1)) after the bottleneck LayerNorm; skips[k] (B, N_k, E*2^k) is the
    input of stage k.
  """
  config: SwinConfig
  grid: SwinGrid
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array):
    cfg, grid, dtype = self.config, self.grid, _dtype(self.config)
    x = layers.PatchEmbed(cfg.embed_dim, grid.patchify, dtype=dtype, name="patch_embed")(x.astype(dtype))
    if cfg.patch_norm:
      x = layers.layer_norm("patch_norm")(x)
    x = nn.Dropout(cfg.drop_rate, deterministic=self.deterministic)(x)
    rates = cfg.drop_path_rates()
    skips = []
    for k in range(cfg.num_stages):
      if k > 0:
        x = layers.PatchMerging(grid.merge[k - 1], dtype=dtype, name=f"merge{k}")(x)
      skips.append(x)
      x = _stage(cfg, grid, k, rates[k], self.deterministic, name=f"stage{k}")(x)
    x = layers.layer_norm("norm")(x)
    return x, skips


def _stage(cfg: SwinConfig, grid: SwinGrid, k: int, drop_paths, deterministic: bool, name: str):
  return layers.SwinStage(cfg.stage_dim(k), cfg.depths[k], cfg.num_heads[k], grid.layouts[k], drop_paths,
                          mlp_ratio=cfg.mlp_ratio, attention=cfg.attention, rel_pos_bias=cfg.rel_pos_bias,
                          drop=cfg.drop_rate, attn_drop=cfg.attn_drop_rate, dtype=_dtype(cfg), remat=cfg.remat,
                          deterministic=deterministic, name=name)


def _unet_features(cfg: SwinConfig, grid: SwinGrid, x: Array, deterministic: bool, name: str) -> Array:
  """Encoder, decoder and final expand, created as submodules of the calling compact module.

  (B, *input_shape, C_in) -> (B, *input_shape, embed_dim) float32. One definition for :class:`SwinUNet` and
  :class:`SwinBody`, so both have the same parameter names.
  """
  dtype = _dtype(cfg)
  check_input(x, cfg, grid, name)
  x, skips = SwinEncoder(cfg, grid, deterministic, name="encoder")(x)
  rates = cfg.drop_path_rates()
  for k in range(cfg.num_stages - 2, -1, -1):
    x = layers.PatchExpand(grid.unmerge[k], dtype=dtype, name=f"expand{k + 1}")(x)
    x = jnp.concatenate([x, skips[k]], axis=-1)
    x = nn.Dense(cfg.stage_dim(k), dtype=dtype, kernel_init=layers.dense_init, name=f"concat_proj{k}")(x)
    x = _stage(cfg, grid, k, rates[k], deterministic, name=f"dec_stage{k}")(x)
  x = layers.layer_norm("dec_norm")(x)
  x = layers.FinalPatchExpand(grid.unpatchify, factor=grid.patch_size, out_dim=cfg.embed_dim, dtype=dtype,
                              name="final_expand")(x)
  return x.astype(jnp.float32)


class SwinBody(nn.Module):
  """The Swin U-Net without its head: per-pixel features for any head (:class:`SwinUNet` = body + Dense).

  Subclasses implement :meth:`make_grid`. Call with ``deterministic=False`` and an rng ``'dropout'`` for
  training.
  """
  config: SwinConfig

  def make_grid(self) -> SwinGrid:
    raise NotImplementedError

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    """(B, *input_shape, C_in) -> (B, *input_shape, embed_dim) float32 features (the input is checked)."""
    return _unet_features(self.config, self.make_grid(), x, deterministic, type(self).__name__)


class SwinUNet(nn.Module):
  """Swin U-Net for dense outputs (segmentation logits or depth) on any :class:`SwinGrid`.

  Subclasses implement :meth:`make_grid` from their config. Call with ``deterministic=False`` and an rng
  ``'dropout'`` for training.
  """
  config: SwinConfig

  def make_grid(self) -> SwinGrid:
    raise NotImplementedError

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    """(B, *input_shape, C_in) -> (B, *input_shape, f_out) float32."""
    cfg = self.config
    if cfg.head == "classification":
      raise ValueError(f"{type(self).__name__} is a dense model; head='classification' needs the classifier "
                       f"(use build_model(config) or the *Classifier class).")
    x = _unet_features(cfg, self.make_grid(), x, deterministic, type(self).__name__)
    # The 1x1 output head (the original's Conv1d without bias) runs in float32.
    return nn.Dense(cfg.out_dim, use_bias=False, kernel_init=layers.dense_init, name="head")(x)


class SwinClassifier(nn.Module):
  """Encoder only: bottleneck LN -> max (``pool="max"``) or mean over tokens -> Linear(num_classes). Output (B, num_classes) float32."""
  config: SwinConfig

  def make_grid(self) -> SwinGrid:
    raise NotImplementedError

  @nn.compact
  def __call__(self, x: Array, deterministic: bool = True) -> Array:
    cfg, grid = self.config, self.make_grid()
    if cfg.head != "classification":
      raise ValueError(f"{type(self).__name__} needs head='classification', got {cfg.head!r}.")
    check_input(x, cfg, grid, type(self).__name__)
    x, _ = SwinEncoder(cfg, grid, deterministic, name="encoder")(x)
    x = x.astype(jnp.float32)
    x = jnp.max(x, axis=1) if cfg.pool == "max" else jnp.mean(x, axis=1)
    return nn.Dense(cfg.num_classes, kernel_init=layers.dense_init, name="head")(x)
