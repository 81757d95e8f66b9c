"""Partial augmentation: train with C_k ⊂ SO(2), measure invariance under all of SO(2).

Gerken & Kessel's Lemma 6.2 (ICML 2024, arXiv 2403.03103; restated by Weltevrede et al.): an ensemble trained with full augmentation by
a finite subgroup B ⊂ G satisfies ``||f̄_t(rho(g) x) − f̄_t(x)|| ≤ C(x) κ`` for all t, with
``κ = max_g min_b ||rho(g) − rho(b)||_op``; for B = C_k ⊂ SO(2), ``κ = 2 sin(π / 2k)`` (the largest angle to the
nearest element of C_k is π/k). The ICLR version measured SO(2) invariance of ensembles trained with C4,
C8, C16 augmentation (App. B.2).

Set-up (exactly rotatable inputs, so the only approximation is the subgroup): 2-D points, an
SO(2)-invariant radial target f*(x) = sin(2|x|), ``n_points`` training points plus their C_k orbits
(:func:`ntk.groups.rotations_2d_points`), MLP ensembles (NTK parameterization) trained by full-batch GD on
MSE, and the infinite ensemble mu_t. SO(2) invariance error: for every evaluation point x, the spread of
f(R_θ x) over ``n_angles`` equally spaced angles θ ∈ [0, 2π), averaged over the points and divided by the
target RMS (:func:`ntk.metrics.orbit_spread` with the dense C_{n_angles} as the "orbit"). Evaluation points:
radius 0.5-3 (where the data are) and 4-8 (off the data).

Metrics: ``inv_err_so2_k{k}`` -- the infinite ensemble mu_t (f̄_t of the lemma; deterministic, float64),
``inv_err_so2_ens_k{k}`` / ``inv_err_so2_member_k{k}`` -- the finite ensemble mean / its members, plus
``..._ood`` variants for the far points and ``kappa_k{k}``.

Run::

  python -m experiments.continuous_rotations --quick --workdir runs/continuous_rotations_quick
  # full: 5 training sets, depth 1, M = 64, 2,000 steps, 128 + 128 points x 64 angles (minutes on 2 cores);
  # depth 2 with M = 256 (--set depth=2 --set n_members=256) takes hours.
  python -m experiments.continuous_rotations --workdir runs/continuous_rotations

Expected: ``inv_err_so2_k{k}`` falls with k (roughly like κ ∝ 1/k, faster once the orbits are dense
compared with the kernel's angular resolution); the finite ensemble follows until it reaches its
finite-M floor (members' error / sqrt(M)); mu_t is exactly invariant on its own C_k.
Results: ``results/continuous_rotations/*.json`` (written with ``--record``) and the README's tables generated
from them.
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
  c.ks = (2, 4, 8, 16)
  c.n_points = 10            # training points before augmentation (x k)
  c.n_datasets = 3 if quick else 5  # independent training sets; errors are averaged over them
  c.n_eval = 48 if quick else 128
  c.n_angles = 64            # dense SO(2) test rotations
  c.width = 512
  c.depth = 1  # depth 2 at M = 256 makes every (set, k) training far slower, impractical for the full grid on CPU
  c.b_std = 1.0
  c.n_members = 64
  c.lr_fraction = 1.0
  c.steps = 300 if quick else 2000
  return c


def target(x: np.ndarray) -> np.ndarray:
  """f*(x) = sin(2|x|), SO(2)-invariant; ``(n, 2) -> (n, 1)``."""
  return np.sin(2 * np.hypot(x[:, 0], x[:, 1]))[:, None]


def kappa(k: int) -> float:
  """max over SO(2) of the operator-norm distance to the nearest element of C_k: 2 sin(π / 2k)."""
  return float(2 * np.sin(np.pi / (2 * k)))


def run(c: ml_collections.ConfigDict, workdir: str) -> dict:
  t0 = time.perf_counter()
  rng = np.random.default_rng(c.seed)
  dense = groups.rotations_2d_points(c.n_angles)  # the SO(2) probe: n_angles equally spaced rotations
  sets = {"test": datasets.annulus_points(rng, c.n_eval, 0.5, 3.0),
          "ood": datasets.annulus_points(rng, c.n_eval, 4.0, 8.0)}
  x_eval = np.concatenate([np.asarray(dense.orbit(x)).reshape(-1, 2) for x in sets.values()]).astype(np.float32)
  n_a, n = c.n_angles, c.n_eval
  split = lambda f: {name: groups.split_orbit(f[..., i * n_a * n:(i + 1) * n_a * n, :], n_a, axis=-2)
                     for i, name in enumerate(sets)}
  spec = ArchSpec(kind="mlp", width=c.width, depth=c.depth, out_dim=1, b_std=c.b_std or None)
  # errs[(who, k, set)]: one value per training set (averaged by _aggregate).
  errs: dict[tuple, list] = {}
  for d in range(c.n_datasets):
    x_tr = datasets.annulus_points(rng, c.n_points, 0.5, 3.0).astype(np.float32)
    for i, k in enumerate(c.ks):
      key = jax.random.fold_in(jax.random.PRNGKey(c.seed), 100 * d + i)
      _train_and_score(c, spec, x_tr, k, x_eval, split, dense, key, f"set {d} C{k}", errs)
  out, rows = _aggregate(c, errs, sets)
  ks = np.asarray(c.ks, float)
  mus = np.asarray([out[f"inv_err_so2_k{k}"] for k in c.ks])
  out["so2_slope_vs_k"] = float(np.polyfit(np.log(ks), np.log(mus), 1)[0])
  out["so2_monotone_decreasing"] = int(bool(np.all(np.diff(mus) < 0)))
  _figure(c, workdir, out)
  out["wall_seconds"] = time.perf_counter() - t0
  _summary(c, workdir, out, rows)
  return out


def _train_and_score(c, spec, x_tr, k, x_eval, split, dense, key, progress, errs) -> None:
  """Trains mu_t and an M-member ensemble on the C_k orbit of ``x_tr`` and appends their SO(2) invariance
  errors (and mu_t's on its own C_k) to ``errs[(who, k, set)]``."""
  n_a = c.n_angles
  kernel_fn = spec.stax()[2]
  group = groups.rotations_2d_points(k)
  x_aug, y_aug = groups.augment_full_orbit(group, x_tr, target(x_tr).astype(np.float32))
  scale = float(np.sqrt(np.mean(y_aug ** 2)))
  lr = kernels.stable_lr(kernel_fn, x_aug, 1, c.lr_fraction)
  mu = split(kernels.infinite_ensemble_predict(kernel_fn, x_aug, y_aug, x_eval, [lr * c.steps],
                                               learning_rate=lr).mean[0])
  f = split(ens.gd_ensemble_snapshots(spec.flax(), x_aug, y_aug, x_eval, [c.steps], lr, c.n_members, key,
                                      progress=progress)[c.steps])  # {set: (M, n_angles, n, 1)}
  for name in f:
    add = lambda who, e: errs.setdefault((who, k, name), []).append(e)
    add("mu", metrics.invariance_error(mu[name], dense, scale))
    both = metrics.member_and_ensemble(metrics.invariance_error, f[name], dense, scale)
    add("ens", both["ensemble"])
    add("member", both["member_mean"])
    if n_a % k == 0:
      # Sanity: on its own subgroup C_k (every (n_angles / k)-th probe angle) mu_t is exactly invariant.
      add("ck_mu", metrics.invariance_error(mu[name][:: n_a // k], group, scale))


def _aggregate(c, errs, sets) -> tuple[dict, list]:
  """Metrics (means over the training sets; the C_k check: max) and summary-table rows from ``errs``."""
  out, rows = {}, []
  for k in c.ks:
    out[f"kappa_k{k}"] = kappa(k)
    for name in sets:
      sfx = "" if name == "test" else "_ood"
      mean = {who: float(np.mean(errs[(who, k, name)])) for who in ("mu", "ens", "member")}
      out[f"inv_err_so2_k{k}{sfx}"] = mean["mu"]
      out[f"inv_err_so2_ens_k{k}{sfx}"] = mean["ens"]
      out[f"inv_err_so2_member_k{k}{sfx}"] = mean["member"]
      if ("ck_mu", k, name) in errs:
        out[f"inv_err_ck_mu_k{k}{sfx}"] = float(np.max(errs[("ck_mu", k, name)]))
      rows.append((k, name, kappa(k), mean["member"], mean["ens"], mean["mu"]))
  return out, rows


def _figure(c, workdir, out):
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  ks = np.asarray(c.ks)
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
  for ax, sfx, title in ((axes[0], "", "near the data (radius 0.5-3)"), (axes[1], "_ood", "off the data (radius 4-8)")):
    ax.loglog(ks, [out[f"inv_err_so2_member_k{k}{sfx}"] for k in ks], "o:", label="members (mean)")
    ax.loglog(ks, [out[f"inv_err_so2_ens_k{k}{sfx}"] for k in ks], "s-", label=f"ensemble (M={c.n_members})")
    ax.loglog(ks, [out[f"inv_err_so2_k{k}{sfx}"] for k in ks], "k^-", label="NTK $\\mu_t$ (infinite ensemble)")
    ref = out[f"inv_err_so2_k{ks[0]}{sfx}"] / kappa(ks[0])
    ax.loglog(ks, [ref * kappa(k) for k in ks], "--", color="gray", lw=1, label="∝ κ = 2 sin(π/2k)")
    ax.set_xticks(ks, [f"C{k}" for k in ks])
    ax.set_xlabel("augmentation group")
    ax.set_title(title)
  axes[0].set_ylabel("SO(2) invariance error / target RMS")
  axes[0].legend(fontsize=8)
  cli.save_figure(fig, workdir, "so2_invariance_vs_k")


def _summary(c, workdir, out, rows):
  text = "\n".join([
      "# Partial augmentation: C_k ⊂ SO(2)",
      "",
      f"{c.n_points} points x k rotations, radial target sin(2|x|); MLP width {c.width}, depth {c.depth}, NTK "
      f"parameterization, M = {c.n_members}, {c.steps} GD steps. SO(2) invariance error: spread over "
      f"{c.n_angles} angles / target RMS, averaged over {c.n_datasets} random training sets.",
      "",
      cli.markdown_table(rows, ["k", "points", "κ", "members", "ensemble", "NTK mu_t"]),
      "",
      f"Slope of log(mu_t error) vs log k: {out['so2_slope_vs_k']:.2f} (κ ∝ 1/k gives -1).",
      "",
      "![so2](so2_invariance_vs_k.png)",
  ])
  cli.write_summary(workdir, text)


if __name__ == "__main__":
  cli.main(get_config, run, name="continuous_rotations")
