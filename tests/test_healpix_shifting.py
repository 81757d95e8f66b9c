"""Shifted HEALPix windows, with healpy as the oracle."""

import healpy as hp
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from healswin_jax import layers
from healswin_jax.healpix import shifting
from healswin_jax.healpix import symmetry
from healswin_jax.healpix import topology

FACE_SETS = [None, tuple(range(8)), (0, 4, 8), (5,), (8, 9, 10, 11), (1, 2, 3, 5, 9, 10)]
GEOMETRIES = [(4, 4), (8, 16), (16, 16), (16, 64), (4, 16)]


def _nonneighbour_count(tables):
  a, b = shifting.same_label_adjacent_sources(tables)
  nest = topology.token_to_nest(tables.nside, tables.faces)
  nbs = hp.get_all_neighbours(tables.nside, nest[a], nest=True)
  return int(np.count_nonzero(~(nbs == nest[b][None]).any(axis=0))), len(a)


def _far_attending_pairs(tables, labels=None):
  nest = topology.token_to_nest(tables.nside, tables.faces)
  return shifting.far_attending_pairs(tables, np.stack(hp.pix2vec(tables.nside, nest, nest=True), axis=-1), labels)


@pytest.mark.parametrize("strategy", shifting.STRATEGIES)
@pytest.mark.parametrize("faces", FACE_SETS)
@pytest.mark.parametrize("nside,ws", GEOMETRIES)
def test_shift_is_a_permutation_and_roundtrips_bit_exactly(strategy, faces, nside, ws):
  t = shifting.build_shift(nside, faces, ws, strategy)
  n = len(topology.check_faces(faces)) * nside**2
  assert t.src.shape == t.inv.shape == t.labels.shape == (n,)
  assert t.src.dtype == t.inv.dtype == t.labels.dtype == np.int32
  np.testing.assert_array_equal(np.sort(t.src), np.arange(n))
  np.testing.assert_array_equal(t.inv, np.argsort(t.src))
  x = np.random.default_rng(0).normal(size=(2, n, 3)).astype(np.float32)
  shifted = shifting.apply_shift(jnp.asarray(x), t)
  np.testing.assert_array_equal(shifted, x[:, t.src])
  np.testing.assert_array_equal(shifting.undo_shift(shifted, t), x)


@pytest.mark.parametrize("faces", FACE_SETS)
@pytest.mark.parametrize("nside,ws", GEOMETRIES)
def test_grid_same_label_adjacent_slots_hold_sky_neighbours(faces, nside, ws):
  bad, total = _nonneighbour_count(shifting.build_shift(nside, faces, ws, "grid"))
  assert total > 0 and bad == 0


@pytest.mark.parametrize("strategy", ["grid", "ring"])
@pytest.mark.parametrize("faces", FACE_SETS + [(0, 1, 2, 3, 8, 9, 10, 11)])
def test_no_attending_pair_is_farther_apart_than_two_window_diameters(strategy, faces):
  for nside in (8, 16, 32):
    for ws in (4, 16, 64):
      t = shifting.build_shift(nside, faces, ws, strategy)
      assert _far_attending_pairs(t) == 0, (nside, ws)


def test_far_pair_check_catches_the_unmasked_pole_wrap_and_one_region_per_face():
  # The plain roll without its mask: the spiral's last pixels (south pole) attend in the first windows (north pole),
  # 174-180 degrees apart, in 3 / 30 / 252 pairs at windows of 4 / 16 / 64 tokens.
  for ws, pairs in ((4, 3), (16, 30), (64, 252)):
    t = shifting.build_shift(16, None, ws, "ring")
    assert _far_attending_pairs(t, np.zeros_like(t.labels)) == pairs
  # On a subset, one region per face for all back-filled slots (1 + face, the original's rule) is not enough:
  # slots filled across different missing faces or from different faces hold distant sky.
  t = shifting.build_shift(16, (0, 4, 8), 16, "ring")
  assert _far_attending_pairs(t, np.where(t.labels > 0, 1 + (t.labels - 1) % 12, 0)) > 0


def test_ring_nonneighbour_fraction_is_small_but_nonzero_on_the_full_sphere():
  bad, total = _nonneighbour_count(shifting.build_shift(16, None, 16, "ring"))
  assert 0.01 < bad / total < 0.08  # approximate by construction (spec: 4.6-5.6 %)


def test_grid_moves_follow_healpy_south_steps_and_orphans_wrap_inside_one_face():
  nside, ws, h = 16, 16, 2
  for faces in (None, tuple(range(8)), (0, 4, 8)):
    t = shifting.build_shift(nside, faces, ws, "grid")
    nest = topology.token_to_nest(nside, faces)
    f, x, y = topology.token_fxy(nside, faces)
    moved = t.labels == 0
    p = nest[moved]
    for _ in range(h):  # healpy's "S" neighbour is (x - 1, y - 1); kept moves never turn the frame
      p = hp.get_all_neighbours(nside, p, nest=True)[7]
    np.testing.assert_array_equal(nest[t.src[moved]], p)
    sf, sx, sy = f[t.src], x[t.src], y[t.src]
    orphan = ~moved
    np.testing.assert_array_equal(sx[orphan], (x[orphan] - h) % nside)
    np.testing.assert_array_equal(sy[orphan], (y[orphan] - h) % nside)
    piece = np.where(x < h, np.where(y < h, 3, 1), np.where(y < h, 2, 0))  # x < h strip, y < h strip, corner
    assert np.all(piece[orphan] > 0) and np.all(np.isin(t.labels[orphan], (1, 2, 3)))
    for face in set(f[orphan].tolist()):
      for kind in (1, 2, 3):
        sel = orphan & (f == face) & (piece == kind)
        assert len(set(sf[sel].tolist())) <= 1  # a piece comes from one face
    # a corner either has its own region (3) or joins the strip it continues (1 or 2)
    assert np.all(t.labels[orphan & (piece != 3)] == piece[orphan & (piece != 3)])
  # 8 faces: the equatorial faces' southern strips come from the polar faces above them and their corner from
  # the next equatorial face's northern corner, in the x < h strip's region, as in the original
  t = shifting.build_shift(nside, tuple(range(8)), ws, "grid")
  f, x, y = topology.token_fxy(nside, tuple(range(8)))
  for c in range(4):
    strip_x, strip_y, corner = (f == 4 + c) & (x < h) & (y >= h), (f == 4 + c) & (y < h) & (x >= h), (
        f == 4 + c) & (x < h) & (y < h)
    assert np.all(f[t.src[strip_x | strip_y]] == c) and np.all(f[t.src[corner]] == 4 + (c + 1) % 4)
    assert np.all(t.labels[strip_x | corner] == 1) and np.all(t.labels[strip_y] == 2)
    polar_corner = (f == c) & (x < h) & (y < h)  # its own pole corner, alone
    assert np.all(t.src[polar_corner] // nside**2 == c) and np.all(t.labels[polar_corner] == 3)


@pytest.mark.parametrize("nside,ws", [(8, 4), (16, 16), (16, 64)])
def test_interior_translation(nside, ws):
  h = int(np.sqrt(ws)) // 2
  f, x, y = topology.token_fxy(nside)
  grid, ring = shifting.build_shift(nside, None, ws, "grid"), shifting.build_shift(nside, None, ws, "ring")
  interior = (x >= h) & (y >= h) & (x < nside - h) & (y < nside - h)
  # The spiral starts each ring at phi = 0, inside equatorial face 4: there the ring roll continues from the end
  # of the previous ring, so the ring translation holds in every face interior except on that seam.
  nest = topology.token_to_nest(nside)
  seam = hp.pix2ring(nside, hp.nest2ring(nside, nest[ring.src])) != hp.pix2ring(nside, hp.nest2ring(nside, nest))
  assert np.all(f[seam & interior] == 4) and np.count_nonzero(seam & interior) <= 2 * h * nside
  for t, (dx, dy), sel in ((grid, (-h, -h), interior), (ring, (-h, h), interior & ~seam)):
    s = t.src[sel]
    np.testing.assert_array_equal(f[s], f[sel])
    np.testing.assert_array_equal(x[s], x[sel] + dx)
    np.testing.assert_array_equal(y[s], y[sel] + dy)


@pytest.mark.parametrize("nside,ws", [(4, 4), (16, 16), (16, 64)])
def test_ring_is_the_roll_along_the_ring_spiral(nside, ws):
  h = int(np.sqrt(ws)) // 2
  npix = 12 * nside**2
  t = shifting.build_shift(nside, None, ws, "ring")
  expected = hp.ring2nest(nside, (hp.nest2ring(nside, np.arange(npix)) - h) % npix)
  np.testing.assert_array_equal(t.src, expected)
  # the roll carries the spiral's last h pixels (south pole) to its first h (north pole): exactly those are masked
  wrapped = hp.nest2ring(nside, np.arange(npix)) < h
  np.testing.assert_array_equal(t.labels != 0, wrapped)
  assert t.needs_mask
  for faces in FACE_SETS[1:] + [(0, 4, 8, 9)]:
    t = shifting.build_shift(nside, faces, ws, "ring")
    nest = topology.token_to_nest(nside, faces)
    true_src = hp.ring2nest(nside, (hp.nest2ring(nside, nest) - h) % npix)
    outside = ~np.isin(true_src, nest)
    wrapped = hp.nest2ring(nside, nest) < h
    masked = outside | wrapped
    np.testing.assert_array_equal(t.labels != 0, masked)  # exactly the out-of-domain sources and the pole wrap
    np.testing.assert_array_equal(nest[t.src[~outside]], true_src[~outside])
    np.testing.assert_array_equal((t.labels[masked] - 1) % 12, nest[masked] // nside**2)  # 1 + face + 12 k


@pytest.mark.parametrize("faces", [tuple(range(8)), (4, 5, 6, 7), (1, 2, 3, 5, 9, 10), (5,)])
def test_ring_back_fill_collapses_the_missing_faces_like_the_original(faces):
  # Orphans whose content would come out of a missing face m hold, in token order, the used tokens whose content
  # would roll into m (token order too); what is left over (and the spiral's south-to-north wrap) pairs up in
  # token order at the end. On 8 faces that is the original's table {4: 7, 5: 4, 6: 5, 7: 6}.
  nside, ws, h = 16, 16, 2
  npix = 12 * nside**2
  t = shifting.build_shift(nside, faces, ws, "ring")
  nest = topology.token_to_nest(nside, faces)
  ring = hp.nest2ring(nside, nest)
  via_src = np.where(ring >= h, hp.ring2nest(nside, (ring - h) % npix) // nside**2, -1)
  via_dst = np.where(ring + h < npix, hp.ring2nest(nside, (ring + h) % npix) // nside**2, -1)
  orphans = np.nonzero(~np.isin(hp.ring2nest(nside, (ring - h) % npix), nest))[0]
  lost = np.setdiff1d(np.arange(len(nest)), np.delete(t.src, orphans))
  paired = 0
  for m in set(via_src[orphans].tolist()) - {-1}:
    d, s = orphans[via_src[orphans] == m], lost[via_dst[lost] == m]
    k = min(len(d), len(s))
    np.testing.assert_array_equal(t.src[d[:k]], s[:k])
    paired += k
  if faces in ((0, 1, 2, 3, 4, 5, 6, 7), (4, 5, 6, 7)):  # rows of faces: most content crosses one missing face
    assert paired >= 0.9 * len(orphans)
  if faces == tuple(range(8)):
    f = nest // nside**2
    for g in range(4, 8):
      d, s = orphans[f[orphans] == g], lost[f[lost] == 4 + (g - 1) % 4]
      np.testing.assert_array_equal(t.src[d], s[:len(d)])
    assert np.all(f[orphans[f[orphans] < 4]] < 4) and np.count_nonzero(f[orphans] < 4) == 2  # the pole wrap


@pytest.mark.parametrize("strategy,faces", [("grid", None), ("grid", tuple(range(8))), ("ring", None),
                                            ("ring", tuple(range(8)))])
def test_shifted_windows_mix_about_four_originals(strategy, faces):
  nside, ws = 16, 16
  t = shifting.build_shift(nside, faces, ws, strategy)
  mixing = shifting.originals_per_window(t)
  assert mixing.mean() >= 3.9
  # no interior window is unchanged (each draws from >= 2 originals)
  f, x, y = topology.token_fxy(nside, faces)
  s = int(np.sqrt(ws))
  interior = ((x >= s) & (y >= s) & (x < nside - s) & (y < nside - s)).reshape(-1, ws).all(axis=1)
  assert np.all(mixing[interior] == 4)


def test_ring_with_the_nnx_step_would_leave_windows_unmixed():
  # The metric catches the NNX port's bug: rolling by ws // 2 = 8 ring pixels instead of sqrt(ws) / 2 = 2.
  nside, ws = 16, 16
  npix = 12 * nside**2
  src = hp.ring2nest(nside, (hp.nest2ring(nside, np.arange(npix)) - ws // 2) % npix)
  orig = np.sort(src.reshape(-1, ws) // ws, axis=1)
  bad_mixing = 1 + np.count_nonzero(np.diff(orig, axis=1), axis=1)
  assert bad_mixing.mean() < 3.0 and np.mean(bad_mixing == 1) > 0.5


@pytest.mark.parametrize("faces", [None, tuple(range(8)), (8, 9, 10, 11)])
@pytest.mark.parametrize("nside,ws", [(4, 4), (8, 16), (16, 64)])
def test_grid_commutes_exactly_with_the_polar_rotation(faces, nside, ws):
  t = shifting.build_shift(nside, faces, ws, "grid")
  rot = symmetry.rotate_faces_90(nside, faces)
  # rotate-then-shift == shift-then-rotate, for indices and labels (and so for masks)
  np.testing.assert_array_equal(t.src[rot], rot[t.src])
  np.testing.assert_array_equal(t.labels[rot], t.labels)
  x = np.random.default_rng(1).normal(size=(1, len(rot), 2))
  x_rot = np.empty_like(x)
  x_rot[:, rot] = x
  shifted_rot = np.asarray(shifting.apply_shift(jnp.asarray(x_rot), t))
  np.testing.assert_array_equal(shifted_rot[:, rot], np.asarray(shifting.apply_shift(jnp.asarray(x), t)))


def test_mask_blocks_cross_label_attention_at_the_cosine_clamp(keys):
  t = shifting.build_shift(8, tuple(range(8)), 16, "grid")
  ws, nw = 16, t.num_tokens // 16
  assert t.needs_mask
  q = jax.random.normal(next(keys), (4, nw, ws, 16))
  k = jax.random.normal(next(keys), (4, nw, ws, 16))
  q, k = q / jnp.linalg.norm(q, axis=-1, keepdims=True), k / jnp.linalg.norm(k, axis=-1, keepdims=True)
  logits = 100.0 * jnp.einsum("bwqd,bwkd->bwqk", q, k)  # Swin-V2 cosine logits at the clamp exp(ln 100)
  cross = ~layers.same_region(t.labels, ws)

  def leak(masked_logits):
    weights = jax.nn.softmax(masked_logits.astype(jnp.float32), axis=-1)
    return float(jnp.max(jnp.sum(jnp.where(cross[None], weights, 0.0), axis=-1)))

  allowed = jnp.asarray(layers.same_region(t.labels, ws))[None]
  assert leak(layers.mask_logits(logits, allowed)) < 1e-30  # what WindowAttention runs
  assert leak(logits + jnp.where(jnp.asarray(cross), -100.0, 0.0)[None]) > 1e-30  # the original's constant leaks
  bf16 = layers.mask_logits(logits.astype(jnp.bfloat16), allowed)
  assert bf16.dtype == jnp.bfloat16 and float(bf16.min()) == pytest.approx(-1e9, rel=1e-2)
  assert leak(bf16) < 1e-30
  assert np.isfinite(layers.mask_value(jnp.float16))


def test_tables_are_cached_read_only_and_jittable():
  a = shifting.build_shift(8, None, 16, "grid")
  assert shifting.build_shift(8, tuple(range(12)), 16, "grid") is a
  with pytest.raises(ValueError):
    a.src[0] = 1
  x = jnp.arange(2 * a.num_tokens * 3, dtype=jnp.float32).reshape(2, a.num_tokens, 3)
  f = jax.jit(lambda v: shifting.undo_shift(shifting.apply_shift(v, a) * 2.0, a))
  np.testing.assert_array_equal(f(x), 2.0 * x)
  np.testing.assert_array_equal(shifting.apply_shift(x, shifting.build_shift(8, None, 16, "none")), x)


@pytest.mark.parametrize("strategy", ["grid", "ring"])
def test_shift_gradients_are_the_inverse_gathers(strategy, keys, x64):
  t = shifting.build_shift(8, (0, 4, 8), 16, strategy)
  x = jax.random.normal(next(keys), (2, t.num_tokens, 3), dtype=jnp.float64)
  g = jax.random.normal(next(keys), x.shape, dtype=jnp.float64)
  for fn, plain in ((shifting.apply_shift, lambda v: v[:, t.src]), (shifting.undo_shift, lambda v: v[:, t.inv])):
    out, vjp = jax.vjp(lambda v: fn(v, t), x)
    out_ref, vjp_ref = jax.vjp(plain, x)  # autodiff of plain indexing (scatter-add) is the oracle
    np.testing.assert_array_equal(out, out_ref)
    np.testing.assert_array_equal(vjp(g)[0], vjp_ref(g)[0])
  # second order: the VJP of the VJP is the forward gather again
  hvp = jax.grad(lambda v: jnp.sum(jax.grad(lambda u: jnp.sum(shifting.apply_shift(u, t)**3))(v)))(x)
  np.testing.assert_allclose(hvp, 6.0 * x, rtol=1e-12)


def test_bad_arguments_raise_clear_errors():
  with pytest.raises(ValueError, match="power of 2"):
    shifting.build_shift(6, None, 4, "grid")
  with pytest.raises(ValueError, match="power of 4"):
    shifting.build_shift(8, None, 8, "grid")
  with pytest.raises(ValueError, match="exceeds"):
    shifting.build_shift(2, None, 16, "grid")
  with pytest.raises(ValueError, match="not one of"):
    shifting.build_shift(8, None, 4, "nest_roll")
  with pytest.raises(ValueError, match="window_size >= 4"):
    shifting.build_shift(8, None, 1, "ring")
  with pytest.raises(ValueError, match="expected \\(B, 48, C\\)"):
    shifting.apply_shift(jnp.zeros((1, 10, 2)), shifting.build_shift(2, None, 4, "grid"))


def _cross_face_pairs_near_north_pole(tables, max_colat_deg):
  """Attending slot pairs of shifted windows whose contents lie in two different north-polar faces, both within
  ``max_colat_deg`` of the north pole (healpy colatitudes)."""
  ws = tables.window_size
  nest = topology.token_to_nest(tables.nside, tables.faces)
  colat = np.rad2deg(hp.pix2ang(tables.nside, nest, nest=True)[0])[tables.src].reshape(-1, ws)
  face = (nest // tables.nside**2)[tables.src].reshape(-1, ws)
  same = np.asarray(layers.same_region(tables.labels, ws))
  near = (colat < max_colat_deg) & (face < 4)
  cross = same & (face[:, :, None] != face[:, None, :]) & near[:, :, None] & near[:, None, :]
  return int(np.count_nonzero(cross)) // 2


@pytest.mark.parametrize("nside,ws", [(8, 4), (16, 4), (16, 16)])
def test_only_the_ring_shift_joins_the_four_faces_at_the_north_pole(nside, ws):
  # Windows never cross faces, and the grid shift only keeps moves that are consistent both ways: those across
  # the edges shared by two north-polar faces are not (a diagonal translation cannot pass through the pole).
  # So no block ever lets two north-polar faces attend to each other, and a digit centred on the pole is seen
  # as four separate quarters until the pool. The ring shift rolls along the rings around the pole and joins
  # them right at the pole.
  assert _cross_face_pairs_near_north_pole(shifting.build_shift(nside, None, ws, "none"), 180) == 0
  assert _cross_face_pairs_near_north_pole(shifting.build_shift(nside, None, ws, "grid"), 180) == 0
  assert _cross_face_pairs_near_north_pole(shifting.build_shift(nside, None, ws, "ring"), 20) > 0
