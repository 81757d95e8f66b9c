"""Width where width matters: the infinite-ensemble invariance error of CNN ensembles vs width, for inits
that are and are not symmetric under the group.

Gerken & Kessel (ICML 2024, arXiv 2403.03103) prove that the ensemble mean of networks trained on the full
group orbit tends, as M -> infinity *and* width -> infinity, to mu_t, invariant when the NTK is. For
pixel permutations (rot90) acting on CNNs with i.i.d. zero-mean init and rot90-symmetric filter supports
the map ``W1 -> W1 rho(g)`` is a symmetry of the init distribution and of GD on the full orbit, so the
M -> infinity ensemble is invariant at every width (Nordenfors & Flinth, "Ensembles provably learn
equivariance through data augmentation", arXiv 2410.01452, whose code compares "sym" and "asym" filter
supports). Width then only matters where the init is not symmetric:

- ``sym`` (control): C4 by rot90, 3x3 filters, SAME padding: exactly invariant at every width, so its
  infinite-ensemble error must be flat (at the estimator's noise) in width;
- ``asym``: C4 by rot90, 2x2 filters (support {0,1}^2 with SAME padding; rot90 maps it to another support):
  neither the init nor the NTK is invariant; the ensemble's error must approach mu_t's as width grows;
- ``c8``: C8 by bilinear rotation of zero-padded digits, 3x3 filters: interpolation is not a permutation, so
  neither init nor kernel is exactly invariant; same question as ``asym``.

Data: scikit-learn's 8x8 digits (centred one-hot targets, MSE), ``n_train`` digits times the k group
elements; evaluation on the orbits of ``n_test`` held-out digits. Members: one-layer ReLU CNNs, flatten
readout, NTK parameterization (:class:`ntk.architectures.ArchSpec`), M members trained by full-batch GD
(vmapped, :func:`ntk.ensemble.gd_ensemble_snapshots`) at ``lr = lr_fraction * N / lambda_max``. Reference:
discrete-time mu_t at the same step (:func:`ntk.kernels.infinite_ensemble_predict` with ``learning_rate``).
The finite-M part is removed with :func:`ntk.metrics.infinite_ensemble_invariance_error` (cross products of
disjoint sub-ensembles: an unbiased estimate of the M -> infinity ensemble's squared orbit deviation).

Keys: ``{sym,asym,c8}_inv_err_w<width>`` (finite-M part removed, RMS orbit deviation / target RMS),
``..._wmin`` / ``..._wmax`` for the smallest / largest width (also for ``gap_to_mu``),
``{sym,asym,c8}_naive_inv_err_w<width>`` (the M-member mean, floor included), ``{sym,asym,c8}_member_inv_err_w<width>``, ``{sym,asym,c8}_ens_vs_mu_w<width>``
(relative distance of the M-member mean to mu_t), ``{sym,asym,c8}_gap_to_mu_w<width>`` (|M -> inf error -
mu_t's error|), ``mu_inv_err`` (mu_t of ``asym``), ``{sym,c8}_mu_inv_err``.

What the sub-ensemble estimate can resolve: its own noise is ~ the finite-M floor times (2 / (K (K - 1)))^(1/4)
(K sub-ensembles), so the ``sym`` control, exact in theory, measures that noise; compare ``asym`` / ``c8``
against it. mu_t itself is not invariant for ``asym`` (the kernel of a non-rot90-symmetric support is not
invariant) nor for ``c8`` (interpolation), so "towards mu_t" is the claim, not "towards 0".

Run::

  python -m experiments.width_sweep --quick --workdir runs/width_sweep_quick
  python -m experiments.width_sweep --workdir runs/width_sweep
"""

from __future__ import annotations

import time

import jax
import ml_collections
import numpy as np

from infra import cli
from infra.bundled_data import load_digits8
from ntk import ensemble as ens
from ntk import groups, kernels, metrics
from ntk.architectures import ArchSpec

# setting -> (group order k, filter side, image side after zero padding)
SETTINGS = {"sym": (4, 3, 8), "asym": (4, 2, 8), "c8": (8, 3, 12)}


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.settings = ("sym", "asym") if quick else ("sym", "asym", "c8")
  c.n_train = 8 if quick else 16   # digits; x k group elements
  c.n_test = 24 if quick else 48
  c.widths = (8, 32) if quick else (8, 32, 128, 512)
  c.n_members = 128 if quick else 256
  c.sub_ensemble = 16              # members per sub-ensemble (M / sub_ensemble independent estimates)
  c.steps = 20 if quick else 200
  c.lr_fraction = 1.0
  return c


def _data(c, side: int):
  images, labels = load_digits8()
  rng = np.random.default_rng(c.seed)
  idx = rng.permutation(len(labels))
  tr, te = idx[: c.n_train], idx[c.n_train: c.n_train + c.n_test]
  mean, std = images[tr].mean(), images[tr].std()
  pad = (side - 8) // 2
  norm = lambda a: np.pad((a - mean) / std, ((0, 0), (pad, pad), (pad, pad)))[..., None].astype(np.float32)
  return norm(images[tr]), (np.eye(10, dtype=np.float32)[labels[tr]] - 0.1), norm(images[te])


def run(c: ml_collections.ConfigDict, workdir: str) -> dict:
  t0 = time.perf_counter()
  unknown = set(c.settings) - set(SETTINGS)
  if unknown:
    raise ValueError(f"unknown settings {sorted(unknown)}; choose from {sorted(SETTINGS)}.")
  if c.n_members % c.sub_ensemble or c.n_members // c.sub_ensemble < 2:
    raise ValueError(f"n_members={c.n_members} must be a multiple of sub_ensemble={c.sub_ensemble}, at least 2x.")
  out, curves = {}, {}
  for si, name in enumerate(c.settings):
    k, ks, side = SETTINGS[name]
    x_tr, y_tr, x_te = _data(c, side)
    group = groups.rotations_ck(k, x_tr.shape[1:])
    x_aug, y_aug = groups.augment_full_orbit(group, x_tr, y_tr)
    x_aug, y_aug = np.asarray(x_aug, np.float32), np.asarray(y_aug, np.float32)
    x_eval = np.asarray(group.orbit(x_te)).reshape((-1,) + x_te.shape[1:])
    as_orbit = lambda f: f.reshape(f.shape[:-2] + (k, len(x_te), 10))
    scale = float(np.sqrt(np.mean(np.sum(y_aug ** 2, axis=-1))))
    spec = lambda w: ArchSpec(kind="cnn", width=w, depth=1, out_dim=10, kernel_size=ks, readout="flatten")
    kernel_fn = spec(c.widths[0]).stax()[2]
    lr = kernels.stable_lr(kernel_fn, x_aug, 10, c.lr_fraction)
    mu = as_orbit(kernels.infinite_ensemble_predict(kernel_fn, x_aug, y_aug, x_eval, lr * c.steps,
                                                    learning_rate=lr).mean[0])
    out[("" if name == "asym" else f"{name}_") + "mu_inv_err"] = metrics.rms_invariance_error(mu, group, scale)
    out[f"{name}_lr"] = lr
    for w in c.widths:
      key = jax.random.fold_in(jax.random.PRNGKey(c.seed), 1000 * si + w)
      preds = ens.gd_ensemble_snapshots(spec(w).flax(), x_aug, y_aug, x_eval, [c.steps], lr, c.n_members, key,
                                        progress=f"{name} w{w}")[c.steps]
      f = as_orbit(preds)  # (M, k, n, 10)
      subs = ens.sub_ensemble_means(f, c.sub_ensemble)
      out[f"{name}_inv_err_w{w}"] = metrics.infinite_ensemble_invariance_error(subs, group, scale)
      out[f"{name}_naive_inv_err_w{w}"] = metrics.rms_invariance_error(f.mean(0), group, scale)
      out[f"{name}_member_inv_err_w{w}"] = float(np.mean([metrics.rms_invariance_error(m, group, scale)
                                                          for m in f[:16]]))
      out[f"{name}_ens_vs_mu_w{w}"] = metrics.relative_error(f.mean(0), mu)
      out[f"{name}_gap_to_mu_w{w}"] = abs(out[f"{name}_inv_err_w{w}"] - out[_mu_key(name)])
    for end, w in (("wmin", min(c.widths)), ("wmax", max(c.widths))):
      out[f"{name}_inv_err_{end}"] = out[f"{name}_inv_err_w{w}"]
      out[f"{name}_gap_to_mu_{end}"] = out[f"{name}_gap_to_mu_w{w}"]
    curves[name] = [out[f"{name}_inv_err_w{w}"] for w in c.widths]
  out["wall_seconds"] = time.perf_counter() - t0
  _figure(c, workdir, out, curves)
  _summary(c, workdir, out)
  return out


def _mu_key(name: str) -> str:
  return ("" if name == "asym" else f"{name}_") + "mu_inv_err"


def _figure(c, workdir, out, curves):
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(5.2, 3.8))
  for (name, errs), color in zip(curves.items(), ("C0", "C1", "C2")):
    ax.loglog(c.widths, np.maximum(errs, 1e-6), "o-", color=color, label=f"{name}: ensemble, M -> inf estimate")
    ax.axhline(max(out[_mu_key(name)], 1e-6), color=color, ls="--", lw=1, label=f"{name}: NTK $\\mu_t$")
  ax.set_xlabel("CNN width (channels)")
  ax.set_ylabel("RMS orbit deviation / target RMS")
  ax.set_title(f"M = {c.n_members}, step {c.steps} (finite-M part removed)", fontsize=9)
  ax.legend(fontsize=7)
  cli.save_figure(fig, workdir, "width_sweep")


def _summary(c, workdir, out):
  rows = []
  for name in c.settings:
    for w in c.widths:
      rows.append((name, w, out[f"{name}_member_inv_err_w{w}"], out[f"{name}_naive_inv_err_w{w}"],
                   out[f"{name}_inv_err_w{w}"], out[_mu_key(name)], out[f"{name}_ens_vs_mu_w{w}"]))
  text = "\n".join([
      "# Width where width matters",
      "",
      f"8x8 digits, {c.n_train} x k training images, orbits of {c.n_test} test digits; one-layer ReLU CNN, flatten "
      f"readout, NTK parameterization; M = {c.n_members} members, full-batch GD for {c.steps} steps at "
      f"lr = {c.lr_fraction} N / lambda_max; 'M -> inf' removes the finite-M part with sub-ensembles of "
      f"{c.sub_ensemble}. Errors: RMS orbit deviation / target RMS.",
      "",
      cli.markdown_table(rows, ["setting", "width", "members", f"mean of M={c.n_members}", "M -> inf",
                                   "NTK mu_t", "|ens - mu| / |mu|"]),
      "",
      f"Wall time {out['wall_seconds']:.0f} s.",
      "",
      "![width sweep](width_sweep.png)",
  ])
  cli.write_summary(workdir, text)


if __name__ == "__main__":
  cli.main(get_config, run, name="width_sweep")
