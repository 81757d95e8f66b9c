"""Test harness: CPU JAX with 4 fake devices, rank promotion raises, shared PRNG-key fixtures.

``tests`` is a package (``__init__.py``) on purpose: neural-tangents' wheel installs a top-level ``tests``
package into site-packages, which would otherwise shadow ours.
"""

import os

# Must happen before jax is imported anywhere. Four fake host devices let the sharding tests compare
# one device against a 4-device Mesh; single-device code simply runs on device 0.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()

import jax  # noqa: E402
import pytest  # noqa: E402

import ntk  # noqa: E402,F401  (installs the neural-tangents compatibility layer first)

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
  """A fresh PRNG key; tests derive more with ``jax.random.split`` / ``fold_in``."""
  return jax.random.PRNGKey(0)


@pytest.fixture
def keys():
  """An endless iterator of independent keys (``next(keys)``)."""

  def _gen():
    k = jax.random.PRNGKey(42)
    while True:
      k, sub = jax.random.split(k)
      yield sub

  return _gen()


@pytest.fixture
def x64():
  """Runs the test with 64-bit JAX types (for claims that are 'exact' up to float64 round-off)."""
  with jax.enable_x64(True):
    yield
