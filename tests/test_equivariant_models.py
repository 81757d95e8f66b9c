"""The group-convolution CNN and canonicalization: exact C4 invariance, equivariant layers, training signal."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntk import architectures, equivariant_models as em, groups


def _orbit_logits(apply, params, group, x):
  out = jax.jit(apply)(params, group.orbit(x).reshape((-1,) + x.shape[1:]))
  return np.asarray(out).reshape(group.order, x.shape[0], -1)


def test_rotate_filters_matches_image_rotation():
  w = np.random.default_rng(0).normal(size=(5, 5, 2, 3))
  rot = np.asarray(em.rotate_filters(jnp.asarray(w, jnp.float32), 4))
  for a in range(4):
    np.testing.assert_array_equal(rot[a], np.rot90(w, a, axes=(0, 1)).astype(np.float32))


def test_group_conv_layer_is_equivariant(x64):
  # Lifted feature maps f(., s); rotating them by g in space and shifting the group axis by g must rotate
  # and shift the group convolution's output the same way (checked directly, without pooling).
  k, c_in, c_out = 4, 2, 3
  rng = np.random.default_rng(1)
  f = jnp.asarray(rng.normal(size=(2, 12, 12, k, c_in)))
  w = jnp.asarray(rng.normal(size=(5, 5, k, c_in, c_out)))
  filt = em.group_conv_filters(w, k)
  conv = lambda z: em.conv_same(z.reshape(2, 12, 12, k * c_in), filt).reshape(2, 12, 12, k, c_out)
  out = conv(f)
  for g in range(1, 4):
    f_g = jnp.roll(jnp.rot90(f, g, axes=(1, 2)), g, axis=3)
    expected = jnp.roll(jnp.rot90(out, g, axes=(1, 2)), g, axis=3)
    np.testing.assert_allclose(conv(f_g), expected, atol=1e-12)


@pytest.mark.parametrize("spatial_pool,hidden", [("mean", 0), ("max", 8)])
def test_gcnn_c4_exactly_invariant_in_float64(x64, key, spatial_pool, hidden):
  x = jax.random.normal(key, (5, 16, 16, 2), dtype=jnp.float64)  # noise: off any data manifold
  model = em.GroupConvCNN(k=4, channels=(4, 4, 4), num_classes=3, pool_after=(0, 1), spatial_pool=spatial_pool,
                          hidden=hidden)
  params = jax.jit(model.init)(jax.random.PRNGKey(1), x)
  out = _orbit_logits(model.apply, params, groups.rotations_c4((16, 16, 2)), x)
  assert out.dtype == np.float64 and np.abs(out).max() > 1e-3
  np.testing.assert_allclose(out, np.broadcast_to(out[0], out.shape), rtol=0, atol=1e-12 * np.abs(out).max())


def _smooth_blob_images(n, size, seed=0):
  """Sums of 3 wide Gaussian bumps near the centre: smooth (bilinear rotation is accurate) and inside the
  inscribed disk (rotation loses nothing at the corners)."""
  rng = np.random.default_rng(seed)
  ii, jj = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  c = (size - 1) / 2
  centre, amp = rng.uniform(-3, 3, size=(n, 3, 2)), rng.normal(size=(n, 3))
  d2 = (ii - c - centre[..., 0, None, None]) ** 2 + (jj - c - centre[..., 1, None, None]) ** 2
  return (amp[..., None, None] * np.exp(-d2 / 8.0)).sum(1)[..., None].astype(np.float32)


def test_gcnn_c4_float32_and_c8_approximate():
  x = jnp.asarray(_smooth_blob_images(4, 16))
  c4 = em.GroupConvCNN(k=4, channels=(4, 4), num_classes=4)
  out4 = _orbit_logits(c4.apply, jax.jit(c4.init)(jax.random.PRNGKey(2), x), groups.rotations_c4((16, 16, 1)), x)
  assert np.abs(out4 - out4[0]).max() <= 1e-5 * np.abs(out4).max()
  # C8 with interpolated filters: not exact, but far more invariant than an ordinary CNN (measured: ~0.05
  # vs ~1.0-1.5 relative logit spread over the C8 orbit).
  g8 = groups.rotations_ck(8, (16, 16, 1))
  c8 = em.GroupConvCNN(k=8, channels=(4, 4), num_classes=4)
  out8 = _orbit_logits(c8.apply, jax.jit(c8.init)(jax.random.PRNGKey(3), x), g8, x)
  cnn = architectures.ArchSpec(kind="cnn", width=16, depth=2, out_dim=4).flax()
  outc = _orbit_logits(cnn.apply, jax.jit(cnn.init)(jax.random.PRNGKey(3), x), g8, x)
  rel = lambda o: np.abs(o - o[0]).max() / np.abs(o[0]).max()
  assert rel(out8) < 0.15 and rel(out8) < 0.25 * rel(outc), (rel(out8), rel(outc))


def test_gcnn_bad_inputs(key):
  with pytest.raises(ValueError, match="NHWC"):
    em.GroupConvCNN().init(key, jnp.zeros((2, 16, 16)))
  with pytest.raises(ValueError, match="even spatial sides"):
    em.GroupConvCNN(pool_after=(0,)).init(key, jnp.zeros((1, 15, 15, 1)))
  with pytest.raises(ValueError, match="odd"):
    em.GroupConvCNN(kernel_size=4).init(key, jnp.zeros((1, 16, 16, 1)))
  with pytest.raises(ValueError, match="spatial_pool"):
    em.GroupConvCNN(spatial_pool="median").init(key, jnp.zeros((1, 16, 16, 1)))


def test_canonicalizer_is_bitwise_invariant_for_c4_and_trains_its_scorer(key):
  group = groups.rotations_c4((12, 12, 1))
  classifier = architectures.ArchSpec(kind="cnn", width=4, depth=1, out_dim=5).flax()
  model = em.Canonicalizer(group, classifier, em.SmallScorer(channels=4))
  x = jax.random.uniform(key, (7, 12, 12, 1))
  params = jax.jit(model.init)(jax.random.PRNGKey(1), x)
  out = _orbit_logits(model.apply, params, group, x)
  np.testing.assert_array_equal(out, np.broadcast_to(out[0], out.shape))  # exactly, in float32
  # The canonical element moves with the input: a*(rho(b) x) = a*(x) b^{-1}.
  index = jax.jit(lambda p, z: model.apply(p, z, method=model.canonical_index)[1])
  a0 = np.asarray(index(params, x))
  for b in range(4):
    ab = np.asarray(index(params, group.act_x(b, x)))
    np.testing.assert_array_equal([group.compose(int(a), b) for a in ab], a0)
  # The forward pass equals the classifier on the chosen orbit element ...
  chosen = np.stack([group.act_x(int(a), np.asarray(x[i:i + 1]))[0] for i, a in enumerate(a0)])
  direct = classifier.apply({"params": params["params"]["classifier"]}, chosen)
  np.testing.assert_allclose(model.apply(params, x), direct, rtol=1e-6, atol=1e-6)
  # ... and the straight-through estimator gives the scorer a gradient.
  grads = jax.grad(lambda p: jnp.sum(model.apply(p, x) ** 2))(params)
  assert float(jnp.abs(grads["params"]["scorer"]["Conv_0"]["kernel"]).sum()) > 0


def test_canonicalizer_shape_mismatch(key):
  model = em.Canonicalizer(groups.rotations_c4((8, 8, 1)), em.SmallScorer(), em.SmallScorer())
  with pytest.raises(ValueError, match="group's input shape"):
    model.init(key, jnp.zeros((1, 8, 8, 3)))
