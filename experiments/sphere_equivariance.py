"""Emergent equivariance on the sphere: HEAL-SWIN deep ensembles and HEAL-SWIN's empirical NTK under the exact
HEALPix symmetry group (Gerken & Kessel, ICML 2024, arXiv:2403.03103, applied to HEAL-SWIN, arXiv:2307.07313).

On HEALPix the 90-degree rotation about the polar axis (r) and the equatorial reflection (s) permute NEST pixels
exactly; together they form G = C4 x Z2 (order 8, ``healswin_jax.healpix.symmetry``). This runner:

1. checks the model's own symmetry: a grid-shift HEAL-SWIN is exactly C4-equivariant for any weights (the
   windows and the grid shift commute with r), the ring-shift model only approximately, and no HEAL-SWIN is
   reflection-equivariant (``model_err_*``);
2. trains vmapped ensembles of small HEAL-SWIN classifiers on spherical MNIST (digits at the north pole, nside 8,
   all 12 faces) with full G-orbit augmentation and without (control), and measures the invariance error
   (orbit spread of the outputs, in units of the members' output RMS), OSP (orbit same predictions, 8 = fully
   invariant) and accuracy for members vs ensemble means vs ensemble size, on test digits and off-manifold
   noise maps; the full mode adds the ring-shift model and an equivariant segmentation task (pixel label = 1 +
   digit on ink) with the U-Net;
3. computes HEAL-SWIN's empirical NTK (``nt.empirical_ntk_fn`` / ``nt.monte_carlo_kernel_fn`` on the linen
   apply) at several widths: its invariance under G for single seeds and for Monte-Carlo means, and kernel
   regression on augmented data with the group-averaged MC kernel (invariant to float64 round-off), with the
   no-augmentation and un-averaged controls.

Run::

  python -m experiments.sphere_equivariance --quick --workdir runs/sphere_equivariance_quick
  python -m experiments.sphere_equivariance --workdir runs/sphere_equivariance

Measured (quick, 16 members; 418 s wall on 2 heavily shared cores, expect ~1-2 min on quiet ones):
``model_err_grid_c4`` 2e-7 (float32 round-off), ``model_err_ring_c4`` 2e-2, ``model_err_grid_reflection`` 1.8;
``inv_err_member`` 1.2e-3, ``inv_err_ensemble`` 3.9e-4, ``ensemble_invariance_gain`` 3.0 (noise maps 2.5;
theory sqrt(16) = 4 for independent member fluctuations), ``osp_member`` = ``osp_ensemble`` = 8; without
augmentation ``noaug_inv_err_ensemble`` 0.19, gain 1.09, OSP 6.8 (members) / 7.9 (ensemble);
``entk_regression_equiv_err`` ~1e-11 (<= 1e-8), ``_noaug`` ~5, ``_raw`` ~0.3. Caveat: in quick mode the members
are barely trained (loss 2.30 -> 2.24, accuracy at chance: at nside 8 the digits are only ~16 pixels across),
so the gain there measures the averaging of near-initialization fluctuations. The full mode (more data, steps,
members, the ring model and the segmentation task) has not been run yet; its ring and segmentation
parts were run at quick scale (``--quick --set segmentation=True --set "strategies=('grid','ring')" --set
steps=200``, 7.7 min on 2 quiet cores): ensemble_invariance_gain with / without augmentation grid 3.39 / 1.13,
ring 1.92 / 1.11, segmentation (equivariance of the output maps) 2.91 / 1.25; segmentation loss 2.40 -> 0.24.
"""

from __future__ import annotations

import time

import jax
import ml_collections
import numpy as np

from healswin_jax.healpix.symmetry import element_name
from healswin_jax.model import build_model
from healswin_ntk import ensembles, models, tasks
from healswin_ntk.entk import entk_study
from infra import cli


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.nside = 8
  c.reflection = True                 # G = C4 x Z2 (order 8); False: C4 only
  c.num_train = 32 if quick else 128  # digits; x 8 orbit elements with augmentation
  c.num_test = 32 if quick else 64
  c.num_ood = 8 if quick else 32
  c.embed_dim = 16
  c.members = 16 if quick else 32
  c.steps = 100 if quick else 600
  c.batch_size = 32 if quick else 64
  c.learning_rate = 1e-3
  c.steps_per_call = 20
  c.strategies = ("grid",) if quick else ("grid", "ring")   # ensembles trained per strategy
  c.segmentation = not quick          # also the equivariant segmentation task (U-Net)
  c.entk_widths = (8, 16) if quick else (8, 16, 32)
  c.entk_seeds = (1, 2, 4) if quick else (1, 2, 4, 8, 16)
  c.entk_train = 6 if quick else 12   # digits in the eNTK regression (x 8 orbit)
  c.entk_test = 3 if quick else 6
  return c


def _prefix(strategy: str, augmented: bool, kind: str = "classification") -> str:
  """Metric-name prefix: '' for the headline run (grid, augmented, classification)."""
  p = "" if kind == "classification" else "seg_"
  p += "" if strategy == "grid" else f"{strategy}_"
  return p + ("" if augmented else "noaug_")


def run(c: ml_collections.ConfigDict, workdir: str) -> dict:
  key = jax.random.PRNGKey(c.seed)
  out, timings = {}, {}
  t0 = time.perf_counter()
  task = tasks.spherical_mnist_task("classification", c.nside, c.num_train, c.num_test, c.num_ood,
                                    reflection=c.reflection, seed=c.seed)
  group = task.group
  timings["data"] = time.perf_counter() - t0

  # 1. The model's own symmetry, at initialization (any weights would do).
  x_probe = np.concatenate([task.x_test[:4], task.x_ood[:2]])
  per_element = {}
  for strategy in ("grid", "ring"):
    model = build_model(models.small_config(task, strategy, c.embed_dim))
    params = model.init(jax.random.fold_in(key, 99), x_probe[:1])["params"]
    errs = models.model_equivariance_errors(model, params, group, x_probe)
    per_element[strategy] = errs
    out[f"model_err_{strategy}_c4"] = float(np.max(errs[1:4]))
    if group.order == 8:
      out[f"model_err_{strategy}_reflection"] = float(np.max(errs[4:]))

  # 2. Ensembles with and without full-orbit augmentation.
  runs, preds_test, curves = {}, {}, {}
  for strategy in c.strategies:
    for augmented in (True, False):
      t = time.perf_counter()
      cfg = models.small_config(task, strategy, c.embed_dim)
      r = ensembles.train_ensemble(task, cfg, members=c.members, steps=c.steps, augmented=augmented,
                                   learning_rate=c.learning_rate, batch_size=c.batch_size,
                                   key=jax.random.fold_in(key, 1), steps_per_call=c.steps_per_call,
                                   progress=f"{strategy} {'aug' if augmented else 'noaug'}")
      p = _prefix(strategy, augmented)
      pt = ensembles.orbit_predictions(r, group, task.x_test)
      m_test = ensembles.ensemble_metrics(pt, group, task.y_test)
      m_ood = ensembles.ensemble_metrics(ensembles.orbit_predictions(r, group, task.x_ood), group)
      out.update({p + k: v for k, v in m_test.items()})
      out.update({p + k + "_ood": v for k, v in m_ood.items() if k.startswith(("inv_err", "ensemble_inv", "osp"))})
      out[p + "loss_first"], out[p + "loss_last"] = float(r.losses[0].mean()), float(r.losses[-1].mean())
      runs[(strategy, augmented)], preds_test[(strategy, augmented)] = r, pt
      curves[(strategy, augmented)] = m_test
      timings[f"train_{strategy}_{'aug' if augmented else 'noaug'}"] = time.perf_counter() - t

  if c.segmentation:
    seg = tasks.spherical_mnist_task("segmentation", c.nside, c.num_train, c.num_test, c.num_ood,
                                     reflection=c.reflection, seed=c.seed)
    for augmented in (True, False):
      t = time.perf_counter()
      r = ensembles.train_ensemble(seg, models.small_config(seg, "grid", c.embed_dim), members=c.members, steps=c.steps,
                                   augmented=augmented, learning_rate=c.learning_rate, batch_size=c.batch_size,
                                   key=jax.random.fold_in(key, 2), steps_per_call=c.steps_per_call,
                                   progress=f"segmentation {'aug' if augmented else 'noaug'}")
      p = _prefix("grid", augmented, "segmentation")
      preds = ensembles.orbit_predictions(r, seg.group, seg.x_test, chunk=16)
      m = ensembles.ensemble_metrics(preds, seg.group, seg.y_test)
      out.update({p + k: v for k, v in m.items()})
      out[p + "loss_first"], out[p + "loss_last"] = float(r.losses[0].mean()), float(r.losses[-1].mean())
      timings[f"train_seg_{'aug' if augmented else 'noaug'}"] = time.perf_counter() - t

  # 3. Empirical NTK.
  t = time.perf_counter()
  entk = entk_study(task, c.entk_widths, c.entk_seeds, c.entk_train, c.entk_test,
                    key=jax.random.fold_in(key, 3))
  timings["entk"] = time.perf_counter() - t
  smax = max(c.entk_seeds)
  for w in entk.widths:
    out[f"entk_inv_single_w{w}"] = entk.invariance_single[w]
    for s, v in entk.invariance_mc[w].items():
      out[f"entk_inv_mc_w{w}_S{s}"] = v
    if group.order == 8:
      out[f"entk_inv_c4_w{w}_S{smax}"] = float(np.max(entk.invariance_by_element[w][1:4]))
  out["entk_regression_equiv_err"] = entk.regression_equiv_err
  out["entk_regression_equiv_err_noaug"] = entk.regression_equiv_err_noaug
  out["entk_regression_equiv_err_raw"] = entk.regression_equiv_err_raw
  out.update({f"seconds_{k}": v for k, v in timings.items()})

  _figures(c, workdir, task, runs, preds_test, curves, per_element)
  _summary(c, workdir, out, entk, group)
  return out


# -------------------------------------------------------------------------------------------------------------


def _figures(c, workdir, task, runs, preds_test, curves, per_element):
  import healpy as hp  # pylint: disable=g-import-not-at-top
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  group = task.group
  x0 = task.x_test[:1]
  orbit = np.asarray(group.orbit(x0))[:, 0, :, 0]                       # (|G|, N) full-sphere NEST maps
  fig = plt.figure(figsize=(3.0 * min(group.order, 4), 3.2 * ((group.order + 3) // 4)))
  for a in range(group.order):
    south = a >= 4                                                       # reflected digits sit at the south pole
    hp.orthview(orbit[a], nest=True, rot=(0, -90 if south else 90, 0), half_sky=True, fig=fig.number,
                sub=((group.order + 3) // 4, 4, a + 1), cbar=False, cmap="gray_r",
                title=f"{element_name(a)}  ({'south' if south else 'north'} pole view)")
  fig.suptitle(f"test digit (label {task.y_test[0]}) and its orbit under {group.name}", fontsize=10, y=1.03)
  cli.save_figure(fig, workdir, "input_orbit")

  # Member vs ensemble predictions along the orbit of the first test digit.
  fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
  for ax, augmented in zip(axes, (True, False)):
    if ("grid", augmented) not in preds_test:
      continue
    pt = preds_test[("grid", augmented)]                                 # (M, |G|, n, classes)
    prob = np.exp(pt - pt.max(-1, keepdims=True))
    prob /= prob.sum(-1, keepdims=True)
    y = task.y_test[0]
    for m in range(pt.shape[0]):
      ax.plot(prob[m, :, 0, y], color="0.6", lw=0.8, marker=".", label="members" if m == 0 else None)
    mean = pt.mean(0)
    pm = np.exp(mean - mean.max(-1, keepdims=True))
    pm /= pm.sum(-1, keepdims=True)
    ax.plot(pm[:, 0, y], color="C3", lw=2.5, marker="o", label="ensemble (mean logits)")
    ax.set_xticks(range(group.order), [element_name(a) for a in range(group.order)])
    ax.set_title(f"{'with' if augmented else 'without'} full-orbit augmentation")
    ax.set_xlabel("group element g")
  axes[0].set_ylabel(f"p(true class {task.y_test[0]} | g x)")
  axes[0].legend(fontsize=8)
  cli.save_figure(fig, workdir, "orbit_predictions")

  # Invariance error vs ensemble size.
  fig, ax = plt.subplots(figsize=(5.2, 3.8))
  for (strategy, augmented), m in curves.items():
    ms = sorted(int(k.split("_M")[1]) for k in m if k.startswith("inv_err_ensemble_M"))
    errs = [m[f"inv_err_ensemble_M{s}"] for s in ms]
    ax.loglog(ms, errs, marker="o", label=f"{strategy}, {'aug' if augmented else 'no aug'}",
              ls="-" if augmented else "--")
    if augmented:
      ax.loglog(ms, [errs[0] / np.sqrt(s) for s in ms], color="0.7", lw=0.8)
  ax.set_xlabel("ensemble size M")
  ax.set_ylabel("invariance error (test digits)")
  ax.set_title("ensemble mean vs M (grey: M^-1/2)")
  ax.legend(fontsize=8)
  cli.save_figure(fig, workdir, "invariance_vs_M")

  fig, ax = plt.subplots(figsize=(5.2, 3.4))
  for strategy, errs in per_element.items():
    ax.semilogy(range(1, group.order), np.maximum(errs[1:], 1e-12), marker="o", label=f"{strategy} shift")
  ax.set_xticks(range(1, group.order), [element_name(a) for a in range(1, group.order)])
  ax.set_ylabel("single-network invariance error")
  ax.set_title("HEAL-SWIN's own symmetry at init")
  ax.legend(fontsize=8)
  cli.save_figure(fig, workdir, "model_symmetry")


def _summary(c, workdir, out, entk, group):
  g = lambda k: out.get(k, float("nan"))
  rows = []
  for label, p in [("grid, augmented", ""), ("grid, no augmentation", "noaug_"), ("ring, augmented", "ring_"),
                   ("ring, no augmentation", "ring_noaug_")]:
    if p + "inv_err_member" in out:
      rows.append([label, g(p + "inv_err_member"), g(p + "inv_err_ensemble"), g(p + "ensemble_invariance_gain"),
                   g(p + "inv_err_ensemble_ood"), g(p + "osp_member"), g(p + "osp_ensemble"), g(p + "acc_member"),
                   g(p + "acc_ensemble")])
  table = cli.markdown_table(rows, ["run", "inv err member", "inv err ensemble", "gain", "ens. inv err (noise)",
                                    "OSP member", "OSP ensemble", "acc member", "acc ensemble"])
  seg = ""
  if "seg_inv_err_member" in out:
    seg = "\n\nSegmentation (equivariant, U-Net, per-pixel outputs permute with the input):\n\n" + \
        cli.markdown_table(
            [[l, g(p + "inv_err_member"), g(p + "inv_err_ensemble"), g(p + "ensemble_invariance_gain"),
              g(p + "acc_member"), g(p + "acc_ensemble")] for l, p in [("augmented", "seg_"),
                                                                        ("no augmentation", "seg_noaug_")]],
            ["run", "equiv err member", "equiv err ensemble", "gain", "pixel acc member", "pixel acc ensemble"])
  trained_note = (
      "The members are still close to chance here (short training): the ensemble gain then mostly "
      "measures the averaging of initialization-scale fluctuations -- the ensemble mean is invariant at "
      "initialization (zero-mean outputs) and full augmentation keeps it so -- not yet the regime in which "
      "members fit the data (train longer: more steps, nside 16)."
      if g("loss_last") > 0.9 * np.log(10) else
      "The members have learned the task, so the gain measures how much of their non-invariance is "
      "member-specific (averaged out) rather than shared.")
  smax = max(entk.seeds)
  entk_rows = [[w, entk.invariance_single[w]] + [entk.invariance_mc[w][s] for s in entk.seeds]
               for w in entk.widths]
  entk_table = cli.markdown_table(entk_rows, ["embed dim", "1 seed (mean)"] + [f"MC mean, S={s}"
                                                                                   for s in entk.seeds])
  text = f"""# Emergent equivariance of HEAL-SWIN ensembles on the HEALPix sphere

Group: {group.name} (order {group.order}), exact NEST pixel permutations. Spherical MNIST (digits at the north
pole), nside {c.nside}, all 12 faces; {c.num_train} training digits (x{group.order} with augmentation), {c.members}
members, {c.steps} Adam steps, HEAL-SWIN embed {c.embed_dim}, one stage (plain + shifted block), window 4, patch 4.

## The model's own symmetry (single network at init; max relative output change over the orbit)

| | grid shift | ring shift |
|---|---|---|
| rotations r, r^2, r^3 | {g('model_err_grid_c4'):.2e} | {g('model_err_ring_c4'):.2e} |
| reflections s, rs, ... | {g('model_err_grid_reflection'):.2e} | {g('model_err_ring_reflection'):.2e} |

The grid-shift HEAL-SWIN is C4-invariant to float32 round-off for *any* weights: its windows, patch merging
and grid shift commute with the 90-degree polar rotation, and every layer shares weights across tokens and
windows. Under C4 there is therefore nothing to emerge for the grid model: each member, and hence any
ensemble, is already invariant, with or without augmentation. The ring (spiral) shift commutes with the
rotation only approximately, so ring members are slightly non-invariant under C4 and augmentation/ensembling
can only shrink that. No HEAL-SWIN is reflection-equivariant (the relative position bias and patch embedding see
the transposed in-window layout, the shift direction flips): the reflection is where emergence is measured.

## Ensembles (test digits; invariance error = mean orbit spread in units of the members' output RMS)

{table}{seg}

Training loss (cross-entropy, mean over members) {g('loss_first'):.3f} -> {g('loss_last'):.3f} with augmentation,
{g('noaug_loss_first'):.3f} -> {g('noaug_loss_last'):.3f} without (ln 10 = 2.303 is chance). {trained_note}
Theory (Gerken & Kessel, Lemma B.4): the ensemble's invariance error falls like M^-1/2 (grey guide in
`invariance_vs_M.png`) down to the finite-width bias, which vanishes in the NTK limit, on test digits and
off-manifold inputs alike; without augmentation the infinite ensemble itself is not invariant, so the error
plateaus at its non-invariance.

## Empirical NTK of HEAL-SWIN (grid; max over g of ||K(gZ, gZ) - K(Z, Z)|| / ||K||)

{entk_table}

Max over the rotations only (S={smax}): {', '.join(f"w{w}: {g(f'entk_inv_c4_w{w}_S{smax}'):.1e}" for w in entk.widths)}
(the grid model's eNTK is exactly C4-invariant seed by seed). Kernel regression (t = inf) on the augmented
training set with the group-averaged Monte-Carlo eNTK: max relative equivariance error on the test orbits
**{g('entk_regression_equiv_err'):.2e}** (float64 round-off); same kernel without augmentation
{g('entk_regression_equiv_err_noaug'):.2e}; raw (un-averaged) MC kernel with augmentation
{g('entk_regression_equiv_err_raw'):.2e}.

Figures: `input_orbit.png` (a test digit and its 8 images), `orbit_predictions.png` (members vs ensemble along
the orbit), `invariance_vs_M.png`, `model_symmetry.png`.
"""
  cli.write_summary(workdir, text)


if __name__ == "__main__":
  cli.main(get_config, run, name="sphere_equivariance")
