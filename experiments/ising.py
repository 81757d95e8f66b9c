"""Ising model: regression of the energy with MLP ensembles trained on C4-augmented lattice configurations.

Experiment E1 of Gerken & Kessel (ICML 2024, arXiv 2403.03103), including the seed's "Out of Distribution Data" plot:
the invariance error of the infinite ensemble (NTK mu_t) and of finite ensembles of widths 512 / 1024 /
2048 against training time, on off-manifold inputs.

- data: L x L periodic Ising configurations sampled at temperatures around T_c = 2.269 with our own
  vectorized Monte-Carlo sampler (:mod:`ntk.ising`, heat-bath colour-class updates, deterministic by
  seed); target: the energy per bond, ``y = E(s) / (2 L^2)`` in [-1, 1] (invariant);
- group: lattice rotations C4 (``--set reflections=True`` for D4, ``--set translations=True`` for the
  translations too; :func:`ntk.groups.ising_lattice_group`), full-orbit augmentation;
- members: MLPs (NTK parameterization, zero-mean init), full-batch GD on MSE, ``t = lr * steps``;
- reference: mu_t of the same architecture (:func:`ntk.blockcirc.augmented_ensemble_predict`: block-
  circulant solve for the cyclic C4, dense fallback for D4 / translations);
- evaluation: held-out configurations (on-manifold, fresh sampler seed) and Gaussian-noise "lattices"
  (off-manifold, N(0, 1) entries), each with its group orbit. Invariance error = mean orbit spread of the
  prediction / target RMS (``ntk.metrics.invariance_error``).

Run::

  python -m experiments.ising --quick --workdir runs/ising_quick   # L=4, 64 configs, M=16
  # full: L=5, 256 configs x C4, depth 1, widths 512-2048, M=32, 1,000 steps
  python -m experiments.ising --workdir runs/ising

Expected: ``inv_err_ood_ntk`` at float64 round-off (mu_t is invariant at every t, also off-manifold); finite
ensembles below their members by about sqrt(M) at every width, because the infinite-M ensemble of
finite-width networks is already invariant (the Gaussian first layer's distribution is permutation
invariant), so width barely matters.
Results: ``results/ising/*.json`` (written with ``--record``) and the README's tables generated from them.
"""

from __future__ import annotations

import math
import time

import jax
import ml_collections
import numpy as np

from infra import cli
from ntk import blockcirc, groups, ising, kernels, metrics
from ntk import ensemble as ens
from ntk.architectures import ArchSpec


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.L = 4 if quick else 5
  c.t_min, c.t_max, c.n_temperatures = 1.5, 3.5, 8
  c.n_train = 64 if quick else 256          # configurations before augmentation
  c.n_test = 64 if quick else 128
  c.n_ood = 64 if quick else 128
  c.burn_in = 300
  c.reflections = False
  c.translations = False
  c.widths = (512, 1024, 2048)
  c.depth = 1                             # 2 hidden layers cost width^2 per input: hours at 2048
  c.b_std = 0.0                           # 0: no biases
  c.n_members = 16 if quick else 32
  c.lr_fraction = 1.0
  # Ordered configurations repeat (all up / all down) and their C4 orbits contain the same lattice 4 times:
  # the kernel matrix is exactly singular. A tiny ridge (relative to the mean diagonal) keeps mu_t finite
  # without changing it visibly at the times we look at.
  c.diag_reg = 1e-8
  c.steps = (0, 3, 10, 30, 100, 300) if quick else (0, 3, 10, 30, 100, 300, 1000)
  return c


def _configs(c, n: int, seed: int) -> np.ndarray:
  """``n`` configurations spread over the temperature grid, ``(n, L, L)`` float32 of +-1."""
  temps = ising.temperature_grid(c.n_temperatures, c.t_min, c.t_max)
  per_t = -(-n // len(temps))
  s, _ = ising.sample_ising(c.L, temps, per_t, seed=seed, burn_in=c.burn_in)
  idx = np.random.default_rng(seed).permutation(len(s))[:n]
  return s[idx].astype(np.float32)


def run(c: ml_collections.ConfigDict, workdir: str) -> dict:
  t0 = time.perf_counter()
  group = groups.ising_lattice_group(c.L, rotations=True, reflections=c.reflections, translations=c.translations)
  x_tr, y_tr, x_aug, y_aug, x_eval, y_te, split = _data(c, group)
  scale = float(np.sqrt(np.mean(y_aug ** 2)))
  out = {"group_order": group.order, "target_rms": scale}
  sampling_s = time.perf_counter() - t0

  spec = lambda w: ArchSpec(kind="mlp", width=w, depth=c.depth, out_dim=1, b_std=c.b_std or None)
  lr, mu, curves, ntk_out = _ntk_reference(c, spec(c.widths[0]).stax()[2], group, x_tr, y_tr, x_aug, x_eval,
                                           y_te, split, scale)
  out.update(ntk_out)
  steps, ts = list(c.steps), lr * np.asarray(c.steps, np.float64)
  for i, w in enumerate(c.widths):
    preds = ens.gd_ensemble_snapshots(spec(w).flax(), x_aug, y_aug, x_eval, steps, lr, c.n_members,
                                      jax.random.fold_in(jax.random.PRNGKey(c.seed), i), progress=f"width {w}")
    out.update(_width_metrics(w, [split(preds[s]) for s in steps], mu, y_te, group, scale, curves))
  out.update(test_rmse_ensemble=out[f"test_rmse_ensemble_w{c.widths[-1]}"], lr=lr, sampling_seconds=sampling_s)
  _figures(c, workdir, ts, curves)
  out["wall_seconds"] = time.perf_counter() - t0
  _summary(c, workdir, out, group, lr)
  return out


def _ntk_reference(c, kernel_fn, group, x_tr, y_tr, x_aug, x_eval, y_te, split, scale):
  """The infinite ensemble of the augmented training (block-circulant solve) at ``t = lr * steps``: ``(lr, mu,
  curves, metrics)`` with ``mu = {set: (T, k, n, 1)}`` and its invariance error per step in
  ``curves[("ntk", set)]``."""
  lr = kernels.stable_lr(kernel_fn, x_aug, 1, c.lr_fraction)
  ts = lr * np.asarray(c.steps, np.float64)
  pred = blockcirc.augmented_ensemble_predict(kernel_fn, group, x_tr, y_tr, x_eval, ts,
                                              diag_reg=c.diag_reg, learning_rate=lr)
  mu = split(pred.mean)
  curves = {("ntk", name): [metrics.invariance_error(m_t, group, scale) for m_t in mu[name]] for name in mu}
  out = {"ntk_solver_blockcirc": int(pred.method == "blockcirc"),
         "inv_err_ood_ntk": curves[("ntk", "ood")][-1], "inv_err_test_ntk": curves[("ntk", "test")][-1],
         "test_rmse_ntk": float(np.sqrt(np.mean((mu["test"][-1][0] - y_te) ** 2)))}
  return lr, mu, curves, out


def _data(c, group):
  """Training configurations and energies (also augmented), the group orbits of the test configurations and
  of Gaussian off-manifold "lattices" as one evaluation array, the test energies, and ``split``: predictions
  ``(..., B, 1)`` -> ``{"test" | "ood": (..., k, n, 1)}``."""
  energy = lambda s: (ising.ising_energy(s) / (2 * c.L ** 2)).astype(np.float32)[:, None]
  x_tr = _configs(c, c.n_train, c.seed)
  x_aug, y_aug = groups.augment_full_orbit(group, x_tr, energy(x_tr))
  x_te = _configs(c, c.n_test, c.seed + 1000)
  x_ood = np.random.default_rng(c.seed + 2000).standard_normal((c.n_ood, c.L, c.L)).astype(np.float32)
  k = group.order
  orbits = {"test": np.asarray(group.orbit(x_te)), "ood": np.asarray(group.orbit(x_ood))}  # (k, n, L, L)
  x_eval = np.concatenate([o.reshape(-1, c.L, c.L) for o in orbits.values()])
  n_te = k * c.n_test
  split = lambda f: {"test": groups.split_orbit(f[..., :n_te, :], k, axis=-2),
                     "ood": groups.split_orbit(f[..., n_te:, :], k, axis=-2)}
  return x_tr, energy(x_tr), x_aug, y_aug, x_eval, energy(x_te), split


def _width_metrics(w, member_preds, mu, y_te, group, scale, curves) -> dict:
  """Invariance errors (test and off-manifold, every step; appended to ``curves``) and test RMSEs of the
  width-``w`` ensemble and its members; ``member_preds`` per step ``{set: (M, k, n, 1)}``, ``mu`` ``{set: (T, k,
  n, 1)}``."""
  out = {}
  for name in ("test", "ood"):
    both = [metrics.member_and_ensemble(metrics.invariance_error, p[name], group, scale) for p in member_preds]
    ens_curve, mem_curve = [b["ensemble"] for b in both], [b["member_mean"] for b in both]
    curves[(f"w{w}", name)], curves[(f"w{w}_member", name)] = ens_curve, mem_curve
    out[f"inv_err_{name}_w{w}"] = ens_curve[-1]
    out[f"inv_err_{name}_member_w{w}"] = mem_curve[-1]
  f_te = member_preds[-1]["test"][:, 0]  # (M, n, 1), identity element
  out[f"test_rmse_ensemble_w{w}"] = float(np.sqrt(np.mean((f_te.mean(0) - y_te) ** 2)))
  out[f"test_rmse_member_w{w}"] = float(np.mean(np.sqrt(np.mean((f_te - y_te[None]) ** 2, axis=(1, 2)))))
  out[f"ens_vs_mu_relerr_test_w{w}"] = metrics.relative_error(f_te.mean(0), mu["test"][-1][0])
  return out


def _figures(c, workdir, ts, curves):
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  t = np.maximum(ts, ts[1] / 3)  # t = 0 drawn just left of the first positive time
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
  for ax, name, title in ((axes[0], "ood", "Out of distribution data"), (axes[1], "test", "Test data")):
    ax.semilogx(t, np.maximum(curves[("ntk", name)], 1e-17), "k^-", label="NTK $\\mu_t$")
    for i, w in enumerate(c.widths):
      ax.semilogx(t, curves[(f"w{w}", name)], "o-", color=f"C{i}", label=f"ensemble, width {w}")
      ax.semilogx(t, curves[(f"w{w}_member", name)], ":", color=f"C{i}", lw=1,
                  label="members (mean)" if i == len(c.widths) - 1 else None)
    ax.set_yscale("log")
    ax.set_xlabel("training time t = lr · steps")
    ax.set_title(title)
  axes[0].set_ylabel("invariance error (orbit spread / target RMS)")
  axes[1].legend(fontsize=7)
  fig.suptitle(f"Ising {c.L}x{c.L}, energy regression, C4-augmented, M = {c.n_members}")
  cli.save_figure(fig, workdir, "ising_invariance_vs_time")


def _summary(c, workdir, out, group, lr):
  rows = [("NTK mu_t", "inf", out["inv_err_test_ntk"], out["inv_err_ood_ntk"], out["test_rmse_ntk"])]
  for w in c.widths:
    rows.append((f"ensemble (M={c.n_members})", w, out[f"inv_err_test_w{w}"], out[f"inv_err_ood_w{w}"],
                 out[f"test_rmse_ensemble_w{w}"]))
    rows.append(("member (mean)", w, out[f"inv_err_test_member_w{w}"], out[f"inv_err_ood_member_w{w}"],
                 out[f"test_rmse_member_w{w}"]))
  text = "\n".join([
      f"# Ising {c.L}x{c.L}: energy regression with {group.name} augmentation",
      "",
      f"{c.n_train} configurations (x {group.order} group elements) at {c.n_temperatures} temperatures in "
      f"[{c.t_min}, {c.t_max}] (T_c = {ising.T_CRITICAL:.3f}); target E / (2 L^2). MLP depth {c.depth}, NTK "
      f"parameterization, full-batch GD, lr {lr:.3g}, final t = {lr * c.steps[-1]:.3g}. Off-manifold inputs: "
      "N(0, 1) lattices. Invariance error = mean orbit spread / target RMS.",
      "",
      cli.markdown_table(rows, ["predictor", "width", "inv. err. test", "inv. err. off-manifold",
                                "test RMSE"]),
      "",
      "![ood](ising_invariance_vs_time.png)",
  ])
  cli.write_summary(workdir, text)


if __name__ == "__main__":
  cli.main(get_config, run, name="ising")
