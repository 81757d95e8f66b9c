"""HEALPix windows and shifted windows: maps and the geometry invariants HEAL-SWIN relies on.

Builds the index tables of :mod:`healswin_jax.healpix` (windows, the "grid" and "ring" shifts with their
region labels) and checks them against healpy (the oracle): permutations and bit-exact round trips over
several nsides, windows and face sets; mixing (originals per shifted window); same-label grid-adjacent slots
that are not ``healpy.get_all_neighbours`` neighbours; attending pairs whose content is farther apart than
twice a window's diameter (healpy distances); exact commutation of the grid shift with the 90 degree
polar rotation (12 and 8 faces); the attention weight that leaks across labels with random unit q/k at the
Swin-V2 cosine clamp (logit scale 100); and the time to build every table of a 4-stage model at nside 64.
Figures (healpy Mollweide and orthographic views, NEST maps): the windows, the shifted windows of both
strategies and their labels, for all 12 faces and for the original's 8 upper faces.

Run::

  python -m experiments.healpix_geometry --quick --workdir runs/healpix_geometry_quick
  python -m experiments.healpix_geometry --workdir runs/healpix_geometry

Expected (nside 16, ws 16): ``grid_is_permutation`` = ``ring_is_permutation`` = ``roundtrip_exact`` = 1,
``grid_mixing_mean`` and ``ring_mixing_mean`` about 4 (>= 3.9: a half-window shift along both face axes mixes
four original windows into each shifted one; the NNX port's ring step ws // 2 mixes far fewer,
``ring_nnx_step_mixing_mean``), ``grid_unmasked_nonneighbor_pairs`` = 0,
``ring_unmasked_nonneighbor_fraction`` small but non-zero, ``grid_far_attending_pairs`` = ``ring_far_attending_pairs``
= 0 (the ring roll without its mask: ``ring_far_attending_pairs_without_mask`` = 30, its pole wrap),
``grid_c4_commutes`` = 1 (``ring_c4_commute_fraction`` < 1: the ring shift commutes with it only in part),
``mask_leak_max`` = 0 (< 1e-30; the original's -100 gives ``mask_leak_max_minus100`` ~ 1e-12..1e-9 with random
q/k, and O(1) for adversarial ones), ``build_seconds_nside64_full`` < 0.5 (both strategies at token nside 64, 32,
16, 8). Recorded values: ``results/healpix_geometry``.
"""

from __future__ import annotations

import time
import warnings

import healpy as hp
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from healswin_jax import layers
from healswin_jax import plotting
from healswin_jax.healpix import shifting
from healswin_jax.healpix import symmetry
from healswin_jax.healpix import topology
from healswin_jax.healpix import windows
from infra import cli

ALL, UPPER = tuple(range(12)), tuple(range(8))


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.nside = 16                # token nside of the headline metrics and figures
  c.window_size = 16          # 4 x 4 windows, half-window shift h = 2
  c.check_nsides = (4, 8, 16) if quick else (2, 4, 8, 16, 32, 64)
  c.check_windows = (4, 16) if quick else (4, 16, 64)
  c.check_face_sets = ((ALL, UPPER, (0, 4, 8), (5,), (1, 2, 3, 9, 10)) if quick else
                       (ALL, UPPER, (0, 4, 8), (5,), (1, 2, 3, 9, 10), (0, 1, 2, 3), (4, 5, 6, 7),
                        (8, 9, 10, 11), (2, 6, 10), (3, 4, 7, 8, 11)))
  c.head_dim = 16             # random q/k of the mask-leak measurement
  c.logit_scale = 100.0       # Swin-V2: exp(min(tau, ln 100))
  c.leak_batch = 4 if quick else 32
  c.timing_nside = 64         # token nside of stage 0 of the 4-stage model that is timed
  c.timing_stages = 4
  c.timing_repeats = 3 if quick else 10
  c.figure_nside = 8 if quick else 16
  c.figure_xsize = 300 if quick else 800  # healpy projection resolution (rendering dominates the quick run)
  return c


# -- metrics ----------------------------------------------------------------------------------------------------


def _geometries(config):
  for faces in config.check_face_sets:
    for nside in config.check_nsides:
      for ws in config.check_windows:
        if 4 <= ws <= nside * nside:
          yield nside, tuple(faces), ws


def _nonneighbour_pairs(tables) -> tuple[int, int]:
  """(same-label grid-adjacent slot pairs whose sources are not healpy neighbours, all such pairs)."""
  a, b = shifting.same_label_adjacent_sources(tables)
  nest = topology.token_to_nest(tables.nside, tables.faces)
  nbs = hp.get_all_neighbours(tables.nside, nest[a], nest=True)
  return int(np.count_nonzero(~(nbs == nest[b][None]).any(axis=0))), len(a)


def _commutes_with_rotation(tables) -> np.ndarray:
  """Per token: whether rotate-then-shift equals shift-then-rotate (index and label)."""
  rot = symmetry.rotate_faces_90(tables.nside, tables.faces)
  return (tables.src[rot] == rot[tables.src]) & (tables.labels[rot] == tables.labels)


def _mask_leak(tables, config, key, mask_fn) -> float:
  """Largest total softmax weight a query gives to keys of other labels (random unit q/k, cosine logits at the
  clamp, plus a random relative-position bias), masked by ``mask_fn(logits, allowed)`` (``allowed`` from
  :func:`layers.same_region`; :func:`layers.mask_logits` is what ``WindowAttention`` runs)."""
  ws, nw = tables.window_size, tables.num_tokens // tables.window_size
  kq, kk, kb = jax.random.split(key, 3)
  shape = (config.leak_batch, nw, ws, config.head_dim)
  q, k = jax.random.normal(kq, shape), jax.random.normal(kk, shape)
  q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
  k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
  s = int(np.sqrt(ws))
  table = jax.random.normal(kb, ((2 * s - 1)**2,))
  bias = table[layers.relative_position_index(windows.window_rc(ws))[0]]
  logits = config.logit_scale * jnp.einsum("bwqd,bwkd->bwqk", q, k) + bias[None, None]
  allowed = layers.same_region(tables.labels, ws)
  weights = jax.nn.softmax(mask_fn(logits, jnp.asarray(allowed)[None]).astype(jnp.float32), axis=-1)
  return float(jnp.max(jnp.sum(jnp.where(~allowed[None], weights, 0.0), axis=-1)))


def _build_all_tables(nside0: int, stages: int, ws: int) -> None:
  """Every index table of a 4-stage model (windows, rel-pos index, both shift strategies per stage), cold."""
  shifting._build.cache_clear()  # pylint: disable=protected-access
  windows.window_rc.cache_clear()
  shifting.window_adjacent_pairs.cache_clear()
  layers.relative_position_index(windows.window_rc(ws))
  for k in range(stages):
    nside = nside0 // 2**k
    if nside * nside >= ws:
      for strategy in ("grid", "ring"):
        shifting.build_shift(nside, ALL, ws, strategy).needs_mask  # pylint: disable=expression-not-assigned


def _nnx_ring_mixing(nside: int, ws: int) -> float:
  """Mixing of the NNX port's ring shift (step ws // 2 instead of sqrt(ws) / 2), for contrast."""
  npix = 12 * nside**2
  ring = topology.nest_to_ring(nside, np.arange(npix))
  src = topology.ring_to_nest(nside, (ring - ws // 2) % npix)
  orig = np.sort(src.reshape(-1, ws) // ws, axis=1)
  return float(np.mean(1 + np.count_nonzero(np.diff(orig, axis=1), axis=1)))


# -- figures ----------------------------------------------------------------------------------------------------


def _window_colours(num_windows: int, seed: int) -> np.ndarray:
  return np.random.default_rng(seed).permutation(num_windows) % 20  # tab20: neighbours rarely share a colour


def _figure(nside: int, faces, ws: int, seed: int, xsize: int):
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  n = len(faces) * nside**2
  colours = _window_colours(n // ws, seed)
  panels = [("windows", colours[np.arange(n) // ws], "tab20")]
  for strategy in ("grid", "ring"):
    t = shifting.build_shift(nside, faces, ws, strategy)
    # pixel src[p] lands in shifted slot p, i.e. in shifted window p // ws
    panels.append((f"{strategy} shifted windows", colours[t.inv // ws], "tab20"))
    panels.append((f"{strategy} labels at shifted slots", t.labels.astype(float), "viridis"))
  fig = plt.figure(figsize=(4.2 * len(panels), 9.5))
  cols = len(panels)
  for j, (title, values, cmap) in enumerate(panels):
    m = plotting.full_sky(values.astype(float), nside, faces)
    kw = dict(nest=True, cmap=cmap, cbar=False, fig=fig.number, notext=True, xsize=xsize, min=0,
              max=19 if cmap == "tab20" else max(3, float(values.max())))
    hp.mollview(m, title=title, sub=(3, cols, j + 1), **kw)
    hp.orthview(m, rot=(0, 90, 0), title="north pole", sub=(3, cols, cols + j + 1), half_sky=True, **kw)
    hp.orthview(m, rot=(0, -90, 0), title="south pole", sub=(3, cols, 2 * cols + j + 1), half_sky=True, **kw)
  fig.suptitle(f"HEALPix windows, nside={nside} tokens, ws={ws}, {len(faces)} faces")
  return fig


# -- run --------------------------------------------------------------------------------------------------------


def _permutation_metrics(config) -> dict:
  """Permutations and bit-exact round trips over all checked geometries."""
  perm = {"grid": True, "ring": True}
  roundtrip, n_geometries = True, 0
  for nside_k, faces, ws_k in _geometries(config):
    n_geometries += 1
    x = np.random.default_rng(nside_k + ws_k).normal(size=(1, len(faces) * nside_k**2, 2)).astype(np.float32)
    for strategy in ("grid", "ring"):
      t = shifting.build_shift(nside_k, faces, ws_k, strategy)
      perm[strategy] &= bool(np.array_equal(np.sort(t.src), np.arange(t.num_tokens)))
      if nside_k == config.nside and ws_k == config.window_size:  # the jnp gathers (one compile per shape) ...
        back = np.asarray(shifting.undo_shift(shifting.apply_shift(jnp.asarray(x), t), t))
      else:  # ... and the same gathers in numpy everywhere else
        back = np.take(np.take(x, t.src, axis=1), t.inv, axis=1)
      roundtrip &= bool(np.array_equal(back, x))
  return dict(grid_is_permutation=perm["grid"], ring_is_permutation=perm["ring"], roundtrip_exact=roundtrip,
              geometries_checked=n_geometries)


def _mixing_metrics(config, grid, ring) -> dict:
  """Originals per shifted window (12 faces both strategies, 8 faces grid, the NNX port's ring step)."""
  nside, ws = config.nside, config.window_size
  return {"grid_mixing_mean": shifting.originals_per_window(grid).mean(),
          "ring_mixing_mean": shifting.originals_per_window(ring).mean(),
          "ring_nnx_step_mixing_mean": _nnx_ring_mixing(nside, ws),
          "grid_mixing_mean_8faces": shifting.originals_per_window(
              shifting.build_shift(nside, UPPER, ws, "grid")).mean()}


def _seam_metrics(config, ring) -> dict:
  """Seams: every checked geometry for grid (must be 0); the headline geometry for ring (report)."""
  bad_grid = sum(_nonneighbour_pairs(shifting.build_shift(n_, f_, w_, "grid"))[0]
                 for n_, f_, w_ in _geometries(config))
  bad, total = _nonneighbour_pairs(ring)
  bad8, total8 = _nonneighbour_pairs(shifting.build_shift(config.nside, UPPER, config.window_size, "ring"))
  return dict(grid_unmasked_nonneighbor_pairs=bad_grid, ring_unmasked_nonneighbor_fraction=bad / total,
              ring_unmasked_nonneighbor_fraction_8faces=bad8 / total8)


def _far_attending_metrics(config, ring) -> dict:
  """Distant sky glued by attention: pairs that may attend although healpy puts their content farther apart than
  twice a window's diameter, over every checked geometry (the plain ring roll without its mask for contrast)."""
  def vectors(t):
    return np.stack(hp.pix2vec(t.nside, topology.token_to_nest(t.nside, t.faces), nest=True), axis=-1)

  out = {}
  for strategy in ("grid", "ring"):
    out[f"{strategy}_far_attending_pairs"] = sum(
        shifting.far_attending_pairs(t, vectors(t))
        for t in (shifting.build_shift(n_, f_, w_, strategy) for n_, f_, w_ in _geometries(config)))
  out["ring_far_attending_pairs_without_mask"] = shifting.far_attending_pairs(ring, vectors(ring),
                                                                              np.zeros_like(ring.labels))
  return out


def _c4_metrics(config, ring) -> dict:
  """Exact C4 commutation of the grid shift (12 and 8 faces, all checked nsides/windows); ring for reference."""
  grid_c4 = all(np.all(_commutes_with_rotation(shifting.build_shift(n_, f_, w_, "grid")))
                for n_, f_, w_ in _geometries(config) if f_ in (ALL, UPPER))
  return {"grid_c4_commutes": grid_c4, "ring_c4_commute_fraction": _commutes_with_rotation(ring).mean()}


def _mask_metrics(config, grid) -> dict:
  """Mask leak through a real softmax at the cosine clamp (8 faces: every window kind is masked somewhere), the
  original's -100 mask for contrast, and the masked fraction of the 12-face grid shift."""
  masked = shifting.build_shift(config.nside, UPPER, config.window_size, "grid")
  k1, k2 = jax.random.split(jax.random.PRNGKey(config.seed))
  return {"mask_leak_max": max(_mask_leak(masked, config, k1, layers.mask_logits),
                               _mask_leak(grid, config, k2, layers.mask_logits)),
          "mask_leak_max_minus100": _mask_leak(
              masked, config, k1, lambda logits, allowed: logits + jnp.where(allowed, 0.0, -100.0)),
          "mask_fraction_grid": float(np.mean(~layers.same_region(grid.labels, config.window_size)))}


def _build_time_metrics(config) -> dict:
  """Build time of every table of a 4-stage model at nside 64, cold caches (best of repeats: the machine is
  shared)."""
  times = []
  for _ in range(config.timing_repeats):
    t0 = time.perf_counter()
    _build_all_tables(config.timing_nside, config.timing_stages, config.window_size)
    times.append(time.perf_counter() - t0)
  return {"build_seconds_nside64_full": min(times), "build_seconds_nside64_median": float(np.median(times))}


def _summary(config, metrics) -> str:
  rows = [(k, float(v)) for k, v in sorted(metrics.items())]
  return "\n".join([
      f"# HEALPix geometry (nside {config.nside} tokens, window {config.window_size})", "",
      "Grid: half-window diagonal shift with true face orientation; orphan strips/corners (no consistent "
      "source) are filled by wrap-around and get their own labels. Ring: roll by sqrt(ws)/2 along the RING "
      "spiral; unmasked on the full sphere.", "",
      cli.markdown_table(rows, ["metric", "value"]), "",
      "Figures: windows_12faces.png, windows_8faces.png (Mollweide, north and south orthographic).",
  ])


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  grid = shifting.build_shift(config.nside, ALL, config.window_size, "grid")
  ring = shifting.build_shift(config.nside, ALL, config.window_size, "ring")
  metrics = {**_permutation_metrics(config), **_mixing_metrics(config, grid, ring), **_seam_metrics(config, ring),
             **_far_attending_metrics(config, ring), **_c4_metrics(config, ring), **_mask_metrics(config, grid),
             **_build_time_metrics(config)}
  for faces, name in ((ALL, "windows_12faces"), (UPPER, "windows_8faces")):
    with warnings.catch_warnings():  # healpy's projaxes uses matplotlib's deprecated Colormap.set_* API
      warnings.simplefilter("ignore", PendingDeprecationWarning)
      fig = _figure(config.figure_nside, faces, config.window_size, config.seed, config.figure_xsize)
    cli.save_figure(fig, workdir, name, dpi=80)
  cli.write_summary(workdir, _summary(config, metrics))
  return metrics


if __name__ == "__main__":
  cli.main(get_config, run, name="healpix_geometry")
