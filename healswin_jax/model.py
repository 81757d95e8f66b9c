"""HEAL-SWIN U-Net and classifier on the HEALPix sphere (Flax linen), over the Swin core of :mod:`healswin_jax.swin`.

:func:`healpix_grid` builds the :class:`~healswin_jax.swin.SwinGrid` for HEALPix (NESTED order;
the HEAL-SWIN paper, Sec. 3) from ``healswin_jax.healpix``: P = 4^k consecutive NEST pixels per token, NEST windows,
grid / ring shifts, merging of the 4 NEST children. :func:`build_model` is the one constructor of every model
of this package from its config (HEAL-SWIN or the flat Swin baseline of :mod:`healswin_jax.flat_swin`).

Architecture (HEAL-SWIN, Carlsson, Gerken et al., CVPR 2024, arXiv:2307.07313; Swin-Unet, arXiv:2105.05537):

  pixels (B, N, C_in) -> patch embed (P NEST pixels -> E) -> dropout
  encoder: for k = 0..L-1: [merge if k > 0] -> skip_k = x -> depth_k Swin blocks   (stage L-1 = bottleneck)
  LN
  decoder: for k = L-2..0: expand (x4 tokens, /2 channels) -> Linear(concat[x, skip_k] -> C_k) -> depth_k blocks
  LN -> final expand (x P tokens) -> Linear(E -> f_out, no bias)  ->  (B, N, f_out)

The classifier is the encoder, LN, max (or mean, ``config.pool``) over tokens and Linear(-> num_classes). :class:`HealSwinBody` is the
U-Net without its head, per-pixel features (B, N, embed_dim) for a head of your own (same parameter names as
:class:`HealSwinUNet` minus ``head``).
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax

from healswin_jax import layers
from healswin_jax.config import FlatSwinConfig, HealSwinConfig
from healswin_jax.flat_swin import FlatSwinClassifier, FlatSwinUNet
from healswin_jax.healpix import shifting as hp_shifting
from healswin_jax.healpix import windows as hp_windows
from healswin_jax.swin import SwinBody, SwinClassifier, SwinGrid, SwinUNet

Array = jax.Array


def _nest_patchify(p: int) -> Callable[[Array], Array]:
  """(B, N, C) -> (B, N/P, P*C): the P = 4^k pixels of a token are consecutive NEST indices (a reshape)."""
  return lambda x: hp_windows.window_partition(x, p).reshape(x.shape[0], x.shape[1] // p, p * x.shape[2])


def _nest_unpatchify(p: int) -> Callable[[Array], Array]:
  """(B, N/P, P*C) -> (B, N, C): channel chunk j of a token becomes its NEST child pixel j."""
  return lambda x: hp_windows.window_reverse(x.reshape(-1, p, x.shape[2] // p), p, x.shape[0])


def _healpix_layout(nside: int, faces: tuple[int, ...], window_size: int, strategy: str,
                    windowed: bool) -> layers.WindowLayout:
  n = len(faces) * nside**2
  if not windowed:
    return layers.global_layout(n)
  ws, nw = window_size, n // window_size

  def partition(x):
    return hp_windows.window_partition(x, ws).reshape(x.shape[0], nw, ws, x.shape[-1])

  def reverse(w):
    return hp_windows.window_reverse(w.reshape(-1, ws, w.shape[-1]), ws, w.shape[0])

  kwargs = {}
  if strategy != "none":
    tables = hp_shifting.build_shift(nside, faces, ws, strategy)
    kwargs = dict(shift=functools.partial(hp_shifting.apply_shift, tables=tables),
                  unshift=functools.partial(hp_shifting.undo_shift, tables=tables),
                  shift_labels=tables.window_labels if tables.needs_mask else None)
  rel_index, table_size = layers.relative_position_index(hp_windows.window_rc(ws))
  return layers.WindowLayout(num_tokens=n, window_size=ws, partition=partition, reverse=reverse,
                             rel_index=rel_index, table_size=table_size, **kwargs)


@functools.lru_cache(maxsize=32)
def healpix_grid(config: HealSwinConfig) -> SwinGrid:
  """The HEALPix :class:`SwinGrid` of a config (cached; the shift tables are cached per stage geometry)."""
  plans = config.stage_plan()
  layouts = tuple(_healpix_layout(p.nside, config.faces, config.window_size, config.shift_strategy, p.windowed)
                  for p in plans)
  merges = tuple(hp_windows.merge_children for _ in plans[1:])
  unmerges = tuple(hp_windows.expand_children for _ in plans[1:])
  return SwinGrid(input_shape=(config.num_pixels,), patch_size=config.patch_size,
                  patchify=_nest_patchify(config.patch_size), unpatchify=_nest_unpatchify(config.patch_size),
                  layouts=layouts, merge=merges, unmerge=unmerges)


class HealSwinUNet(SwinUNet):
  """HEAL-SWIN U-Net: (B, N, C_in) NEST maps on ``config.faces`` -> (B, N, f_out) per-pixel outputs.

  Example::

    cfg = HealSwinConfig(nside=16, embed_dim=48, depths=(2, 2), num_heads=(2, 4), window_size=4)
    model = HealSwinUNet(cfg)
    params = model.init(jax.random.key(0), jnp.zeros((1, cfg.num_pixels, 3)))["params"]
    logits = model.apply({"params": params}, maps)          # (B, 12 * 16**2, 10)
  """
  config: HealSwinConfig

  def make_grid(self) -> SwinGrid:
    return healpix_grid(self.config)


class HealSwinBody(SwinBody):
  """HEAL-SWIN U-Net body: (B, N, C_in) NEST maps -> (B, N, embed_dim) float32 per-pixel features.

  Example (a custom head, trained like any Flax module, e.g. with :func:`healswin_jax.fit.fit`)::

    class MyModel(nn.Module):
      cfg: HealSwinConfig

      @nn.compact
      def __call__(self, x, deterministic=True):
        h = HealSwinBody(self.cfg, name="body")(x, deterministic)    # (B, N, E)
        return nn.Dense(2)(nn.gelu(nn.Dense(16)(h)))                # (B, N, 2)
  """
  config: HealSwinConfig

  def make_grid(self) -> SwinGrid:
    return healpix_grid(self.config)


class HealSwinClassifier(SwinClassifier):
  """HEAL-SWIN encoder + max (or mean) pool + Linear: (B, N, C_in) -> (B, num_classes)."""
  config: HealSwinConfig

  def make_grid(self) -> SwinGrid:
    return healpix_grid(self.config)


def build_model(config: HealSwinConfig | FlatSwinConfig) -> nn.Module:
  """The model of a config: HEAL-SWIN (:class:`HealSwinClassifier` / :class:`HealSwinUNet`) for a
  :class:`HealSwinConfig`, the flat Swin (``FlatSwinClassifier`` / ``FlatSwinUNet``) for a
  :class:`FlatSwinConfig`; the classifier for ``head="classification"``, else the U-Net."""
  if isinstance(config, HealSwinConfig):
    return HealSwinClassifier(config) if config.head == "classification" else HealSwinUNet(config)
  if isinstance(config, FlatSwinConfig):
    return FlatSwinClassifier(config) if config.head == "classification" else FlatSwinUNet(config)
  raise TypeError(f"build_model takes a HealSwinConfig or FlatSwinConfig, got {type(config).__name__}.")
