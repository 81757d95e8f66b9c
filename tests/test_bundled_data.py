import numpy as np
import pytest

from infra import bundled_data


def test_mnist5k_is_real_balanced_and_deterministic():
  x, y = bundled_data.load_mnist5k()
  assert x.shape == (5000, 28, 28) and x.dtype == np.float32
  assert np.bincount(y).tolist() == [500] * 10
  assert 0.0 <= x.min() and x.max() == 1.0
  # Real digits: ~19% of MNIST pixels are ink, and the border is blank.
  assert 0.1 < (x > 0.5).mean() < 0.3
  assert x[:, 0, :].max() < 0.5
  a, b = bundled_data.load_mnist5k(64, seed=3), bundled_data.load_mnist5k(64, seed=3)
  np.testing.assert_array_equal(a[0], b[0])
  assert np.bincount(a[1]).min() >= 6


def test_mnist5k_bad_n():
  with pytest.raises(ValueError, match="must be in 1..5000"):
    bundled_data.load_mnist5k(0)


def test_digits8():
  x, y = bundled_data.load_digits8()
  assert x.shape == (1797, 8, 8) and x.max() == 1.0 and set(y.tolist()) == set(range(10))
