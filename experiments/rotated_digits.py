"""Rotated-image classification: deep ensembles + C_k augmentation vs a single model, a G-CNN and
canonicalization (the seed's OSP table).

Experiment E2 of Gerken & Kessel (ICML 2024, arXiv 2403.03103; §E2 and the OSP table in §3 of
``../shared/reference/emergent_equivariance.md``). For k ∈ {4, 8, 16}:

- data: FashionMNIST from a local folder of the official IDX files (``--set data_dir=/path`` or the
  environment variable ``FASHION_MNIST_DIR``), otherwise the bundled MNIST-5k digits (offline default,
  :func:`ntk.datasets.load_rotation_benchmark`); full C_k-orbit augmentation of the training set
  (:func:`ntk.groups.rotations_ck`: exact rot90 for k = 4, bilinear rotation for k = 8, 16);
- methods:
  * **DeepEns+DA**: M CNNs (the :class:`ntk.architectures.ArchSpec` CNN, 2 conv layers + linear readout,
    zero-mean init) trained with minibatch Adam on cross-entropy (:mod:`ntk.ensemble`, vmapped); the
    ensemble predicts with the mean of its members' logits;
  * **only DA (single model)**: the same members evaluated one by one (pooled over members);
  * **G-CNN**: :class:`ntk.equivariant_models.GroupConvCNN` (lifting + group convolutions + pooling over
    C_k; exactly invariant for C4), the stand-in for E2CNN (PyTorch-only);
  * **Canon**: :class:`ntk.equivariant_models.Canonicalizer`, a small scorer picks the orbit element, the
    same CNN as the members classifies it (exactly invariant for C4);
- metrics: orbit same predictions OSP(x) = #{g : argmax f(gx) = argmax f(x)} ∈ 1..k
  (:func:`ntk.metrics.orbit_same_predictions_per_input`), mean ± std over inputs, on the test set and on
  two out-of-distribution sets (uniform noise images and grayscale patches of scikit-learn's bundled
  photographs), accuracy on the test set and on its rotated copies, symmetrized KL over the orbit.

The ± in the summary table is the standard deviation of OSP over test inputs (pooled over members for the
single models); the paper's ± could not be verified (it is likely over runs), so compare means.

Run::

  python -m experiments.rotated_digits --quick --workdir runs/rotated_digits_quick   # C4 only, ~2 min, 2 cores
  # C4/C8/C16 at the quick scale, 1,225 s on 2 quiet cores (measured)
  python -m experiments.rotated_digits --workdir runs/rotated_digits
  FASHION_MNIST_DIR=/data/fashion python -m experiments.rotated_digits --workdir runs/rotated_fashion

Expected (quick, MNIST-5k, measured): ``osp_gcnn_c4 == osp_canon_c4 == 4`` exactly, ``osp_ens_c4`` 3.75 ≥
``osp_single_c4`` 3.38 (noise images: 4.00 vs 3.89, photo patches: 3.96 vs 3.74), accuracies 0.65-0.73
(C4-invariant models cannot tell 6 from 9; 400 digits, 3 epochs). Quick run: 112 s on 2 quiet cores.
Full mode (all three groups at the quick scale, 1,225 s on 2 quiet cores), OSP on test digits C4 / C8 / C16:
DeepEns+DA 3.75 / 7.42 / 14.86, single 3.38 / 6.45 / 12.97, G-CNN 4.00 / 5.81 / 11.40, Canon 4.00 / 7.83 / 15.51.
"""

from __future__ import annotations

import time

import jax
import ml_collections
import numpy as np

from infra import cli
from ntk import datasets, ensemble as ens, equivariant_models as em, groups, metrics
from ntk.architectures import ArchSpec


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data_dir = ""               # FashionMNIST IDX folder; "" -> $FASHION_MNIST_DIR -> bundled MNIST-5k
  # Full mode = the quick scale for all three groups: C16 trains on 16 x n_train images, and this already takes
  # 20 min on 2 CPU cores (measured); scale n_train / cnn_width / n_members / epochs up on an accelerator.
  c.ks = (4,) if quick else (4, 8, 16)
  c.n_train = 400
  c.n_test = 300
  c.n_ood = 100
  c.pad = 0                     # zero-padding per side (e.g. 6 for FashionMNIST at C8/C16: corners rotate out)
  c.cnn_width = 8               # 2 conv layers of this many channels + linear readout (16: ~126k params)
  c.n_members = 8
  c.epochs = 3                  # over the augmented set (k x n_train images)
  c.batch_size = 100
  c.learning_rate = 2e-3
  c.gcnn_channels = (16, 32, 64)  # total channels per layer (k x channels per rotation): equal cost for all k
  c.gcnn_learning_rate = 1e-2   # the G-CNN (global pooling, few parameters) learns slowly at 2e-3
  c.gcnn_members = 1
  c.canon_scorer_channels = 8
  c.eval_chunk = 512
  c.member_axis = "map"         # "map": members one after another inside one jit (fast on CPU); "vmap"
                                # (accelerators); see ntk.ensemble.make_ensemble_step
  return c


# ----------------------------------------------------------------------------------------------------------
# Data


def _prepare(c):
  name, (x_tr, y_tr), (x_te, y_te) = datasets.load_rotation_benchmark(
      c.n_train, c.n_test, data_dir=c.data_dir or None, seed=c.seed)
  pad = lambda x: np.pad(x, ((0, 0), (c.pad, c.pad), (c.pad, c.pad)))[..., None].astype(np.float32)
  size = x_tr.shape[1] + 2 * c.pad
  ood = {"noise": datasets.noise_images(c.n_ood, (size, size), seed=c.seed + 1)[..., None],
         "photos": datasets.sample_image_patches(c.n_ood, size, seed=c.seed + 2)[..., None]}
  return name, pad(x_tr), y_tr, pad(x_te), y_te, {k: v.astype(np.float32) for k, v in ood.items()}


# ----------------------------------------------------------------------------------------------------------
# Training and evaluation


def run(c: ml_collections.ConfigDict, workdir: str) -> dict:
  t0 = time.perf_counter()
  data_name, x_tr, y_tr, x_te, y_te, ood = _prepare(c)
  shape = x_tr.shape[1:]
  key = jax.random.PRNGKey(c.seed)
  out = {"n_train": len(x_tr), "n_test": len(x_te)}
  table = {}
  for ki, k in enumerate(c.ks):
    group = groups.rotations_ck(k, shape)
    x_aug, y_aug = groups.augment_full_orbit(group, x_tr, y_tr)
    spec = ArchSpec(kind="cnn", width=c.cnn_width, depth=2, out_dim=10, readout="flatten",
                    parameterization="standard", b_std=0.0)
    if any(ch % k for ch in c.gcnn_channels):
      raise ValueError(f"gcnn_channels={c.gcnn_channels} must be divisible by k={k}.")
    # 2x2 pooling after the first two layers while the sides stay even (exact rot90 needs even sides).
    pools = tuple(i for i in range(2) if shape[0] % 2 ** (i + 1) == 0)
    models = {
        "ens": (spec.flax(), c.n_members, c.learning_rate),
        "gcnn": (em.GroupConvCNN(k=k, channels=tuple(ch // k for ch in c.gcnn_channels), num_classes=10,
                                 kernel_size=3, pool_after=pools, hidden=64, spatial_pool="max"), c.gcnn_members,
                 c.gcnn_learning_rate),
        "canon": (em.Canonicalizer(group, spec.flax(), em.SmallScorer(c.canon_scorer_channels)), c.gcnn_members,
                  c.learning_rate),
    }
    logits, sets = {}, {"test": x_te, **{f"ood_{n}": v for n, v in ood.items()}}
    for mi, (method, (model, m, lr)) in enumerate(models.items()):
      t1 = time.perf_counter()
      params, losses = ens.train_classifiers(
          model, x_aug, y_aug, m, jax.random.fold_in(key, 100 * ki + mi), learning_rate=lr or c.learning_rate,
          epochs=c.epochs, batch_size=c.batch_size, member_axis=c.member_axis, progress=f"C{k} {method}")
      out[f"train_loss_{method}_c{k}"] = float(losses[-max(1, len(losses) // 10):].mean())
      logits[method] = {s: ens.orbit_logits(model, params, group, x, c.eval_chunk, c.member_axis)
                        for s, x in sets.items()}
      out[f"seconds_{method}_c{k}"] = time.perf_counter() - t1
    # Methods as in the seed's table: the ensemble averages its members' logits; "single" pools members.
    views = {"ens": {s: l.mean(0, keepdims=True) for s, l in logits["ens"].items()}, "single": logits["ens"],
             "gcnn": logits["gcnn"], "canon": logits["canon"]}
    for method, by_set in views.items():
      for s, l in by_set.items():
        sfx = "" if s == "test" else f"_{s}"
        mean, std = metrics.orbit_same_predictions_pooled(l)
        out[f"osp_{method}_c{k}{sfx}"], out[f"osp_std_{method}_c{k}{sfx}"] = mean, std
        out[f"sym_kl_{method}_c{k}{sfx}"] = float(np.mean([metrics.symmetrized_kl(li)[0] for li in l]))
        table[(method, k, s)] = (mean, std)
      l = by_set["test"]
      out[f"acc_{method}_c{k}"] = float(np.mean([metrics.accuracy(li[0], y_te) for li in l]))
      out[f"acc_orbit_{method}_c{k}"] = float(np.mean([metrics.accuracy(li.reshape(-1, li.shape[-1]),
                                                                        np.tile(y_te, k)) for li in l]))
  _figure(c, workdir, out)
  out["wall_seconds"] = time.perf_counter() - t0
  _summary(c, workdir, out, table, data_name)
  return out


_LABELS = {"ens": "DeepEns+DA", "single": "only DA (single model)", "gcnn": "G-CNN (E2CNN stand-in)",
           "canon": "Canon"}


def _figure(c, workdir, out):
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  sets = (("", "test"), ("_ood_noise", "OOD: noise"), ("_ood_photos", "OOD: photo patches"))
  fig, axes = plt.subplots(1, len(sets), figsize=(4 * len(sets), 3.6), sharey=False)
  width = 0.8 / len(_LABELS)
  for ax, (sfx, title) in zip(axes, sets):
    for i, (m, label) in enumerate(_LABELS.items()):
      xs = np.arange(len(c.ks)) + (i - 1.5) * width
      vals = [out[f"osp_{m}_c{k}{sfx}"] / k for k in c.ks]
      ax.bar(xs, vals, width, label=label)
    ax.set_xticks(np.arange(len(c.ks)), [f"C{k}" for k in c.ks])
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
  axes[0].set_ylabel("OSP / |G|")
  axes[-1].legend(fontsize=7, loc="lower right")
  cli.save_figure(fig, workdir, "osp_by_method")


def _summary(c, workdir, out, table, data_name):
  fmt = lambda m, k, s: f"{table[(m, k, s)][0]:.2f}±{table[(m, k, s)][1]:.2f}"
  header = ["method"] + [f"C{k}" for k in c.ks]
  osp = lambda s: cli.markdown_table([[label] + [fmt(m, k, s) for k in c.ks] for m, label in _LABELS.items()],
                                     header)
  acc = cli.markdown_table([[label] + [f"{out[f'acc_{m}_c{k}']:.3f} / {out[f'acc_orbit_{m}_c{k}']:.3f}"
                                       for k in c.ks] for m, label in _LABELS.items()], header)
  text = "\n".join([
      f"# Rotated {data_name}: OSP (orbit same predictions, max = |G|), mean ± std over test inputs",
      "",
      f"{c.n_train} training images x k rotations (full orbit), {c.n_test} test images; members: CNN 2 x "
      f"conv{c.cnn_width} + linear, M = {c.n_members}, Adam {c.learning_rate}, {c.epochs} epochs over the "
      f"augmented set, batch {c.batch_size}. C8/C16 rotate by bilinear interpolation (not exact).",
      "",
      osp("test"),
      "",
      "## Out of distribution: uniform noise images",
      osp("ood_noise"),
      "",
      "## Out of distribution: patches of scikit-learn's sample photographs",
      osp("ood_photos"),
      "",
      "## Accuracy (test set / all rotated copies of the test set)",
      acc,
      "",
      "![osp](osp_by_method.png)",
  ])
  cli.write_summary(workdir, text)


if __name__ == "__main__":
  cli.main(get_config, run, name="rotated_digits")
