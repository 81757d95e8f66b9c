"""Metrics for ensembles and their infinite-width limits.

Equivariance (Gerken & Kessel, ICML 2024, arXiv:2403.03103): a predictor f is G-equivariant when
``f(rho_X(g) x) = rho_Y(g) f(x)`` for all g and x (invariant when rho_Y is trivial).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ntk.groups import FiniteGroup


def orbit_equivariance_errors(f_orbit, group: FiniteGroup, eps: float = 1e-12) -> np.ndarray:
  """Relative equivariance errors from predictions on a group-major orbit.

  Args:
    f_orbit: (order, n, *output_shape) predictions ``f(rho_X(g_a) x_i)``; element 0 is the identity, so
      ``f_orbit[0]`` is ``f(x)``.
    group: the group (its rho_Y maps ``f(x)`` to the expected ``rho_Y(g) f(x)``).
    eps: floor for ``||f(x)||`` (a constant-zero predictor, e.g. the ensemble mean at t = 0, has error 0).

  Returns:
    (order, n) array ``||f(rho_X(g)x_i) − rho_Y(g) f(x_i)|| / max(||f(x_i)||, eps)`` (norms over all
    output axes).
  """
  f_orbit = np.asarray(f_orbit)
  if f_orbit.ndim < 2 or f_orbit.shape[0] != group.order:
    raise ValueError(f"f_orbit of shape {f_orbit.shape} must be (order={group.order}, n, *output_shape).")
  k, n = f_orbit.shape[:2]
  fx = f_orbit[0]
  diff = (f_orbit - np.asarray(group.orbit_y(fx))).reshape(k, n, -1)  # orbit_y checks the output shape
  num = np.sqrt(np.sum(diff**2, axis=-1))
  den = np.maximum(np.sqrt(np.sum(fx.reshape(1, n, -1)**2, axis=-1)), eps)
  return num / den


def equivariance_error(f: Callable, group: FiniteGroup, x, eps: float = 1e-12) -> float:
  """Max over g and inputs of ``||f(rho_X(g) x) − rho_Y(g) f(x)|| / ||f(x)||``.

  Args:
    f: any predictor mapping a batch (B, *input_shape) to a batch (B, *output_shape); it is called once,
      on the whole group-major orbit (order*n rows).
    group: the group.
    x: (n, *input_shape) inputs (on- or off-manifold).
    eps: floor for ``||f(x)||``.

  Returns:
    The maximal relative equivariance error (0 for an exactly equivariant predictor).
  """
  orbit = group.orbit(x)
  k, n = orbit.shape[0], orbit.shape[1]
  out = np.asarray(f(orbit.reshape((k * n,) + tuple(orbit.shape[2:]))))
  return float(np.max(orbit_equivariance_errors(out.reshape((k, n) + out.shape[1:]), group, eps)))
