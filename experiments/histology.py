"""Histology tiles: CNN ensembles with C4 / D4 augmentation, OSP and accuracy in and out of distribution.

Experiment E3 of Gerken & Kessel (ICML 2024, arXiv 2403.03103; §E3 of
``../shared/reference/emergent_equivariance.md``): tissue patches have no preferred orientation, so the
label is invariant under rotations (and reflections) of the slide; deep ensembles trained with full
C4 (D4) augmentation should predict consistently on the whole orbit, their members less so.

Data (``--set source=...``):

- ``textures`` (default, offline): :func:`ntk.datasets.make_textures`, a generated H&E-like texture set
  with 9 classes and no preferred orientation -- a **substitute** so that the experiment runs offline, not
  a model of real tissue;
- ``nct_crc``: NCT-CRC-HE-100K class folders of .tif tiles at ``--set data_path=/path/NCT-CRC-HE-100K``
  (:func:`ntk.datasets.load_nct_crc`, resized to ``size``; a random split into train and test);
- ``pathmnist``: MedMNIST's ``pathmnist.npz`` at ``--set data_path=/path/pathmnist.npz`` (its train and
  test splits, 28 x 28).

Methods and metrics as in :mod:`experiments.rotated_digits` (whose training/evaluation helpers this script
uses): M CNN members (ArchSpec CNN, Adam on cross-entropy, full-orbit augmentation), the ensemble (mean of
logits) vs single members; OSP (1..|G|), symmetrized KL and accuracy on the test split and on two
out-of-distribution sets (uniform RGB noise; RGB patches of scikit-learn's bundled photographs).

Run::

  python -m experiments.histology --quick --workdir runs/histology_quick   # ~3 min on 2 cores
  python -m experiments.histology --workdir runs/histology                 # 414 s on 2 quiet cores (measured)
  python -m experiments.histology --set source=nct_crc --set data_path=/data/NCT-CRC-HE-100K --workdir runs/nct

Expected (textures, quick, measured): the ensemble is more consistent than its members on every set, C4:
OSP 3.83 vs 3.42 (test), 3.36 vs 3.12 (noise), 3.76 vs 3.34 (photos); D4: 7.29 vs 6.72 (test). The quick
run is far from converged (16 / 32 Adam steps: accuracy 0.17-0.33, chance 0.11). Quick run: ~3 min of CPU time.
Measured (full: 600 tiles, 4 epochs, M = 8; 96 / 192 Adam steps for C4 / D4): OSP ensemble vs single model, C4:
3.74 vs 3.27 (test), 3.78 vs 3.24 (noise), 3.76 vs 3.21 (photos); D4: 7.29 vs 6.40 (test), 7.89 vs 7.47,
7.74 vs 6.66; accuracy 0.42 vs 0.37 (C4), 0.47 vs 0.43 (D4) -- still far from converged (sized to 7 minutes on
2 CPU cores; scale n_train / epochs / n_members up on an accelerator).
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections
import numpy as np

from infra import cli
from ntk import datasets, ensemble as ens, groups, metrics
from ntk.architectures import ArchSpec

SOURCES = ("textures", "nct_crc", "pathmnist")


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.source = "textures"
  c.data_path = ""
  c.size = 32                   # tile side (textures / NCT-CRC resize; PathMNIST is 28)
  c.n_train = 200 if quick else 600    # per split (NCT-CRC: per class x 9 classes drawn, then split)
  c.n_test = 200 if quick else 400
  c.n_ood = 100 if quick else 200
  c.groups = ("c4", "d4")
  c.cnn_width = 8
  c.n_members = 8
  c.epochs = 2 if quick else 4
  c.batch_size = 100
  c.learning_rate = 2e-3
  c.eval_chunk = 512
  c.member_axis = "map"         # "map" (CPU) or "vmap": see ntk.ensemble.make_ensemble_step
  return c


def _load(c):
  """``(x_train, y_train, x_test, y_test)``: RGB images ``(N, H, W, 3)`` in [0, 1], int labels."""
  rng = np.random.default_rng(c.seed)
  if c.source == "textures":
    x_tr, y_tr = datasets.make_textures(c.n_train, size=c.size, seed=c.seed)
    x_te, y_te = datasets.make_textures(c.n_test, size=c.size, seed=c.seed + 1)
    return x_tr, y_tr, x_te, y_te
  if not c.data_path:
    raise ValueError(f"source={c.source!r} needs --set data_path=... (a local copy; nothing is downloaded).")
  if c.source == "nct_crc":
    if not os.path.isdir(c.data_path):
      raise FileNotFoundError(f"NCT-CRC: {c.data_path!r} is not a directory of class folders.")
    n_classes = sum(os.path.isdir(os.path.join(c.data_path, d)) for d in os.listdir(c.data_path))
    per_class = -(-(c.n_train + c.n_test) // max(n_classes, 1))
    x, y, _ = datasets.load_nct_crc(c.data_path, size=c.size, n_per_class=per_class, seed=c.seed)
    idx = rng.permutation(len(y))
    tr, te = idx[:c.n_train], idx[c.n_train:c.n_train + c.n_test]
    return x[tr], y[tr], x[te], y[te]
  if c.source == "pathmnist":
    x_tr, y_tr = datasets.load_pathmnist(c.data_path, "train")
    x_te, y_te = datasets.load_pathmnist(c.data_path, "test")
    tr = rng.permutation(len(y_tr))[:c.n_train]
    te = rng.permutation(len(y_te))[:c.n_test]
    return x_tr[tr], y_tr[tr], x_te[te], y_te[te]
  raise ValueError(f"source={c.source!r} is not one of {SOURCES}.")


GROUPS = {"c4": groups.rotations_c4, "d4": groups.dihedral_d4}


def validate(c: ml_collections.ConfigDict) -> None:
  """Config checks that must fail before the first group trains."""
  names = (c.groups,) if isinstance(c.groups, str) else tuple(c.groups)
  bad = [g for g in names if g not in GROUPS]
  if not names or bad:
    raise ValueError(f"groups={c.groups!r}: {bad or 'empty'} not in {sorted(GROUPS)}. Fix: e.g. --set "
                     "\"groups=('c4', 'd4')\".")


def _group(name: str, shape):
  return GROUPS[name](shape)


def run(c: ml_collections.ConfigDict, workdir: str) -> dict:
  validate(c)
  t0 = time.perf_counter()
  x_tr, y_tr, x_te, y_te = _load(c)
  x_tr, x_te = x_tr.astype(np.float32), x_te.astype(np.float32)
  shape = x_tr.shape[1:]
  n_classes = int(max(y_tr.max(), y_te.max()) + 1)
  sets = {"test": x_te,
          "ood_noise": datasets.noise_images(c.n_ood, shape, seed=c.seed + 1),
          "ood_photos": datasets.sample_image_patches(c.n_ood, shape[0], seed=c.seed + 2, grayscale=False)}
  spec = ArchSpec(kind="cnn", width=c.cnn_width, depth=2, out_dim=n_classes, readout="flatten",
                  parameterization="standard", b_std=0.0)
  model = spec.flax()
  out = {"n_classes": n_classes, "n_train": len(x_tr)}
  rows = []
  for gi, gname in enumerate(c.groups):
    group = _group(gname, shape)
    x_aug, y_aug = groups.augment_full_orbit(group, x_tr, y_tr)
    t1 = time.perf_counter()
    params, losses = ens.train_classifiers(
        model, x_aug, y_aug, c.n_members, jax.random.PRNGKey(c.seed + gi), learning_rate=c.learning_rate,
        epochs=c.epochs, batch_size=c.batch_size, member_axis=c.member_axis, progress=f"{gname} ensemble")
    out[f"train_loss_{gname}"] = float(losses[-max(1, len(losses) // 10):].mean())
    # (M, |G|, n, C) logits per evaluation set
    logits = {s: ens.orbit_logits(model, params, group, x, c.eval_chunk, c.member_axis) for s, x in sets.items()}
    out[f"seconds_{gname}"] = time.perf_counter() - t1
    for s, l in logits.items():
      sfx = "" if s == "test" else f"_{s}"
      views = {"ens": l.mean(0, keepdims=True), "single": l}
      row = [gname.upper(), s]
      for who, v in views.items():
        mean, std = metrics.orbit_same_predictions_pooled(v)
        out[f"osp_{who}_{gname}{sfx}"], out[f"osp_std_{who}_{gname}{sfx}"] = mean, std
        out[f"sym_kl_{who}_{gname}{sfx}"] = float(np.mean([metrics.symmetrized_kl(vi)[0] for vi in v]))
        row += [f"{mean:.3f}±{std:.2f}", out[f"sym_kl_{who}_{gname}{sfx}"]]
      rows.append(row)
    l = logits["test"]
    out[f"acc_ens_{gname}"] = metrics.accuracy(l.mean(0)[0], y_te)
    out[f"acc_single_{gname}"] = float(np.mean([metrics.accuracy(li[0], y_te) for li in l]))
    out[f"acc_orbit_ens_{gname}"] = metrics.accuracy(l.mean(0).reshape(-1, n_classes), np.tile(y_te, group.order))
  _figure(c, workdir, out)
  out["wall_seconds"] = time.perf_counter() - t0
  _summary(c, workdir, out, rows)
  return out


def _figure(c, workdir, out):
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  sets = (("", "test"), ("_ood_noise", "OOD noise"), ("_ood_photos", "OOD photos"))
  fig, axes = plt.subplots(1, len(c.groups), figsize=(5 * len(c.groups), 3.6), squeeze=False)
  for ax, g in zip(axes[0], c.groups):
    order = 4 if g == "c4" else 8
    xs = np.arange(len(sets))
    for i, who in enumerate(("single", "ens")):
      ax.bar(xs + (i - 0.5) * 0.38, [out[f"osp_{who}_{g}{s}"] / order for s, _ in sets], 0.38,
             yerr=[out[f"osp_std_{who}_{g}{s}"] / order for s, _ in sets], capsize=3,
             label={"single": "single member", "ens": f"ensemble (M={c.n_members})"}[who])
    ax.set_xticks(xs, [t for _, t in sets])
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{g.upper()} augmentation")
    ax.set_ylabel("OSP / |G|")
  axes[0][0].legend(fontsize=8, loc="lower left")
  cli.save_figure(fig, workdir, "histology_osp")


def _summary(c, workdir, out, rows):
  src = {"textures": "generated orientation-free textures (offline substitute for NCT-CRC-HE-100K)",
         "nct_crc": f"NCT-CRC-HE-100K tiles from {c.data_path}", "pathmnist": f"PathMNIST from {c.data_path}"}
  acc = [(g.upper(), out[f"acc_single_{g}"], out[f"acc_ens_{g}"], out[f"acc_orbit_ens_{g}"]) for g in c.groups]
  text = "\n".join([
      f"# Histology: {src[c.source]}",
      "",
      f"{out['n_train']} training tiles x |G| (full orbit), {out['n_classes']} classes; CNN 2 x conv{c.cnn_width} + "
      f"linear, M = {c.n_members}, Adam {c.learning_rate}, {c.epochs} epochs. OSP mean ± std over inputs "
      "(single members pooled).",
      "",
      cli.markdown_table(rows, ["group", "inputs", "OSP ensemble", "sym. KL ensemble", "OSP single",
                                "sym. KL single"]),
      "",
      "## Accuracy",
      cli.markdown_table(acc, ["group", "single member (mean)", "ensemble", "ensemble on all rotated copies"]),
      "",
      "![osp](histology_osp.png)",
  ])
  cli.write_summary(workdir, text)


if __name__ == "__main__":
  cli.main(get_config, run, name="histology", validate=validate)
