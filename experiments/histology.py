"""Histology tiles: CNN ensembles with C4 / D4 augmentation, OSP and accuracy in and out of distribution.

Experiment E3 of Gerken & Kessel (ICML 2024, arXiv 2403.03103): tissue patches have no preferred orientation, so the
label is invariant under rotations (and reflections) of the slide; deep ensembles trained with full
C4 (D4) augmentation should predict consistently on the whole orbit, their members less so.

Data (``--set source=...``):

- ``skimage`` (default, offline, real images): :func:`ntk.datasets.skimage_texture_tiles`, tiles of the real
  texture photographs that scikit-image ships (brick, grass, gravel; each CC0, as stated in its loader's
  docstring -- the data folder's README lists no licences), 6 classes = texture x scale (crops of 48 and 96
  pixels resized to ``size``), standardised per tile so that brightness does not give the class away; train
  and test tiles come from disjoint rows of each photograph. Real tissue is the OOD set below.
- ``textures``: :func:`ntk.datasets.make_textures`, a generated H&E-like texture set with 9 classes and no
  preferred orientation (a procedural substitute, not a model of real tissue);
- ``nct_crc``: NCT-CRC-HE-100K class folders of .tif tiles at ``--set data_path=/path/NCT-CRC-HE-100K``
  (:func:`ntk.datasets.load_nct_crc`, resized to ``size``; a random split into train and test);
- ``pathmnist``: MedMNIST's ``pathmnist.npz`` at ``--set data_path=/path/pathmnist.npz`` (its train and
  test splits, 28 x 28).

Methods and metrics as in ``experiments.rotated_digits`` (the same library calls, :mod:`ntk.ensemble` and
:mod:`ntk.metrics`): M CNN members (ArchSpec CNN, Adam on cross-entropy, full-orbit augmentation), the ensemble (mean of
logits) vs single members; OSP (1..|G|), symmetrized KL and accuracy on the test split and on three
out-of-distribution sets: real tissue (scikit-image's immunohistochemistry photograph of colonic glands, "no
known copyright restrictions", preprocessed like the ``skimage`` tiles: :func:`ntk.datasets.skimage_tissue_tiles`),
uniform RGB noise, and RGB patches of scikit-learn's bundled photographs.

Run::

  python -m experiments.histology --quick --workdir runs/histology_quick   # 300 tiles, 6 epochs, M = 4
  python -m experiments.histology --workdir runs/histology                 # 600 tiles, 12 epochs, M = 8
  python -m experiments.histology --set source=nct_crc --set data_path=/data/NCT-CRC-HE-100K --workdir runs/nct

Results: ``results/histology/*.json`` (written with ``--record``) and the README's tables generated from them.
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

SOURCES = ("skimage", "textures", "nct_crc", "pathmnist")
SKIMAGE_CROPS = (48, 96)  # two scales per texture: 1.5x and 3x box-filtered down to 32 pixels


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.source = "skimage"
  c.data_path = ""
  c.size = 32                   # tile side (skimage crops / textures / NCT-CRC resize; PathMNIST is 28)
  c.n_train = 300 if quick else 600    # per split, all classes (NCT-CRC: drawn per class, then split)
  c.n_test = 300 if quick else 600
  c.n_ood = 100 if quick else 200
  c.groups = ("c4", "d4")
  c.cnn_width = 8
  c.cnn_depth = 3               # 3 x 3 convolutions: a 7 x 7 receptive field before the pooling
  c.readout = "gap"             # global average pooling: texture statistics do not depend on position
  c.n_members = 4 if quick else 8
  c.epochs = 6 if quick else 12     # C4: 18 / 24 Adam steps per epoch, D4 twice that
  c.batch_size = 100
  c.learning_rate = 1e-2
  c.eval_chunk = 512
  c.member_axis = "loop"        # "loop" (CPU: convs outside XLA loops), "map" or "vmap": ntk.ensemble.make_ensemble_step
  return c


def _load(c):
  """``(x_train, y_train, x_test, y_test)``: RGB images ``(N, H, W, 3)`` in [0, 1], int labels."""
  if c.source not in SOURCES:
    raise ValueError(f"source={c.source!r} is not one of {SOURCES} (--set source=NAME).")
  rng = np.random.default_rng(c.seed)
  if c.source == "skimage":
    n_classes = len(datasets.SKIMAGE_TEXTURES) * len(SKIMAGE_CROPS)
    x_tr, y_tr, _ = datasets.skimage_texture_tiles(c.n_train // n_classes, size=c.size, crops=SKIMAGE_CROPS,
                                                   split="train", seed=c.seed)
    x_te, y_te, _ = datasets.skimage_texture_tiles(c.n_test // n_classes, size=c.size, crops=SKIMAGE_CROPS,
                                                   split="test", seed=c.seed)
    return x_tr, y_tr, x_te, y_te
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
  x_tr, y_tr = datasets.load_pathmnist(c.data_path, "train")  # source == "pathmnist"
  x_te, y_te = datasets.load_pathmnist(c.data_path, "test")
  tr = rng.permutation(len(y_tr))[:c.n_train]
  te = rng.permutation(len(y_te))[:c.n_test]
  return x_tr[tr], y_tr[tr], x_te[te], y_te[te]


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
          "ood_tissue": datasets.skimage_tissue_tiles(c.n_ood, size=shape[0], seed=c.seed + 3),
          "ood_noise": datasets.noise_images(c.n_ood, shape, seed=c.seed + 1),
          "ood_photos": datasets.sample_image_patches(c.n_ood, shape[0], seed=c.seed + 2, grayscale=False)}
  spec = ArchSpec(kind="cnn", width=c.cnn_width, depth=c.cnn_depth, out_dim=n_classes, readout=c.readout,
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
    out.update(_orbit_metrics(gname, logits, y_te, group.order, rows))
  _figure(c, workdir, out)
  out["wall_seconds"] = time.perf_counter() - t0
  _summary(c, workdir, out, rows)
  return out


def _orbit_metrics(gname, logits, y_te, order, rows) -> dict:
  """OSP (pooled mean and std) and symmetrized KL of the ensemble and of single members on every evaluation
  set (a summary row per set appended to ``rows``), and test accuracies (ensemble, members, ensemble on the
  whole orbit); ``logits`` ``{set: (M, |G|, n, C)}``."""
  out = {}
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
  out[f"acc_ens_{gname}"] = out[f"test_accuracy_{gname}"] = metrics.accuracy(l.mean(0)[0], y_te)
  out[f"acc_single_{gname}"] = float(np.mean([metrics.accuracy(li[0], y_te) for li in l]))
  out[f"acc_orbit_ens_{gname}"] = metrics.accuracy(l.mean(0).reshape(-1, l.shape[-1]), np.tile(y_te, order))
  return out


def _figure(c, workdir, out):
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  sets = (("", "test"), ("_ood_tissue", "OOD tissue"), ("_ood_noise", "OOD noise"), ("_ood_photos", "OOD photos"))
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


def _chance_line(out, group_names) -> str:
  """One line that says whether the members learned: accuracy against chance (1 / classes)."""
  chance = 1.0 / out["n_classes"]
  worst = min(out[f"acc_single_{g}"] for g in group_names)
  if worst < 2.0 * chance:
    return (f"**Not learned:** a member's mean test accuracy {worst:.2f} is below twice chance ({chance:.2f}); "
            "the OSP numbers above describe near-untrained networks, not the trained ensembles of the theorem.")
  return f"Chance accuracy is {chance:.2f}; the lowest mean member accuracy is {worst:.2f}."


def _summary(c, workdir, out, rows):
  src = {"skimage": "real texture photographs bundled with scikit-image (brick, grass, gravel x 2 scales; CC0)",
         "textures": "generated orientation-free textures (offline substitute for NCT-CRC-HE-100K)",
         "nct_crc": f"NCT-CRC-HE-100K tiles from {c.data_path}", "pathmnist": f"PathMNIST from {c.data_path}"}
  acc = [(g.upper(), out[f"acc_single_{g}"], out[f"acc_ens_{g}"], out[f"acc_orbit_ens_{g}"]) for g in c.groups]
  text = "\n".join([
      f"# Histology: {src[c.source]}",
      "",
      f"{out['n_train']} training tiles x |G| (full orbit), {out['n_classes']} classes; CNN {c.cnn_depth} x "
      f"conv{c.cnn_width} + {c.readout} + linear, M = {c.n_members}, Adam {c.learning_rate}, {c.epochs} epochs. OSP "
      "mean ± std over inputs (single members pooled).",
      "",
      cli.markdown_table(rows, ["group", "inputs", "OSP ensemble", "sym. KL ensemble", "OSP single",
                                "sym. KL single"]),
      "",
      "## Accuracy",
      cli.markdown_table(acc, ["group", "single member (mean)", "ensemble", "ensemble on all rotated copies"]),
      "",
      _chance_line(out, c.groups),
      "",
      "![osp](histology_osp.png)",
  ])
  cli.write_summary(workdir, text)


if __name__ == "__main__":
  cli.main(get_config, run, name="histology", validate=validate)
