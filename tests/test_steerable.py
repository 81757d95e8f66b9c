"""The steerable C_k CNN: exact C4 invariance, equivariant layers, C8 / C16 error below the bilinear G-CNN's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntk import equivariant_models as em, groups, steerable as st
from tests.test_equivariant_models import _orbit_logits, _smooth_blob_images


@pytest.mark.parametrize("kernel_size", [5, 7])
def test_c4_rotated_basis_is_rot90(kernel_size):
  basis = st.rotated_basis(4, kernel_size)
  assert basis.shape[0] == 4 and basis.shape[2:] == (kernel_size, kernel_size)
  np.testing.assert_allclose(np.linalg.norm(basis[0].reshape(basis.shape[1], -1), axis=1), 1.0, rtol=1e-12)
  for r in range(4):  # rotating the continuous filter = rotating the image grid (np.rot90 direction)
    np.testing.assert_allclose(basis[r], np.rot90(basis[0], r, axes=(1, 2)), rtol=0, atol=1e-15)
  # The corners lie outside the disc; the band limit keeps only n = 0 at the centre ring.
  assert np.all(basis[:, :, 0, 0] == 0) and basis.shape[1] == 1 + 5 * (kernel_size // 2)


def test_c8_basis_contains_rot90_and_a_distinct_45_degree_element():
  # An exact 45° rotation of a pixel grid does not exist; test the sampled functions against the formula
  # at the pixels that a 90° rotation maps onto the grid (element 2 of C8 is rot90).
  basis = st.rotated_basis(8, 5)
  np.testing.assert_allclose(basis[2], np.rot90(basis[0], 1, axes=(1, 2)), rtol=0, atol=1e-15)
  assert np.abs(basis[1] - basis[0]).max() > 0.1


def test_group_conv_layer_is_equivariant(x64):
  k, c_in, c_out = 4, 2, 3
  rng = np.random.default_rng(1)
  basis = st.rotated_basis(k, 5)
  f = jnp.asarray(rng.normal(size=(2, 12, 12, k, c_in)))
  filt = st.group_conv_filters(jnp.asarray(rng.normal(size=(basis.shape[1], k, c_in, c_out))), basis)
  conv = lambda z: em.conv_same(z.reshape(2, 12, 12, k * c_in), filt).reshape(2, 12, 12, k, c_out)
  out = conv(f)
  for g in range(1, 4):
    f_g = jnp.roll(jnp.rot90(f, g, axes=(1, 2)), g, axis=3)
    np.testing.assert_allclose(conv(f_g), jnp.roll(jnp.rot90(out, g, axes=(1, 2)), g, axis=3), atol=1e-12)
  lift = st.lifting_filters(jnp.asarray(rng.normal(size=(basis.shape[1], c_in, c_out))), basis)
  img = jnp.asarray(rng.normal(size=(2, 12, 12, c_in)))
  lifted = em.conv_same(img, lift).reshape(2, 12, 12, k, c_out)
  np.testing.assert_allclose(em.conv_same(jnp.rot90(img, 1, axes=(1, 2)), lift).reshape(2, 12, 12, k, c_out),
                             jnp.roll(jnp.rot90(lifted, 1, axes=(1, 2)), 1, axis=3), atol=1e-12)


@pytest.mark.parametrize("kernel_size,spatial_pool,hidden", [(5, "mean", 0), (7, "max", 8)])
def test_c4_model_exactly_invariant_in_float64(x64, key, kernel_size, spatial_pool, hidden):
  x = jax.random.normal(key, (5, 16, 16, 2), dtype=jnp.float64)  # noise: off any data manifold
  model = st.SteerableCNN(group="C4", channels=(4, 4, 4), num_classes=3, kernel_size=kernel_size,
                          pool_after=(0, 1), spatial_pool=spatial_pool, hidden=hidden)
  params = jax.jit(model.init)(jax.random.PRNGKey(1), x)
  out = _orbit_logits(model.apply, params, groups.rotations_c4((16, 16, 2)), x)
  assert out.dtype == np.float64 and np.abs(out).max() > 1e-3
  np.testing.assert_allclose(out, np.broadcast_to(out[0], out.shape), rtol=0, atol=1e-12 * np.abs(out).max())


@pytest.mark.parametrize("k", [8, 16])
def test_interpolated_rotations_error_below_bilinear_gcnn(x64, k):
  # Same channels, kernel size and pooling; the relative logit spread over the bilinear C_k orbit of smooth
  # images inside the inscribed disc, averaged over inputs and 3 initializations.
  x = jnp.asarray(_smooth_blob_images(8, 16).astype(np.float64))
  group = groups.rotations_ck(k, (16, 16, 1))
  rel = lambda o: float(np.mean(np.abs(o - o[0]).max(axis=(0, 2)) / np.abs(o[0]).max(axis=-1)))

  def error(model):
    return np.mean([rel(_orbit_logits(model.apply, model.init(jax.random.PRNGKey(s), x), group, x))
                    for s in range(3)])

  err_steer = error(st.SteerableCNN(group=f"C{k}", channels=(4, 4), num_classes=4, pool_after=(0,)))
  err_gcnn = error(em.GroupConvCNN(k=k, channels=(4, 4), num_classes=4, pool_after=(0,)))
  print(f"C{k}: relative logit spread steerable {err_steer:.4f}, bilinear G-CNN {err_gcnn:.4f}")
  assert err_steer < 0.8 * err_gcnn, (err_steer, err_gcnn)
  assert err_steer > 1e-6  # interpolated rotations: approximate, not exact


@pytest.mark.parametrize("group", ["D4", "SO2", "C1", 1, "c 4x"])
def test_unsupported_group_names_the_fix(key, group):
  with pytest.raises(ValueError, match="use 'C4', 'C8' or 'C16'"):
    st.SteerableCNN(group=group).init(key, jnp.zeros((1, 8, 8, 1)))


def test_bad_inputs(key):
  with pytest.raises(ValueError, match="odd"):
    st.SteerableCNN(kernel_size=4).init(key, jnp.zeros((1, 8, 8, 1)))
  with pytest.raises(ValueError, match="NHWC"):
    st.SteerableCNN().init(key, jnp.zeros((1, 8, 8)))
  assert st.parse_cyclic_group("c8") == 8 and st.parse_cyclic_group(16) == 16
