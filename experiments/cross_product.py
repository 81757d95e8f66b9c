"""SO(3)-equivariant regression of the cross product with MLP ensembles and cube-group augmentation.

Gerken & Kessel (ICLR-2024 version, Appendix C / Fig. 10): ensembles of fully-connected networks predicting
``y = a × b`` from ``x = (a, b) ∈ R^6``, trained with "a small finite subset of the continuous symmetry
group", are "significantly more equivariant than the predictions of their ensemble members … on- as well
as off manifold".

- data: ``a, b`` uniform on the unit sphere (the data manifold S² × S²), ``n_train`` pairs plus their orbits
  under the 24 rotations of the cube (rho_X = R ⊕ R, rho_Y = R; :func:`ntk.groups.cube_group_so3`);
- members: MLPs (NTK parameterization, zero-mean init), full-batch GD on MSE (``t = lr * steps``);
- reference: the infinite ensemble mu_t (:func:`ntk.kernels.infinite_ensemble_predict`; the cube group is
  non-abelian, so the dense solve);
- equivariance error under *Haar-random* rotations R ∈ SO(3) (``scipy.spatial.transform.Rotation.random``),
  ``mean ||f(R a, R b) − R f(a, b)|| / target RMS``, on held-out pairs from S² × S² (on-manifold) and on
  Gaussian pairs ``a, b ~ N(0, 2² I)`` (off-manifold: norms far from 1). The cube group itself is only a
  finite subgroup: mu_t is exactly equivariant under it (``equiv_err_cube_mu`` ~ 1e-15) but only
  approximately under SO(3) (Lemma 6.2: error ≤ C(x) κ).

Run::

  python -m experiments.cross_product --quick --workdir runs/cross_product_quick   # depth 1, M = 32
  python -m experiments.cross_product --workdir runs/cross_product                 # depth 2, width 256, M = 100

Expected: ``equiv_err_ensemble`` below ``equiv_err_member`` by about sqrt(M), on and off the manifold;
``equiv_err_mu`` small but not zero (the SO(3)-vs-cube residual of the infinite ensemble); the cube-group
error of mu_t at float64 round-off.
Results: ``results/cross_product/*.json`` (written with ``--record``) and the README's tables generated from them.
"""

from __future__ import annotations

import time

import jax
import ml_collections
import numpy as np
from scipy.spatial.transform import Rotation

from infra import cli
from ntk import ensemble as ens
from ntk import datasets, groups, kernels, metrics
from ntk.architectures import ArchSpec


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.n_train = 16                       # pairs before augmentation (x 24 cube rotations = 384 points)
  c.n_test = 64 if quick else 256
  c.n_rotations = 8                     # Haar-random rotations per test pair
  c.ood_scale = 2.0
  c.width = 256
  c.depth = 1 if quick else 2
  c.b_std = 0.0                         # 0: no biases (the target is odd in a and in b)
  c.n_members = 32 if quick else 100
  c.lr_fraction = 1.0
  c.steps = (0, 10, 100, 1000)
  return c


def _cross(x: np.ndarray) -> np.ndarray:
  """The target ``a x b`` of pairs ``x (n, 6)`` -> ``(n, 3)`` float32."""
  return np.cross(x[:, :3], x[:, 3:]).astype(np.float32)


def run(c: ml_collections.ConfigDict, workdir: str) -> dict:
  t0 = time.perf_counter()
  rng = np.random.default_rng(c.seed)
  group = groups.cube_group_so3("cross_product")
  x_tr = datasets.unit_sphere_pairs(rng, c.n_train).astype(np.float32)
  x_aug, y_aug = groups.augment_full_orbit(group, x_tr, _cross(x_tr))
  sets = {"test": datasets.unit_sphere_pairs(rng, c.n_test), "ood": c.ood_scale * rng.standard_normal((c.n_test, 6))}
  rots = Rotation.random(c.n_rotations, random_state=c.seed).as_matrix()  # Haar on SO(3)
  x_eval, split = _evaluation_inputs(sets, rots, group)
  scale = float(np.sqrt(np.mean(np.sum(y_aug ** 2, axis=-1))))
  spec = ArchSpec(kind="mlp", width=c.width, depth=c.depth, out_dim=3, b_std=c.b_std or None)
  kernel_fn = spec.stax()[2]
  lr = kernels.stable_lr(kernel_fn, x_aug, 3, c.lr_fraction)
  steps = list(c.steps)
  ts = lr * np.asarray(steps, np.float64)
  mu = split(kernels.infinite_ensemble_predict(kernel_fn, x_aug, y_aug, x_eval, ts, learning_rate=lr).mean)
  preds = ens.gd_ensemble_snapshots(spec.flax(), x_aug, y_aug, x_eval, steps, lr, c.n_members,
                                    jax.random.PRNGKey(c.seed), progress="cross product")
  out, curves = {"lr": lr, "n_members": c.n_members}, {}
  for name, x in sets.items():
    member_preds = [split(preds[s])[name] for s in steps]
    out.update(_set_metrics(name, _cross(x.astype(np.float32)), member_preds, mu[name], group, rots, scale, curves))
  out["ensemble_equivariance_gain"] = out["equiv_err_member"] / out["equiv_err_ensemble"]
  out["ensemble_equivariance_gain_ood"] = out["equiv_err_member_ood"] / out["equiv_err_ensemble_ood"]
  _figure(c, workdir, ts, curves)
  out["wall_seconds"] = time.perf_counter() - t0
  _summary(c, workdir, out, lr, steps)
  return out


def _evaluation_inputs(sets, rots, group):
  """All evaluation inputs in one array and ``split``: per set, x's Haar rotations and its cube orbit (element 0 =
  identity = x itself). ``split(f)`` maps predictions ``(..., B, 3)`` to ``{set: (haar (..., r, n, 3), cube
  (..., k, n, 3))}``."""
  blocks = []
  for x in sets.values():
    blocks += [groups.rotate_pairs(rots, x).reshape(-1, 6),
               np.asarray(group.orbit(x.astype(np.float32))).reshape(-1, 6)]
  x_eval = np.concatenate(blocks).astype(np.float32)
  n, r, k = len(next(iter(sets.values()))), len(rots), group.order
  bounds = np.cumsum([0] + [r * n, k * n] * len(sets))

  def split(f):
    parts = [f[..., a:b, :] for a, b in zip(bounds[:-1], bounds[1:])]
    return {name: (parts[2 * i].reshape(f.shape[:-2] + (r, n, 3)), parts[2 * i + 1].reshape(f.shape[:-2] + (k, n, 3)))
            for i, name in enumerate(sets)}

  return x_eval, split


def _set_metrics(name, y_true, member_preds, mu, group, rots, scale, curves) -> dict:
  """Equivariance errors of members, ensemble and mu_t on one evaluation set at every step (appended to
  ``curves[(who, name)]``), the final ones as metrics, the cube-group errors and the relative RMSEs.

  Args: ``member_preds`` per step ``(haar (M, r, n, 3), cube (M, k, n, 3))``; ``mu`` = ``(haar (T, r, n, 3),
  cube (T, k, n, 3))``.
  """
  for j, (haar, cube) in enumerate(member_preds):
    fx = cube[:, 0]  # identity element: f(x)
    e_mem = float(np.mean([metrics.so3_equivariance_error(haar[m], fx[m], rots, scale) for m in range(len(fx))]))
    e_ens = metrics.so3_equivariance_error(haar.mean(0), fx.mean(0), rots, scale)
    e_mu = metrics.so3_equivariance_error(mu[0][j], mu[1][j][0], rots, scale)
    for who, e in (("member", e_mem), ("ensemble", e_ens), ("mu", e_mu)):
      curves.setdefault((who, name), []).append(e)
  suffix = "" if name == "test" else "_ood"
  out = {f"equiv_err_{who}{suffix}": curves[(who, name)][-1] for who in ("member", "ensemble", "mu")}
  # Exactly equivariant under the cube group: mu_t (float64); the finite ensemble only up to 1/sqrt(M).
  out[f"equiv_err_cube_mu{suffix}"] = metrics.invariance_error(mu[1][-1], group, scale)
  out[f"equiv_err_cube_ensemble{suffix}"] = metrics.invariance_error(member_preds[-1][1].mean(0), group, scale)
  fx_final = member_preds[-1][1][:, 0]
  out[f"rmse_ensemble{suffix}"] = float(np.sqrt(np.mean(np.sum((fx_final.mean(0) - y_true) ** 2, -1))) / scale)
  out[f"rmse_mu{suffix}"] = float(np.sqrt(np.mean(np.sum((mu[1][-1][0] - y_true) ** 2, -1))) / scale)
  return out


def _figure(c, workdir, ts, curves):
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  t = np.maximum(ts, ts[1] / 3)
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
  for ax, name, title in ((axes[0], "test", "on-manifold (S² × S²)"), (axes[1], "ood", "off-manifold (Gaussian)")):
    for who, style, label in (("member", "o:", "members (mean)"), ("ensemble", "s-", f"ensemble (M={c.n_members})"),
                              ("mu", "k^-", "NTK $\\mu_t$")):
      ax.loglog(t, np.maximum(curves[(who, name)], 1e-17), style, label=label)
    ax.set_title(title)
    ax.set_xlabel("training time t = lr · steps (t = 0 drawn left)")
  axes[0].set_ylabel("SO(3) equivariance error / target RMS")
  axes[0].legend(fontsize=8)
  fig.suptitle(f"cross product, MLP width {c.width}, 24-element cube-group augmentation, Haar-random test rotations")
  cli.save_figure(fig, workdir, "cross_product_equivariance")


def _summary(c, workdir, out, lr, steps):
  rows = []
  for suffix, name in (("", "on-manifold"), ("_ood", "off-manifold")):
    rows.append((name, out[f"equiv_err_member{suffix}"], out[f"equiv_err_ensemble{suffix}"],
                 out[f"equiv_err_mu{suffix}"], out[f"equiv_err_cube_ensemble{suffix}"],
                 out[f"equiv_err_cube_mu{suffix}"]))
  text = "\n".join([
      "# Cross product: SO(3) equivariance from cube-group augmentation",
      "",
      f"{c.n_train} pairs (a, b) on S² × S² x 24 cube rotations; MLP width {c.width}, depth {c.depth}, NTK "
      f"parameterization, M = {c.n_members}, full-batch GD (lr {lr:.3g}, {steps[-1]} steps). Errors: mean "
      f"||f(Ra, Rb) − R f(a, b)|| / target RMS over {c.n_rotations} Haar-random R per test pair.",
      "",
      cli.markdown_table(rows, ["inputs", "SO(3): members", "SO(3): ensemble", "SO(3): NTK mu_t",
                                "cube: ensemble", "cube: NTK mu_t"]),
      "",
      f"Ensemble gain (member / ensemble): {out['ensemble_equivariance_gain']:.3g} on-manifold, "
      f"{out['ensemble_equivariance_gain_ood']:.3g} off-manifold. Relative RMSE of the ensemble: "
      f"{out['rmse_ensemble']:.3g} on-manifold, {out['rmse_ensemble_ood']:.3g} off-manifold.",
      "",
      "![equivariance](cross_product_equivariance.png)",
  ])
  cli.write_summary(workdir, text)


if __name__ == "__main__":
  cli.main(get_config, run, name="cross_product")
