"""Exactness of the performance rewrites in healswin_jax.layers (float64 oracles: the plain formulations)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from healswin_jax import layers


def test_qkv_projection_equals_dense_and_split(x64, key):
  """QKVProjection == nn.Dense(3C) on the same parameters, reshaped to (..., 3, h, d) and split."""
  b, nw, ws, c, h = 2, 5, 4, 12, 3
  x = jax.random.normal(key, (b, nw, ws, c), jnp.float64)
  proj = layers.QKVProjection(c, h, dtype=jnp.float64)
  params = proj.init(jax.random.key(1), x)
  params = jax.tree_util.tree_map(lambda p: p + 0.1 * jnp.arange(p.size, dtype=p.dtype).reshape(p.shape) / p.size,
                                  params)  # non-zero bias, so its placement is checked too
  dense = nn.Dense(3 * c, dtype=jnp.float64)
  assert jax.tree_util.tree_map(jnp.shape, dense.init(jax.random.key(1), x)) == jax.tree_util.tree_map(
      jnp.shape, params)
  want = dense.apply(params, x).reshape(b, nw, ws, 3, h, c // h)
  got = proj.apply(params, x)
  for i in range(3):
    np.testing.assert_allclose(got[i], want[:, :, :, i], rtol=1e-13, atol=1e-13)
