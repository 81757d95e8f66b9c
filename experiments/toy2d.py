"""Toy example: a C4-invariant function on the plane, learned by MLP ensembles with full augmentation.

Reproduces the layout of Gerken & Kessel's toy figure (ICML 2024, arXiv 2403.03103): a grid of heat maps over
[-3, 3]^2 with rows *ground truth / one member / ensemble mean / NTK mu_t* and columns at gradient-descent steps
0, 1, 2, 3 and 2000.

- target: f*(r, φ) = sin(2r) cos(4φ) (invariant under rotations by 90°);
- data: ``n_points`` random points with radius in [0.5, 3] plus their full C4 orbits (exact 2-D rotation
  matrices, :func:`ntk.groups.rotations_2d_points`);
- members: MLPs (:class:`ntk.architectures.ArchSpec`, NTK parameterization, zero-mean init, biases with
  ``b_std``), trained by full-batch gradient descent on MSE; the NTK time is ``t = lr * steps``;
- reference: the infinite ensemble mu_t of the same architecture (:func:`ntk.kernels.infinite_ensemble_predict`).

Invariance error (``ntk.metrics.invariance_error``): mean orbit spread of the prediction over the C4 orbits
of the evaluation points -- the heat-map grid (symmetric under 90° rotations) plus ``n_far`` points at radius
4-8, outside the data -- in units of the target RMS. Members are not invariant; the ensemble mean is, up to
its finite-M fluctuation ~ M^{-1/2}; mu_t is invariant to float64 round-off at every step.

Run::

  python -m experiments.toy2d --quick --workdir runs/toy2d_quick   # depth 1, M = 128
  python -m experiments.toy2d --workdir runs/toy2d                 # depth 2, width 512, M = 100, 81 x 81 grid

Expected: ``inv_err_mu_step2000`` at float64 round-off, ``inv_err_ensemble_step2000`` below
``inv_err_member_step2000`` by about sqrt(M). At steps 1-3 mu_t is still small and the ensemble mean is dominated
by its finite-M fluctuation, so the symmetry of the ensemble shows only after a few more steps (larger M shows
it earlier).
Results: ``results/toy2d/*.json`` (written with ``--record``) and the README's tables generated from them.
"""

from __future__ import annotations

import time

import jax
import ml_collections
import numpy as np

from infra import cli
from ntk import ensemble as ens
from ntk import datasets, groups, kernels, metrics
from ntk.architectures import ArchSpec


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.n_points = 10            # x 4 rotations = 40 training points
  c.width = 512
  c.depth = 1 if quick else 2
  c.b_std = 1.0             # biases let the fit vary with the radius (a bias-free ReLU MLP is 1-homogeneous)
  c.n_members = 128 if quick else 100
  c.lr_fraction = 1.0        # lr = lr_fraction * N / lambda_max(Theta): the stiffest mode relaxes by e^-1 per step
  c.steps = (0, 1, 2, 3, 10, 30, 100, 300, 1000, 2000)
  c.figure_steps = (0, 1, 2, 3, 2000)
  c.grid = 41 if quick else 81  # heat-map resolution (odd: the grid contains 0 and is C4-symmetric)
  c.n_far = 64
  return c


def target(x: np.ndarray) -> np.ndarray:
  """f*(r, φ) = sin(2r) cos(4φ) on points ``(n, 2)`` -> ``(n, 1)`` (C4-invariant)."""
  r, phi = np.hypot(x[:, 0], x[:, 1]), np.arctan2(x[:, 1], x[:, 0])
  return (np.sin(2 * r) * np.cos(4 * phi))[:, None]


def run(c: ml_collections.ConfigDict, workdir: str) -> dict:
  t0 = time.perf_counter()
  rng = np.random.default_rng(c.seed)
  group = groups.rotations_2d_points(4)
  x_tr = datasets.annulus_points(rng, c.n_points, 0.5, 3.0).astype(np.float32)
  x_aug, y_aug = (a.astype(np.float32) for a in groups.augment_full_orbit(group, x_tr, target(x_tr)))
  # Evaluation: the heat-map grid plus far points, each with its C4 orbit (group-major).
  grid = datasets.square_grid(3.0, c.grid)
  base = np.concatenate([grid, datasets.annulus_points(rng, c.n_far, 4.0, 8.0)]).astype(np.float32)
  as_orbit = lambda f: f.reshape(f.shape[:-2] + (4, len(base), 1))
  scale = float(np.sqrt(np.mean(y_aug ** 2)))
  spec = ArchSpec(kind="mlp", width=c.width, depth=c.depth, out_dim=1, b_std=c.b_std or None)
  kernel_fn = spec.stax()[2]
  lr = kernels.stable_lr(kernel_fn, x_aug, 1, c.lr_fraction)
  steps = sorted(set(c.steps) | set(c.figure_steps))
  x_eval = np.asarray(group.orbit(base)).reshape(-1, 2)
  mu = as_orbit(kernels.infinite_ensemble_predict(kernel_fn, x_aug, y_aug, x_eval, lr * np.asarray(steps, np.float64),
                                                  learning_rate=lr).mean)  # (T, 4, n, 1)
  preds = ens.gd_ensemble_snapshots(spec.flax(), x_aug, y_aug, x_eval, steps, lr, c.n_members,
                                    jax.random.PRNGKey(c.seed), progress="toy2d")
  preds = {s: as_orbit(p) for s, p in preds.items()}  # (M, 4, n, 1) per step
  out, curves = _invariance_curves(steps, preds, mu, group, scale)
  out.update(lr=lr, n_members=c.n_members)
  fit = preds[steps[-1]].mean(0)[0, :len(grid)]
  out["ensemble_rmse_vs_target_grid"] = float(np.sqrt(np.mean((fit - target(grid)) ** 2)))
  _figures(c, workdir, steps, preds, mu, grid, x_aug, curves, lr)
  out["wall_seconds"] = time.perf_counter() - t0
  _summary(c, workdir, out, steps, curves, lr, steps[-1])
  return out


def _invariance_curves(steps, preds, mu, group, scale) -> tuple[dict, dict]:
  """Invariance errors of the members (mean), the ensemble mean and mu_t at every step, as metrics
  (``inv_err_{member,ensemble,mu}_step{s}``, ``ens_vs_mu_relerr_step{s}``) and as curves ``{who: [err per step]}``."""
  out, curves = {}, {"member": [], "ensemble": [], "mu": []}
  for j, s in enumerate(steps):
    both = metrics.member_and_ensemble(metrics.invariance_error, preds[s], group, scale)
    for who, e in (("member", both["member_mean"]), ("ensemble", both["ensemble"]),
                   ("mu", metrics.invariance_error(mu[j], group, scale))):
      curves[who].append(e)
      out[f"inv_err_{who}_step{s}"] = e
    if s > 0:
      out[f"ens_vs_mu_relerr_step{s}"] = metrics.relative_error(preds[s].mean(0), mu[j])
  return out, curves


def _figures(c, workdir, steps, preds, mu, grid, x_aug, curves, lr):
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  n_grid = len(grid)
  truth = target(grid).reshape(c.grid, c.grid)
  cols = list(c.figure_steps)
  rows = ("ground truth", "one member", f"ensemble mean (M={c.n_members})", "NTK $\\mu_t$")
  fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.2 * len(cols), 2.2 * len(rows)), squeeze=False)
  for j, s in enumerate(cols):
    f = preds[s][:, 0, :n_grid, 0]  # identity element of the orbit: the grid itself
    panels = (truth, f[0].reshape(truth.shape), f.mean(0).reshape(truth.shape),
              mu[steps.index(s)][0, :n_grid, 0].reshape(truth.shape))
    for i, img in enumerate(panels):
      ax = axes[i, j]
      # Each panel on its own symmetric colour scale (the ensemble mean at steps 1-3 is small but already
      # symmetric); the scale is written in the corner.
      vmax = float(np.abs(img).max()) or 1.0
      ax.imshow(img, origin="lower", extent=(-3, 3, -3, 3), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
      ax.text(0.03, 0.03, f"±{vmax:.2g}", transform=ax.transAxes, fontsize=7,
              bbox=dict(facecolor="white", alpha=0.7, lw=0, pad=1))
      ax.scatter(x_aug[:, 0], x_aug[:, 1], s=4, c="k")
      ax.set_xticks([])
      ax.set_yticks([])
      if i == 0:
        ax.set_title(f"step {s}")
      if j == 0:
        ax.set_ylabel(rows[i])
  fig.suptitle(f"C4-invariant target, MLP width {c.width} depth {c.depth}, full-batch GD (lr {lr:.3g})")
  cli.save_figure(fig, workdir, "toy2d_grid")

  fig, ax = plt.subplots(figsize=(5, 3.8))
  x = np.maximum(np.asarray(steps), 0.5)
  for who, style in (("member", "o-"), ("ensemble", "s-"), ("mu", "^-")):
    ax.loglog(x, np.maximum(curves[who], 1e-17), style, label={"member": "members (mean)", "ensemble":
              f"ensemble mean (M={c.n_members})", "mu": "NTK $\\mu_t$"}[who])
  ax.set_xlabel("GD step (step 0 drawn at 0.5)")
  ax.set_ylabel("invariance error (orbit spread / target RMS)")
  ax.legend(fontsize=8)
  cli.save_figure(fig, workdir, "toy2d_invariance_vs_step")


def _summary(c, workdir, out, steps, curves, lr, final):
  rows = [(s, curves["member"][j], curves["ensemble"][j], curves["mu"][j]) for j, s in enumerate(steps)]
  text = "\n".join([
      "# Toy example: C4-invariant function on the plane",
      "",
      f"{c.n_points} points x 4 rotations, MLP width {c.width}, depth {c.depth}, b_std {c.b_std}, NTK "
      f"parameterization, M = {c.n_members}, full-batch GD with lr = {lr:.4g} (t = lr * step). Invariance "
      "error = mean C4-orbit spread over the heat-map grid and far points, in units of the target RMS.",
      "",
      cli.markdown_table(rows, ["step", "members (mean)", "ensemble mean", "NTK mu_t"]),
      "",
      f"Ensemble vs mu_t at step {final}: relative error {out[f'ens_vs_mu_relerr_step{final}']:.3g}; "
      f"ensemble RMSE vs the target on the grid: {out['ensemble_rmse_vs_target_grid']:.3g}.",
      "",
      "![grid](toy2d_grid.png) ![curve](toy2d_invariance_vs_step.png)",
  ])
  cli.write_summary(workdir, text)


if __name__ == "__main__":
  cli.main(get_config, run, name="toy2d")
