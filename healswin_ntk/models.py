"""The small HEAL-SWINs of the sphere-equivariance study and the equivariance error of one network.

Every HEAL-SWIN layer acts per token or per window with shared weights, and the windows, patch merging and the
**grid** shift commute with the polar rotation r, so a grid-shift (or unshifted) HEAL-SWIN is *exactly*
C4-equivariant for every parameter value; the **ring** shift commutes with r only approximately, and no HEAL-SWIN
commutes with the equatorial reflection s. :func:`model_equivariance_errors` measures this per group element.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from healswin_jax.config import HealSwinConfig
from healswin_ntk.tasks import SphereTask
from ntk import groups as ntk_groups
from ntk import metrics as ntk_metrics


def small_config(task: SphereTask, shift_strategy: str = "grid", embed_dim: int = 16, **overrides
                 ) -> HealSwinConfig:
  """A small HEAL-SWIN for ``task``: patch 4 (2x2 pixels), windows of 4 tokens, one stage of a plain and a
  shifted block, Swin-V1 attention, no dropout (``overrides`` replace any field, e.g. ``depths=(2, 2)``).

  The classifier is the encoder + max pool + Linear; segmentation uses the U-Net. Swin-V1 attention (pre-norm,
  scaled dot product); the trained ensembles of ``experiments.sphere_equivariance`` add ``patch_norm=True`` and a
  second stage, the classifier that fits spherical MNIST (``healswin_jax.config.SwinConfig`` explains why V2
  needs the patch norm and why the mean pool fails on these sparse maps).
  """
  kw = dict(nside=task.nside, faces=task.faces, in_channels=1, embed_dim=embed_dim, depths=(2,),
            num_heads=(2,), patch_size=4, window_size=4, shift_strategy=shift_strategy, head=task.kind,
            num_classes=task.num_classes, drop_path_rate=0.0, mlp_ratio=2.0, attention="v1")
  kw.update(overrides)
  return HealSwinConfig(**kw)


def model_equivariance_errors(model: nn.Module, params, group: ntk_groups.FiniteGroup, x) -> np.ndarray:
  """Per-element relative equivariance error of ONE network, ``max_i ||f(g x_i) - g f(x_i)|| / ||f(x_i)||``.

  Args:
    model: a HEAL-SWIN module; params: its ``params``.
    group: the group (rho_Y trivial for classifiers, the pixel permutation for dense heads).
    x: (n, N, C) inputs.

  Returns:
    (|G|,) errors; entry 0 (the identity) is 0. For a grid-shift model the rotations r^k give float round-off
    (~1e-7 in float32, exactly 0 for dense heads, whose outputs are the same numbers permuted).
  """
  apply = jax.jit(lambda p, z: model.apply({"params": p}, z))
  orbit = group.orbit(jnp.asarray(x))
  k, n = orbit.shape[:2]
  out = np.asarray(apply(params, orbit.reshape((k * n,) + orbit.shape[2:])), np.float64)
  return ntk_metrics.orbit_equivariance_errors(out.reshape((k, n) + out.shape[1:]), group).max(axis=1)
