"""Width where width matters: the infinite-ensemble invariance error vs width, for inits that are and are not
symmetric under the group, and for NTKs that are and are not invariant.

Gerken & Kessel (ICML 2024, arXiv 2403.03103) prove that the ensemble mean of networks trained on the full
group orbit tends, as M -> infinity *and* width -> infinity, to mu_t, invariant when the NTK is. Whenever a
map of the parameters ``theta -> T_g theta`` with ``f_{T_g theta}(x) = f_theta(rho(g) x)`` preserves the init
distribution, GD on the full orbit commutes with it and the M -> infinity ensemble is invariant at *every*
width (Nordenfors & Flinth, "Ensembles provably learn equivariance through data augmentation", arXiv
2410.01452). Width then only matters where the init is not symmetric but the infinite-width NTK is.

CNN settings (8x8 digits, C4 by rot90 unless named; one-layer ReLU CNN, flatten readout, NTK
parameterization, :class:`ntk.architectures.ArchSpec`):

- ``sym`` (control): 3x3 filters, SAME padding: init symmetric (rot90 of the filters), so exactly invariant
  at every width; its error measures the estimator's noise;
- ``asym``: 2x2 filters, SAME (zero) padding: the zero-padded boundary makes neither the init nor the NTK
  invariant, so mu_t itself is not invariant and "towards mu_t" is not "towards 0";
- ``asym_circ``: 2x2 filters, CIRCULAR padding: rot90 maps the support onto a translate of itself, a
  permutation of hidden positions that the i.i.d. flatten readout absorbs: init symmetric again (isolates
  the padding as the cause in ``asym``);
- ``c8``: C8 by bilinear rotation of zero-padded digits, 3x3 filters (interpolation: neither exact).

Read-in settings (the NTK-specific part; :class:`ntk.architectures.ReadInSpec`): standard-normal 2-D points,
target ``cos 2|x|``, C8 by exact 45-degree rotation matrices; a *linear* read-in ``z = W0 x`` of the named
i.i.d. law, then Dense+ReLU and a linear readout, all widths equal. ``W0 -> W0 R^T`` keeps the normal law,
not the uniform or sparse one (their cubes / axes are only C4-symmetric), while at infinite width the layers
above see ``x.x'`` only, so the NTK and mu_t are exactly invariant; the finite-width asymmetry is a
fourth-cumulant effect of order ``kurtosis / width``:

- ``readin_gauss`` (control): normal law, exactly invariant at every width;
- ``readin_uniform``: U(-sqrt 3, sqrt 3) (PyTorch's default law; excess kurtosis -1.2);
- ``readin_sparse``: ``±4`` with probability 1/16, else 0 (excess kurtosis 13);
- ``relu_sparse``: the sparse law with a ReLU after the read-in: the first layer's kernel depends on the law
  at every width, so width does not restore invariance (no analytic mu_t).

Members are trained by full-batch GD on the full orbit (vmapped, :func:`ntk.ensemble.gd_ensemble_snapshots`);
the finite-M part is removed with :func:`ntk.metrics.infinite_ensemble_invariance_error` (cross products of
disjoint sub-ensembles: unbiased for the squared orbit deviation of the M -> infinity ensemble; clipped at 0
when the estimate is negative). Its own noise is ~ the finite-M floor times (2 / (K (K - 1)))^(1/4) (K
sub-ensembles); the controls measure it. Reference: discrete-time mu_t at the same step
(:func:`ntk.kernels.infinite_ensemble_predict` with ``learning_rate``). Every setting runs for every seed in
``seeds`` (data, init); keys are means over seeds with ``_std`` and ``_seed<s>`` companions.

Keys (``<name>`` a setting): ``<name>_inv_err_w<width>`` (finite-M part removed, RMS orbit deviation / target
RMS), ``<name>_inv_err_{wmin,wmax}``, ``<name>_naive_inv_err_w<width>`` (the M-member mean, floor included),
``<name>_member_inv_err_w<width>``, ``<name>_ens_vs_mu_w<width>`` (relative distance of the M-member mean to
mu_t) and ``<name>_gap_to_mu_w<width>`` where mu_t exists; ``mu_inv_err`` (mu_t of ``asym``),
``{sym,asym_circ,c8}_mu_inv_err``, ``readin_mu_inv_err`` (the linear read-in's mu_t, shared by its laws).

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
from ntk.architectures import ArchSpec, ReadInSpec

# CNN settings on 8x8 digits: name -> (group order k, filter side, image side after zero padding, padding)
CNN_SETTINGS = {"sym": (4, 3, 8, "SAME"), "asym": (4, 2, 8, "SAME"), "asym_circ": (4, 2, 8, "CIRCULAR"),
                "c8": (8, 3, 12, "SAME")}
# Read-in MLP settings on 2-D points under exact C8: name -> (read-in weight law, linear read-in)
READIN_SETTINGS = {"readin_gauss": ("normal", True), "readin_uniform": ("uniform", True),
                   "readin_sparse": ("sparse", True), "relu_sparse": ("sparse", False)}
SETTINGS = {**CNN_SETTINGS, **READIN_SETTINGS}


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seeds = (0, 1, 2)              # data split, init; results are mean +- std over seeds
  c.settings = (("sym", "asym", "readin_gauss", "readin_uniform", "readin_sparse") if quick else
                ("sym", "asym", "asym_circ", "readin_gauss", "readin_uniform", "readin_sparse", "relu_sparse"))
  c.lr_fraction = 1.0              # CNN: lr = lr_fraction * N / lambda_max
  # CNN settings (digits); "c8" runs with --set settings=... (not in the defaults: 2 CPU cores)
  c.n_train = 8                    # digits; x k group elements
  c.n_test = 16 if quick else 24
  c.widths = (8, 16)
  c.n_members = 128 if quick else 256
  c.sub_ensemble = 16              # members per sub-ensemble (M / sub_ensemble independent estimates)
  c.steps = 20
  # read-in settings (2-D points)
  c.readin_n_train = 8             # points; x 8 group elements
  c.readin_n_test = 32
  c.readin_widths = (8, 64) if quick else (8, 16, 32, 64)
  # The sub-ensemble estimator's noise falls like M^-1/2; at 1,024 members it was as large as the width effect.
  c.readin_members = 512 if quick else 8192
  c.readin_steps = 200
  c.readin_lr_fraction = 0.25      # narrow read-in nets diverge at N / lambda_max
  return c


def _digits(c, side: int, seed: int):
  images, labels = load_digits8()
  rng = np.random.default_rng(seed)
  idx = rng.permutation(len(labels))
  tr, te = idx[: c.n_train], idx[c.n_train: c.n_train + c.n_test]
  mean, std = images[tr].mean(), images[tr].std()
  pad = (side - 8) // 2
  norm = lambda a: np.pad((a - mean) / std, ((0, 0), (pad, pad), (pad, pad)))[..., None].astype(np.float32)
  return norm(images[tr]), (np.eye(10, dtype=np.float32)[labels[tr]] - 0.1), norm(images[te])


def _points(c, seed: int):
  """Standard-normal 2-D points, target cos(2 |x|) (C8-invariant), one output."""
  rng = np.random.default_rng(seed)
  x_tr = rng.standard_normal((c.readin_n_train, 2)).astype(np.float32)
  x_te = rng.standard_normal((c.readin_n_test, 2)).astype(np.float32)
  return x_tr, np.cos(2 * np.linalg.norm(x_tr, axis=1, keepdims=True)).astype(np.float32), x_te


def _problem(c, name: str, seed: int):
  """(group, x_aug, y_aug, x_eval, n_test, model(width), kernel_fn or None, lr, steps, M) of one setting."""
  if name in CNN_SETTINGS:
    k, ks, side, padding = CNN_SETTINGS[name]
    x_tr, y_tr, x_te = _digits(c, side, seed)
    group = groups.rotations_ck(k, x_tr.shape[1:])
    spec = lambda w: ArchSpec(kind="cnn", width=w, depth=1, out_dim=10, kernel_size=ks, readout="flatten",
                              padding=padding)
    kernel_fn, lr_fraction, steps, m = spec(8).stax()[2], c.lr_fraction, c.steps, c.n_members
  else:
    law, linear = READIN_SETTINGS[name]
    x_tr, y_tr, x_te = _points(c, seed)
    group = groups.rotations_2d_points(8)
    spec = lambda w: ReadInSpec(width=w, out_dim=1, readin_law=law, linear_readin=linear)
    # The uniform/sparse non-linear read-in has no analytic limit; its lr comes from the Gaussian one's kernel.
    kernel_fn = spec(8).stax()[2] if linear else ReadInSpec(out_dim=1, linear_readin=False).stax()[2]
    lr_fraction, steps, m = c.readin_lr_fraction, c.readin_steps, c.readin_members
  x_aug, y_aug = groups.augment_full_orbit(group, x_tr, y_tr)
  x_aug, y_aug = np.asarray(x_aug, np.float32), np.asarray(y_aug, np.float32)
  x_eval = np.asarray(group.orbit(x_te), np.float32).reshape((-1,) + x_te.shape[1:])
  lr = kernels.stable_lr(kernel_fn, x_aug, y_aug.shape[-1], lr_fraction)
  has_limit = name in CNN_SETTINGS or READIN_SETTINGS[name][1]
  return group, x_aug, y_aug, x_eval, len(x_te), lambda w: spec(w).flax(), kernel_fn if has_limit else None, lr, steps, m


def _one_seed(c, name: str, si: int, seed: int) -> dict:
  """Metrics of one setting and seed (no seed suffix)."""
  group, x_aug, y_aug, x_eval, n_test, model, kernel_fn, lr, steps, m = _problem(c, name, seed)
  k = group.order
  as_orbit = lambda f: f.reshape(f.shape[:-2] + (k, n_test, f.shape[-1]))
  scale = float(np.sqrt(np.mean(np.sum(y_aug ** 2, axis=-1))))
  out, mu = {"lr": lr}, None
  if kernel_fn is not None:
    mu = as_orbit(kernels.infinite_ensemble_predict(kernel_fn, x_aug, y_aug, x_eval, lr * steps,
                                                    learning_rate=lr).mean[0])
    out["mu_inv_err"] = metrics.rms_invariance_error(mu, group, scale)
  widths = c.widths if name in CNN_SETTINGS else c.readin_widths
  for w in widths:
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 1000 * si + w)
    f = as_orbit(ens.gd_ensemble_snapshots(model(w), x_aug, y_aug, x_eval, [steps], lr, m, key,
                                           progress=f"{name} w{w} seed {seed}")[steps])  # (M, k, n, out)
    out[f"inv_err_w{w}"] = metrics.infinite_ensemble_invariance_error(ens.sub_ensemble_means(f, c.sub_ensemble),
                                                                       group, scale)
    out[f"naive_inv_err_w{w}"] = metrics.rms_invariance_error(f.mean(0), group, scale)
    out[f"member_inv_err_w{w}"] = float(np.mean([metrics.rms_invariance_error(f_m, group, scale) for f_m in f[:16]]))
    if mu is not None:
      out[f"ens_vs_mu_w{w}"] = metrics.relative_error(f.mean(0), mu)
      out[f"gap_to_mu_w{w}"] = abs(out[f"inv_err_w{w}"] - out["mu_inv_err"])
  for end, w in (("wmin", min(widths)), ("wmax", max(widths))):
    for stem in ("inv_err", "gap_to_mu"):
      if f"{stem}_w{w}" in out:
        out[f"{stem}_{end}"] = out[f"{stem}_w{w}"]
  return out


def _mu_key(name: str) -> str:
  """The issue's names: ``mu_inv_err`` is the asymmetric-support setting's mu_t; the read-in settings share
  one kernel, ``readin_mu_inv_err``."""
  if name == "asym":
    return "mu_inv_err"
  return "readin_mu_inv_err" if READIN_SETTINGS.get(name, (None, False))[1] else f"{name}_mu_inv_err"


def _validate(c: ml_collections.ConfigDict) -> None:
  """Clear errors for unknown settings, member counts that do not split into >= 2 sub-ensembles, no seeds."""
  unknown = set(c.settings) - set(SETTINGS)
  if unknown:
    raise ValueError(f"unknown settings {sorted(unknown)}; choose from {sorted(SETTINGS)}.")
  for m_name in ("n_members", "readin_members"):
    if c[m_name] % c.sub_ensemble or c[m_name] // c.sub_ensemble < 2:
      raise ValueError(f"{m_name}={c[m_name]} must be a multiple of sub_ensemble={c.sub_ensemble}, at least 2x.")
  if len(c.seeds) < 1:
    raise ValueError("seeds must name at least one seed, e.g. --set seeds=(0,1,2).")


def _over_seeds(name: str, runs: list[dict], seeds) -> dict[str, float]:
  """One setting's per-seed metrics (``runs[i]`` from ``_one_seed`` for ``seeds[i]``) as ``<name>_<key>``
  means with ``_std`` and ``_seed<s>`` companions (``mu_inv_err`` renamed by ``_mu_key``)."""
  out = {}
  for key in runs[0]:
    vals = np.array([r[key] for r in runs])
    target = _mu_key(name) if key == "mu_inv_err" else f"{name}_{key}"
    out[target] = float(vals.mean())
    out[f"{target}_std"] = float(vals.std())
    for seed, v in zip(seeds, vals):
      out[f"{target}_seed{seed}"] = float(v)
  return out


def run(c: ml_collections.ConfigDict, workdir: str) -> dict:
  t0 = time.perf_counter()
  _validate(c)
  out = {}
  for si, name in enumerate(c.settings):
    out.update(_over_seeds(name, [_one_seed(c, name, si, seed) for seed in c.seeds], c.seeds))
  out["wall_seconds"] = time.perf_counter() - t0
  _figure(c, workdir, out)
  _summary(c, workdir, out)
  return out


def _widths(c, name: str):
  return c.widths if name in CNN_SETTINGS else c.readin_widths


def _figure(c, workdir, out):
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  for ax, family, title in ((axes[0], CNN_SETTINGS, f"CNNs on digits (M = {c.n_members})"),
                            (axes[1], READIN_SETTINGS, f"read-in MLPs, 2-D points, C8 (M = {c.readin_members})")):
    names = [n for n in c.settings if n in family]
    for name, color in zip(names, ("C0", "C1", "C2", "C3")):
      ws = _widths(c, name)
      mean = np.array([out[f"{name}_inv_err_w{w}"] for w in ws])
      std = np.array([out[f"{name}_inv_err_w{w}_std"] for w in ws])
      ax.errorbar(ws, np.maximum(mean, 1e-5), yerr=std, fmt="o-", color=color, capsize=3, label=name)
      if _mu_key(name) in out and (name in CNN_SETTINGS or name == names[0]):
        ax.axhline(max(out[_mu_key(name)], 1e-5), color=color, ls="--", lw=1, label=f"{name}: NTK $\\mu_t$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = sorted({w for n in names for w in _widths(c, n)})
    ax.set_xticks(ticks, [str(w) for w in ticks], minor=False)
    ax.set_xticks([], minor=True)
    ax.set_xlabel("width")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
  axes[0].set_ylabel("M -> inf invariance error (mean +- std over seeds)")
  cli.save_figure(fig, workdir, "width_sweep")


def _verdicts(c, out) -> list[str]:
  """One generated line per comparison the experiment exists for (numbers from ``out``)."""
  lines = []
  trend = lambda n: (f"{out[f'{n}_inv_err_wmin']:.4f} -> {out[f'{n}_inv_err_wmax']:.4f} "
                     f"({'falls' if out[f'{n}_inv_err_wmax'] < out[f'{n}_inv_err_wmin'] else 'does not fall'})")
  noise = lambda n: max(out[f"{n}_inv_err_w{w}"] + out[f"{n}_inv_err_w{w}_std"] for w in _widths(c, n))
  for name in ("readin_sparse", "readin_uniform", "relu_sparse"):
    if name in c.settings:
      ref = ""
      if "readin_gauss" in c.settings:
        ref = f"; the Gaussian control's largest value (mean + std) is {noise('readin_gauss'):.4f}"
        if max(out[f"{name}_inv_err_w{w}"] - out[f"{name}_inv_err_w{w}_std"] for w in _widths(c, name)) <= \
            noise("readin_gauss"):
          ref += ", so this curve is not resolved from the noise"
      lines.append(f"- `{name}`: M -> inf error {trend(name)} with width{ref}.")
  if "asym" in c.settings:
    ref = f" against the symmetric control's {noise('sym'):.4f} (mean + std)" if "sym" in c.settings else ""
    lines.append(f"- `asym`: {trend('asym')}{ref}, mu_t {out['mu_inv_err']:.4f}. Against the expectation of an "
                 "error that falls with width: with zero padding neither the init nor the NTK is invariant, so "
                 "the ensemble can only approach mu_t's non-zero error" +
                 (", and here it is not resolved from the control's noise" if "sym" in c.settings and
                  out["asym_inv_err_wmax"] - out["asym_inv_err_wmax_std"] < noise("sym") else "") +
                 (f" (circular padding: mu_t {out['asym_circ_mu_inv_err']:.1e})." if "asym_circ" in c.settings
                  else "."))
  return lines


def _summary(c, workdir, out):
  rows = []
  for name in c.settings:
    for w in _widths(c, name):
      mu = out.get(_mu_key(name), float("nan"))
      rows.append((name, w, out[f"{name}_member_inv_err_w{w}"], out[f"{name}_naive_inv_err_w{w}"],
                   f"{out[f'{name}_inv_err_w{w}']:.4f} +- {out[f'{name}_inv_err_w{w}_std']:.4f}", mu,
                   out.get(f"{name}_ens_vs_mu_w{w}", float("nan"))))
  text = "\n".join([
      "# Width where width matters",
      "",
      f"Mean +- std over seeds {tuple(c.seeds)}. CNN settings: 8x8 digits, {c.n_train} x k training images, orbits "
      f"of {c.n_test} test digits; one-layer ReLU CNN, flatten readout; M = {c.n_members}, {c.steps} GD steps at "
      f"lr = {c.lr_fraction} N / lambda_max. Read-in settings: {c.readin_n_train} x 8 standard-normal 2-D points "
      f"(target cos 2|x|), orbits of {c.readin_n_test} test points under exact 45-degree rotations; linear "
      f"read-in (or ReLU for relu_*) with the named weight law, Dense+ReLU, linear readout; M = "
      f"{c.readin_members}, {c.readin_steps} GD steps at lr = {c.readin_lr_fraction} N / lambda_max. 'M -> inf' "
      f"removes the finite-M part with sub-ensembles of {c.sub_ensemble}. Errors: RMS orbit deviation / target RMS.",
      "",
      cli.markdown_table(rows, ["setting", "width", "members (16)", "M-member mean", "M -> inf",
                                   "NTK mu_t", "|ens - mu| / |mu|"]),
      "",
      *_verdicts(c, out),
      "",
      f"Wall time {out['wall_seconds']:.0f} s.",
      "",
      "![width sweep](width_sweep.png)",
  ])
  cli.write_summary(workdir, text)


if __name__ == "__main__":
  cli.main(get_config, run, name="width_sweep")
