"""Emergent equivariance on the sphere: HEAL-SWIN deep ensembles and HEAL-SWIN's empirical NTK under the exact HEALPix
symmetry group.

Gerken & Kessel (ICML 2024, arXiv:2403.03103) show that the mean of an ensemble of networks trained with full data
augmentation over a group G is G-equivariant -- exactly in the infinite-width (NTK) limit, at all training times and
off the data manifold -- while its members are not. On HEALPix, the 90-degree rotation about the polar axis and the
equatorial reflection permute NEST pixels exactly (:mod:`healswin_jax.healpix.symmetry`), so the theorem applies to
HEAL-SWIN without interpolation error. This package (the bridge between :mod:`healswin_jax` and :mod:`ntk`,
importing both) provides:

0. The HEALPix symmetries as ``ntk.groups.FiniteGroup`` objects (:mod:`healswin_ntk.groups`).
1. **Tasks** (:mod:`healswin_ntk.tasks`) on spherical MNIST (``healswin_jax.data.spherical_mnist``, digits centred
   on the north pole): invariant classification, and an equivariant segmentation (each pixel's label is ``1 +
   digit`` where the digit has ink, 0 elsewhere), with the group acting on inputs ``(n, N, 1)`` and on per-pixel
   outputs.
2. **Vmapped HEAL-SWIN ensembles** (:mod:`healswin_ntk.ensembles`) trained by ``ntk.ensemble`` (one jitted step for
   all members) with or without full-orbit augmentation (``ntk.groups.augment_full_orbit``), and their orbit
   predictions.
3. **Equivariance metrics** of members vs ensemble means vs ensemble size (``ntk.metrics``).
4. The **empirical NTK** of HEAL-SWIN (:mod:`healswin_ntk.entk`; ``nt.empirical_ntk_fn`` /
   ``nt.monte_carlo_kernel_fn`` on the linen ``apply``), its invariance under G for single initializations and in
   Monte-Carlo expectation, and kernel regression with it on augmented data (``ntk.kernels`` solve).

The model's own symmetry (:mod:`healswin_ntk.models`) matters for the reading of the results: every HEAL-SWIN layer
acts per token or per window with shared weights, and the windows, patch merging and the **grid** shift commute with
the polar rotation r, so a grid-shift (or unshifted) HEAL-SWIN is *exactly*
C4-equivariant for every parameter value: there is nothing left to emerge under C4. The **ring** shift (a roll along
the RING spiral) commutes with r only approximately, and no HEAL-SWIN commutes with the reflection s (it maps the
in-window (row, col) layout to its transpose-complement, which the relative position bias and the patch embedding
see, and the grid shift by (-h, -h) to a shift by (+h, +h)). Those are the symmetries whose equivariance must emerge
from augmentation.

Shapes: inputs ``(n, N, C)`` with ``N = len(faces) * nside**2`` (NEST order on ``faces``); classification outputs
``(n, classes)``; segmentation outputs ``(n, N, classes)``; orbit predictions ``(M, |G|, n, ...)`` (members,
group-major orbit, inputs)."""

import ntk  # noqa: E402,F401  (installs the neural-tangents compatibility layer before neural_tangents)
