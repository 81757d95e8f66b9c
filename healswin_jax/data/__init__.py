"""Spherical data for HEAL-SWIN: the fisheye camera model, WoodScape readers, synthetic scenes, spherical MNIST.

- :mod:`healswin_jax.data.fisheye`: WoodScape lens model and image <-> HEALPix projections.
- :mod:`healswin_jax.data.woodscape`: WoodScape / SynWoodScape readers (local copy) with cached projections.
- :mod:`healswin_jax.data.synthetic`: procedural 3-D fisheye scenes (RGB, labels, metric depth) by seed.
- :mod:`healswin_jax.data.spherical_mnist`: MNIST-5k on the sphere, non-rotated and rotated.
"""

from healswin_jax.data.fisheye import FisheyeCamera, SphereProjection, make_projection  # noqa: F401
