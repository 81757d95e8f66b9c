"""A steerable C_k CNN (E2CNN-style, regular representation) in JAX/Flax: the equivariant baseline of the
rotated-image experiments.

Weiler & Cesa, "General E(2)-Equivariant Steerable CNNs" (NeurIPS 2019, https://arxiv.org/abs/1911.08251),
build filters from a *steerable basis*: on a polar grid ``(r, phi)``, Gaussian rings ``tau_j(r) =
exp(-(r - r_j)^2 / (2 sigma^2))`` times circular harmonics ``cos(n phi), sin(n phi)``, band-limited per ring
(``n <= min(max_frequency, 2 j)``: a ring of radius j pixels cannot carry higher frequencies without
aliasing; the centre ring carries n = 0 only). A filter expanded in this basis is a smooth function of the
plane, and its rotation by any angle theta is again in the basis: ``tau_j(r) cos(n (phi - theta))``. This
module samples the *exactly rotated* continuous filter on the pixel grid for every element of C_k, instead
of interpolating a pixel filter (what :class:`ntk.equivariant_models.GroupConvCNN` does), so at C8 / C16
the only equivariance error left is the images' own interpolation and the pixel grid's sampling.

Feature fields use the regular representation of C_k (as E2CNN's ``regular_repr``): a feature map is ``(B,
H, W, k * C)`` with channel index ``r * C + c`` (r the group element), the group acting by rotating space
and cyclically shifting r. Layers:

- lifting (trivial -> regular): output element r uses the basis rotated by ``2 pi r / k``;
- group convolution (regular -> regular): output element r uses the rotated basis with the input's group
  axis shifted by r (``w_r[s] = rot_r(w[(s - r) mod k])``), the general solution of the regular-regular
  kernel constraint;
- pointwise ReLU with one bias per channel shared over the group (the regular representation permutes
  channels, so both commute with it), optional 2x2 average pooling;
- invariant head: max over the group, mean or max over space, then a linear (or one-hidden-layer)
  classifier (:func:`ntk.equivariant_models.invariant_head`).

Rotations follow :func:`ntk.groups.rotations_ck` (element 1 of C4 is ``np.rot90``): the image transform is
``x_g(p) = x(R p)`` with ``R p = (cos t u + sin t v, -sin t u + cos t v)`` in centred (row, column)
coordinates, i.e. ``phi(R p) = phi(p) - t`` for ``phi = atan2(v, u)``; a cross-correlation commutes with it
when its filter is transformed the same way. For k = 4 the rotated basis samples equal ``np.rot90`` of the
unrotated ones up to float round-off of cos/sin (~1e-16), so **the C4 network is invariant to float
precision**; for k = 8, 16 invariance is approximate, as for E2CNN on pixel grids.
"""

from __future__ import annotations

import functools
import re
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ntk import equivariant_models as em


def parse_cyclic_group(group: str | int) -> int:
  """The order k of a cyclic rotation group named ``"C<k>"`` (or given as the int k), k >= 2.

  Raises a ValueError naming the supported groups for anything else (dihedral groups, SO(2), ...).
  """
  if isinstance(group, (int, np.integer)) and not isinstance(group, bool):
    k = int(group)
  else:
    m = re.fullmatch(r"[Cc](\d+)", str(group).strip())
    k = int(m.group(1)) if m else -1
  if k < 2:
    raise ValueError(f"the steerable CNN supports the cyclic rotation groups C_k (k >= 2) with the regular "
                     f"representation, got group={group!r}; use 'C4', 'C8' or 'C16' (reflections / D_k and "
                     "continuous SO(2) fields are not implemented).")
  return k


@functools.lru_cache(maxsize=None)
def rotated_basis(k: int, kernel_size: int, max_frequency: int = 2, sigma: float = 0.6) -> np.ndarray:
  """Ring x circular-harmonic filter basis sampled on the ``(K, K)`` grid at all k rotations.

  Args:
    k: group order; entry r is the basis rotated by ``2 pi r / k`` (same direction as the image rotations).
    kernel_size: odd K; rings at radii ``0, 1, ..., K // 2`` pixels; pixels outside the disc of radius
      ``K / 2`` are 0 (the corners of the square would break the disc's rotation symmetry).
    max_frequency: highest angular frequency (ring j also obeys ``n <= 2 j``).
    sigma: Gaussian ring width in pixels.

  Returns:
    ``(k, B, K, K)`` float64, read-only; each basis function has unit L2 norm on the grid. Built in numpy
    once per argument tuple.
  """
  if kernel_size % 2 == 0 or kernel_size < 3:
    raise ValueError(f"kernel_size={kernel_size} must be odd and >= 3 (the filter is centred on a pixel).")
  if max_frequency < 0:
    raise ValueError(f"max_frequency={max_frequency} must be >= 0.")
  c = kernel_size // 2
  u, v = np.meshgrid(np.arange(kernel_size) - c, np.arange(kernel_size) - c, indexing="ij")
  rad = np.hypot(u, v)
  phi = np.arctan2(v, u)
  inside = rad <= kernel_size / 2.0
  centre = rad == 0
  funcs = []  # (ring radius, n, cos/sin)
  for j in range(c + 1):
    for n in range(min(max_frequency, 2 * j) + 1):
      funcs += [(j, n, np.cos)] + ([(j, n, np.sin)] if n > 0 else [])
  out = np.zeros((k, len(funcs), kernel_size, kernel_size))
  for r in range(k):
    theta = 2.0 * np.pi * r / k
    for b, (j, n, trig) in enumerate(funcs):
      ang = trig(n * (phi - theta))
      # The angle is undefined at the centre: only the isotropic (n = 0) part may be nonzero there.
      ang = np.where(centre, 1.0 if n == 0 else 0.0, ang)
      out[r, b] = np.where(inside, np.exp(-(rad - j) ** 2 / (2 * sigma ** 2)) * ang, 0.0)
  out /= np.linalg.norm(out[0].reshape(len(funcs), -1), axis=1)[None, :, None, None]
  out.setflags(write=False)
  return out


def lifting_filters(coef: jax.Array, basis: np.ndarray) -> jax.Array:
  """HWIO filter of the lifting layer: ``coef (B, C_in, C)`` -> ``(K, K, C_in, k * C)`` (channel ``r * C + c``)."""
  filt = jnp.einsum("rbhw,bic->hwirc", jnp.asarray(basis, coef.dtype), coef)
  kk, _, c_in, k, c = filt.shape
  return filt.reshape(kk, kk, c_in, k * c)


def group_conv_filters(coef: jax.Array, basis: np.ndarray) -> jax.Array:
  """HWIO filter of a regular -> regular group convolution.

  Args:
    coef: ``(B, k, C_in, C_out)``: basis coefficients over the input's group axis s.
    basis: ``(k, B, K, K)`` from :func:`rotated_basis`.

  Returns:
    ``(K, K, k * C_in, k * C_out)``: output element r uses ``rot_r(w[(s - r) mod k])`` on input element s.
  """
  k = basis.shape[0]
  if coef.shape[1] != k:
    raise ValueError(f"coefficient group axis {coef.shape[1]} != k={k}.")
  shift = (np.arange(k)[None, :] - np.arange(k)[:, None]) % k  # shift[r, s] = (s - r) mod k
  filt = jnp.einsum("rbhw,brsio->hwsiro", jnp.asarray(basis, coef.dtype), coef[:, shift])
  kk, _, _, c_in, _, c_out = filt.shape
  return filt.reshape(kk, kk, k * c_in, k * c_out)


class SteerableCNN(nn.Module):
  """A C_k-invariant steerable CNN ``(B, H, W, C) -> (B, num_classes)`` (see the module docstring).

  Attributes:
    group: ``"C<k>"`` (or the int k): the rotation group; anything else raises a ValueError.
    channels: regular fields (channels per group element) of the lifting layer and each group convolution.
    num_classes: logits.
    kernel_size: odd filter side (5 or 7 as in E2CNN's digit models).
    max_frequency: band limit of the circular harmonics.
    pool_after: indices of layers followed by 2x2 average pooling (needs even sides).
    hidden: width of a ReLU layer between the invariant features and the logits (0: linear readout).
    spatial_pool: ``"mean"`` or ``"max"`` over the final feature map.
  """
  group: str | int = "C4"
  channels: Sequence[int] = (8, 8)
  num_classes: int = 10
  kernel_size: int = 5
  max_frequency: int = 2
  pool_after: Sequence[int] = (0,)
  hidden: int = 0
  spatial_pool: str = "mean"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = parse_cyclic_group(self.group)
    if x.ndim != 4 or x.shape[1] != x.shape[2]:
      raise ValueError(f"SteerableCNN takes square NHWC images (B, H, H, C), got {x.shape}; add x[..., None].")
    basis = rotated_basis(k, self.kernel_size, self.max_frequency)
    nb = basis.shape[1]
    # He init on the coefficients: the basis functions have unit norm and are nearly orthogonal, so the
    # filter's energy per (input, output) channel pair is ~ nb * var = 2 / fan_in, fan_in = (inputs per output).
    he = lambda fan_in: nn.initializers.normal(float(np.sqrt(2.0 / fan_in)))

    def filters(i, c_in, c):
      if i == 0:
        return lifting_filters(self.param("lift", he(nb * c_in), (nb, c_in, c), x.dtype), basis)
      return group_conv_filters(self.param(f"gconv_{i}", he(nb * k * c_in), (nb, k, c_in, c), x.dtype), basis)

    x = em.regular_layers(self, x, k, self.channels, self.pool_after, filters)
    return em.invariant_head(x, k, self.spatial_pool, self.hidden, self.num_classes)
