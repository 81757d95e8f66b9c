"""Rotated-image classification at the seed table's protocol: deep ensembles + C_k augmentation vs a single
model, a steerable CNN and canonicalization, over independent runs, out of distribution and over all of SO(2).

Experiment E2 of Gerken & Kessel (ICML 2024, arXiv 2403.03103; the OSP table "orbit same predictions out of
distribution"; ICLR version App. B.2 for continuous rotations). For k in {4, 8, 16} and each of ``n_runs``
independent runs (run r: data subset, init, member keys and data order from seed ``seed + r``):

- data: ``dataset="auto"`` (default): FashionMNIST from a local folder of the official IDX files
  (``--set data_dir=/path`` or ``$FASHION_MNIST_DIR``), else the bundled MNIST-5k digits;
  ``--set dataset=fashion_mnist`` insists on the folder, ``mnist5k`` ignores it
  (:func:`ntk.datasets.load_rotation_benchmark`); full C_k-orbit augmentation of the training set
  (:func:`ntk.groups.rotations_ck`: exact rot90 for k = 4, bilinear rotation for k = 8, 16);
- methods:
  * **DeepEns+DA**: M CNNs (the :class:`ntk.architectures.ArchSpec` CNN, 2 conv layers, each followed by
    ``cnn_pool`` average pooling, + linear readout, zero-mean init) trained with minibatch Adam on cross-entropy
    for ``steps`` steps, the same for every k (:mod:`ntk.ensemble`); the ensemble predicts with the mean of its
    members' logits;
  * **only DA (single model)**: the same members evaluated one by one (averaged over members);
  * **steerable CNN**: :class:`ntk.steerable.SteerableCNN` (E2CNN-style regular C_k fields on a
    ring x circular-harmonic 5x5 basis; exactly invariant for C4), the E2CNN baseline;
  * **Canon**: :class:`ntk.equivariant_models.Canonicalizer`, a small scorer picks the orbit element, the
    same CNN as the members classifies it (exactly invariant for C4);
- evaluation sets: the test set, and out of distribution (headline, ``osp_ood_*``) test digits shrunk to
  ``ood_zoom`` of their size and shifted by ``ood_shift`` pixels (real strokes, not a data manifold the
  models were trained on, and not constant-class like noise images), plus patches of scikit-learn's
  photographs (``*_photos``); the class histogram of each method's OOD predictions and its entropy are
  reported (a near-constant prediction would make OSP saturate at |G| without measuring anything);
- metrics: OSP(x) = #{g : argmax f(gx) = argmax f(x)} in 1..k, per run the mean over inputs; table cells
  are **mean +- std over runs** of that per-run mean (the seed's statistic); symmetrized KL over the orbit;
  test accuracy; and continuous rotations: the C_k-trained models evaluated on 64 rotations of
  ``n_so2`` test digits (``so2_osp64_*``, max 64) and the agreement with the unrotated prediction vs angle.

Keys: ``osp_{test,ood,ood_photos}_{ens,single,steerable,canon}_c{k}_{mean,std}``,
``sym_kl_{test,ood}_{method}_c{k}_mean``, ``test_accuracy_{method}_c{k}`` (and ``_std``),
``ood_pred_entropy_{method}_c{k}`` (bits; uniform = log2 10 = 3.32), ``so2_osp64_{method}_c{k}_{mean,std}``.

Run::

  python -m experiments.rotated_digits --quick --workdir runs/rotated_digits_quick   # C4 only, 3 runs
  python -m experiments.rotated_digits --workdir runs/rotated_digits                 # C4 / C8 / C16, 3 runs
  python -m experiments.rotated_digits --workdir runs/rotated_fashion --set dataset=fashion_mnist \
      --set data_dir=/data/fashion
  python -m experiments.rotated_digits --variant paper --workdir runs/rotated_paper   # accelerator
"""

from __future__ import annotations

import time

import jax
import ml_collections
import numpy as np
import optax

from infra import cli
from ntk import datasets, ensemble as ens, equivariant_models as em, groups, metrics, steerable
from ntk.architectures import ArchSpec


VARIANTS = ("default", "paper")


def get_config(quick: bool = False, variant: str = "default") -> ml_collections.ConfigDict:
  """``variant="paper"``: sized like the paper for an accelerator (~100 members of ~126k parameters, 4,000
  MNIST-5k digits or FashionMNIST when given, vmapped members); ``default``: 2 CPU cores."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; use one of {VARIANTS}.")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.dataset = "auto"            # "auto" | "mnist5k" | "fashion_mnist" (needs data_dir or $FASHION_MNIST_DIR)
  c.data_dir = ""
  c.ks = (4,) if quick else (4, 8, 16)
  c.n_runs = 3                  # independent runs per group: the table's +- is the std over runs
  # 2 CPU cores bound the sizes (the paper: ~100 members of ~120k parameters, see the "paper" variant).
  c.n_train = 200 if quick else 2000
  c.n_test = 200 if quick else 500
  c.n_ood = 100
  c.ood_zoom = 0.6              # OOD digits: shrunk to this fraction of their size ...
  c.ood_shift = 4               # ... and shifted by this many pixels along both axes
  c.n_so2 = 50 if quick else 100  # test digits evaluated at so2_angles rotations
  c.so2_angles = 64
  c.pad = 0                     # zero-padding per side (e.g. 6 for FashionMNIST at C8/C16: corners rotate out)
  # Members: 2 x [conv(cnn_width, 3x3), ReLU, avg-pool(cnn_pool)] + linear readout (ntk.architectures.ArchSpec).
  c.cnn_width = 16
  c.cnn_pool = 2                # 1: no pooling (the paper-sized CNN, 2 x conv16 + linear: ~126k parameters)
  c.n_members = 16
  # Training length in optimizer steps, the same for every k: minibatches are drawn from the shuffled full-orbit
  # set (k x n_train images), so every group sees each digit equally often, under random elements of its orbit.
  c.steps = 60 if quick else 1600
  # Steps of the steerable and Canon baselines (0: ``steps``). They reach their test accuracy within 600 steps
  # while the members (a few thousand parameters each) need more; Canon's scorer runs on all k orbit elements,
  # so its steps are the run's largest cost at C16.
  c.baseline_steps = 0 if quick else 600
  c.batch_size = 100
  c.learning_rate = 1e-2        # at 3e-3 the members were still underfitting after 600 steps
  c.lr_schedule = "constant" if quick else "cosine"  # "cosine": decays each training's rate to 0 at its last step
  # Total channels per layer (k x fields per layer): equal cost for all k. C16 then has 2 / 4 / 8 fields; with
  # (16, 32, 64) its 4 invariant features left some initializations untrainable (loss stuck at ln 10).
  c.steer_channels = (32, 64, 128)
  c.steer_kernel_size = 5
  c.steer_learning_rate = 1e-2  # few parameters and global pooling: slow at 3e-3 as well
  c.baseline_members = 1        # steerable and Canon models per run
  c.canon_scorer_channels = 8
  c.eval_chunk = 512
  c.member_axis = "loop"        # "loop": members one after another from Python, the fastest for CNN members
                                # on CPU; "vmap" on accelerators; see ntk.ensemble.make_ensemble_step
  if variant == "paper":
    c.baseline_steps = 0
    c.n_train, c.n_test, c.n_ood, c.n_so2 = 4000, 1000, 500, 500  # 5,000 = all of MNIST-5k
    c.cnn_pool = 1              # 2 x conv16 + linear readout: ~126k parameters per member
    c.n_members = 100
    c.steps = 2000
    c.batch_size = 256
    c.steer_channels = (48, 96, 192)
    c.baseline_members = 3
    c.member_axis = "vmap"
  return c


# ----------------------------------------------------------------------------------------------------------
# Data


def shrink_and_shift(x: np.ndarray, zoom: float, shift: int) -> np.ndarray:
  """``(n, H, W)`` images shrunk by ``zoom`` about the centre (bilinear) and shifted by ``shift`` pixels
  down and right (zeros enter): the OOD digits."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  n, h, w = x.shape
  sh, sw = max(1, round(h * zoom)), max(1, round(w * zoom))
  out = np.zeros_like(x)
  top, left = (h - sh) // 2 + shift, (w - sw) // 2 + shift
  if not (0 <= top and top + sh <= h and 0 <= left and left + sw <= w):
    raise ValueError(f"ood_zoom={zoom} with ood_shift={shift} moves the digit out of the {h}x{w} frame.")
  for i in range(n):
    small = np.asarray(Image.fromarray(x[i].astype(np.float32)).resize((sw, sh), Image.BILINEAR))
    out[i, top:top + sh, left:left + sw] = small
  return out


def _prepare(c, seed: int):
  name, (x_tr, y_tr), (x_te, y_te) = datasets.load_rotation_benchmark(
      c.n_train, c.n_test, data_dir=c.data_dir or None, seed=seed, dataset=c.dataset)
  pad = lambda x: np.pad(x, ((0, 0), (c.pad, c.pad), (c.pad, c.pad)))[..., None].astype(np.float32)
  size = x_tr.shape[1] + 2 * c.pad
  ood = {"ood": pad(shrink_and_shift(x_te[:c.n_ood], c.ood_zoom, c.ood_shift)),
         "ood_photos": datasets.sample_image_patches(c.n_ood, size, seed=seed + 2)[..., None].astype(np.float32)}
  return name, pad(x_tr), y_tr, pad(x_te), y_te, ood


# ----------------------------------------------------------------------------------------------------------
# Training and evaluation


METHODS = ("ens", "single", "steerable", "canon")
CHANCE_FAILED = 0.2  # test accuracy at or below this (chance 0.1 on 10 classes) marks a training that failed
_LABELS = {"ens": "DeepEns+DA", "single": "only DA (single model)", "steerable": "steerable CNN (E2CNN-style)",
           "canon": "Canon"}
SETS = ("test", "ood", "ood_photos")


def _models(c, k, group, shape):
  spec = ArchSpec(kind="cnn", width=c.cnn_width, depth=2, out_dim=10, readout="flatten", pool=c.cnn_pool,
                  parameterization="standard", b_std=0.0)
  if any(side % c.cnn_pool ** 2 for side in shape[:2]):
    raise ValueError(f"cnn_pool={c.cnn_pool} twice needs image sides divisible by {c.cnn_pool ** 2} (rot90 "
                     f"symmetry of the pooling); the images are {shape[0]}x{shape[1]}: change pad or cnn_pool.")
  if any(ch % k for ch in c.steer_channels):
    raise ValueError(f"steer_channels={c.steer_channels} must be divisible by k={k}.")
  # 2x2 pooling after the first two layers while the sides stay even (exact rot90 needs even sides).
  pools = tuple(i for i in range(2) if shape[0] % 2 ** (i + 1) == 0)
  return {
      "ens": (spec.flax(), c.n_members, c.learning_rate),
      "steerable": (steerable.SteerableCNN(group=f"C{k}", channels=tuple(ch // k for ch in c.steer_channels),
                                           num_classes=10, kernel_size=c.steer_kernel_size, pool_after=pools,
                                           hidden=64, spatial_pool="max"), c.baseline_members,
                    c.steer_learning_rate),
      "canon": (em.Canonicalizer(group, spec.flax(), em.SmallScorer(c.canon_scorer_channels)), c.baseline_members,
                c.learning_rate),
  }


def _views(logits):
  """Per method ``(M', k, n, C)`` logits: the ensemble averages its members' logits; "single" keeps them."""
  return {"ens": logits["ens"].mean(0, keepdims=True), "single": logits["ens"],
          "steerable": logits["steerable"], "canon": logits["canon"]}


def _train_group(c, r, ki, k, x_tr, y_tr, sets, x_so2, add):
  """Trains every method of run ``r`` on the full C_k orbit of the training set; returns per evaluation set the
  per-method ``(M', k, n, C)`` orbit logits and the ``(M', so2_angles, n_so2, C)`` logits over SO(2)."""
  shape = x_tr.shape[1:]
  key = jax.random.PRNGKey(c.seed + r)
  so2 = groups.rotations_ck(c.so2_angles, shape)
  group = groups.rotations_ck(k, shape)
  x_aug, y_aug = groups.augment_full_orbit(group, x_tr, y_tr)
  logits, dense = {}, {}
  for mi, (method, (model, m, lr)) in enumerate(_models(c, k, group, shape).items()):
    t1 = time.perf_counter()
    steps = c.steps if method == "ens" or not c.baseline_steps else c.baseline_steps
    schedule = lr if c.lr_schedule == "constant" else optax.cosine_decay_schedule(lr, steps)
    params, losses = ens.train_classifiers(
        model, x_aug, y_aug, m, jax.random.fold_in(key, 100 * ki + mi), learning_rate=schedule, steps=steps,
        batch_size=c.batch_size, member_axis=c.member_axis, progress=f"run {r} C{k} {method}")
    add(f"train_loss_{method}_c{k}", losses[-max(1, len(losses) // 10):].mean())
    logits[method] = {s_: ens.orbit_logits(model, params, group, x, c.eval_chunk, c.member_axis)
                      for s_, x in sets.items()}
    dense[method] = ens.orbit_logits(model, params, so2, x_so2, c.eval_chunk, c.member_axis)
    add(f"seconds_{method}_c{k}", time.perf_counter() - t1)
  return {s_: _views({m_: logits[m_][s_] for m_ in logits}) for s_ in sets}, _views(dense)


def _score_group(k, by_set, so2_views, y_te, add, hist, agree):
  """Per-run OSP / symmetrized KL / accuracy / SO(2) OSP of every method into ``add``; accumulates the OOD
  class histogram ``hist[(method, k)]`` and the agreement-vs-angle curves ``agree[(method, k)]``."""
  for method in METHODS:
    for s_, views in by_set.items():
      l = views[method]
      add(f"osp_{s_}_{method}_c{k}", np.mean([metrics.orbit_same_predictions(li)[0] for li in l]))
      add(f"sym_kl_{s_}_{method}_c{k}", np.mean([metrics.symmetrized_kl(li)[0] for li in l]))
    add(f"test_accuracy_{method}_c{k}", np.mean([metrics.accuracy(li[0], y_te) for li in by_set["test"][method]]))
    pred = by_set["ood"][method][:, 0].argmax(-1).ravel()  # unrotated OOD inputs, all members
    hist[(method, k)] = hist.get((method, k), 0) + np.bincount(pred, minlength=10)
    l = so2_views[method]  # (M', 64, n, C)
    add(f"so2_osp64_{method}_c{k}", np.mean([metrics.orbit_same_predictions(li)[0] for li in l]))
    same = (l.argmax(-1) == l[:, :1].argmax(-1)).mean(axis=(0, 2))  # (64,) agreement with angle 0
    agree.setdefault((method, k), []).append(same)


def _aggregate(c, per_run, hist):
  """Mean and std (ddof 1) over runs of every per-run value; test accuracy keeps no ``_mean`` suffix; the
  entropy (bits) of each method's OOD class histogram."""
  out = {"n_train": c.n_train, "n_test": c.n_test, "n_runs": c.n_runs}
  for key_, vals in per_run.items():
    out[f"{key_}_mean"] = float(np.mean(vals))
    out[f"{key_}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
  for method in METHODS:
    for k in c.ks:
      out[f"test_accuracy_{method}_c{k}"] = out.pop(f"test_accuracy_{method}_c{k}_mean")
      p_ = hist[(method, k)] / hist[(method, k)].sum()
      out[f"ood_pred_entropy_{method}_c{k}"] = float(-np.sum(p_[p_ > 0] * np.log2(p_[p_ > 0])))
  return out


def run(c: ml_collections.ConfigDict, workdir: str) -> dict:
  t0 = time.perf_counter()
  if c.n_runs < 1 or c.n_members < 1 or c.steps < 1 or c.baseline_steps < 0:
    raise ValueError(f"n_runs={c.n_runs}, n_members={c.n_members} and steps={c.steps} must be >= 1, "
                     f"baseline_steps={c.baseline_steps} >= 0 (0: steps).")
  if c.lr_schedule not in ("constant", "cosine"):
    raise ValueError(f"lr_schedule={c.lr_schedule!r}: use 'constant' or 'cosine'.")
  per_run, hist, agree = {}, {}, {}  # per_run[key] = [value per run]; hist: OOD class counts; agree: SO(2) curves
  add = lambda key, v: per_run.setdefault(key, []).append(float(v))
  data_name = ""
  for r in range(c.n_runs):
    data_name, x_tr, y_tr, x_te, y_te, ood = _prepare(c, c.seed + r)
    for ki, k in enumerate(c.ks):
      by_set, so2_views = _train_group(c, r, ki, k, x_tr, y_tr, {"test": x_te, **ood}, x_te[:c.n_so2], add)
      _score_group(k, by_set, so2_views, y_te, add, hist, agree)
  out = _aggregate(c, per_run, hist)
  # A training that ends at chance is not a result: counted here and named in the summary.
  failed = [(m, k, r) for m in METHODS for k in c.ks
            for r, acc in enumerate(per_run[f"test_accuracy_{m}_c{k}"]) if acc <= CHANCE_FAILED]
  out["n_trainings_at_chance"] = len(failed)
  _figures(c, workdir, out, agree)
  out["wall_seconds"] = time.perf_counter() - t0
  _summary(c, workdir, out, hist, data_name, failed)
  return out


def _figures(c, workdir, out, agree):
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, len(SETS), figsize=(4 * len(SETS), 3.6))
  width = 0.8 / len(METHODS)
  for ax, s_ in zip(axes, SETS):
    for i, m in enumerate(METHODS):
      xs = np.arange(len(c.ks)) + (i - 1.5) * width
      ax.bar(xs, [out[f"osp_{s_}_{m}_c{k}_mean"] / k for k in c.ks], width,
             yerr=[out[f"osp_{s_}_{m}_c{k}_std"] / k for k in c.ks], label=_LABELS[m])
    ax.set_xticks(np.arange(len(c.ks)), [f"C{k}" for k in c.ks])
    ax.set_ylim(0, 1.05)
    ax.set_title({"test": "test set", "ood": "OOD: shrunk + shifted digits", "ood_photos": "OOD: photo patches"}[s_])
  axes[0].set_ylabel("OSP / |G| (mean ± std over runs)")
  axes[-1].legend(fontsize=7, loc="lower right")
  cli.save_figure(fig, workdir, "osp_by_method")
  fig, axes = plt.subplots(1, len(c.ks), figsize=(4 * len(c.ks), 3.4), squeeze=False)
  angles = 360.0 * np.arange(c.so2_angles) / c.so2_angles
  for ax, k in zip(axes[0], c.ks):
    for m in METHODS:
      ax.plot(angles, np.mean(agree[(m, k)], axis=0), label=_LABELS[m])
    for a in range(k):
      ax.axvline(360.0 * a / k, color="0.85", lw=0.8, zorder=0)
    ax.set_title(f"trained with C{k} augmentation / C{k} models")
    ax.set_xlabel("rotation angle (degrees)")
  axes[0, 0].set_ylabel("fraction predicting the unrotated class")
  axes[0, -1].legend(fontsize=7)
  cli.save_figure(fig, workdir, "so2_agreement")


def _summary(c, workdir, out, hist, data_name, failed):
  cell = lambda key: f"{out[key + '_mean']:.2f} ± {out[key + '_std']:.2f}"
  header = ["method"] + [f"C{k}" for k in c.ks]
  table = lambda s_: cli.markdown_table(
      [[_LABELS[m]] + [cell(f"osp_{s_}_{m}_c{k}") for k in c.ks] for m in METHODS], header)
  extra = cli.markdown_table(
      [[_LABELS[m]] + [f"{out[f'test_accuracy_{m}_c{k}']:.3f} / {cell(f'so2_osp64_{m}_c{k}')} / "
                       f"{out[f'sym_kl_ood_{m}_c{k}_mean']:.3g} / {out[f'ood_pred_entropy_{m}_c{k}']:.2f}"
                       for k in c.ks] for m in METHODS], header)
  hists = cli.markdown_table(
      [[_LABELS[m], f"C{k}"] + [int(v) for v in hist[(m, k)]] for m in METHODS for k in c.ks],
      ["method", "group"] + [str(i) for i in range(10)])
  text = "\n".join([
      f"# Rotated {data_name}: OSP (orbit same predictions, max = |G|), mean ± std over {c.n_runs} runs",
      "",
      f"Per run: {c.n_train} training images x k rotations (full orbit), {c.n_test} test images; members: CNN "
      f"2 x [conv{c.cnn_width}, avg-pool {c.cnn_pool}] + linear, M = {c.n_members}, Adam {c.learning_rate} "
      f"({c.lr_schedule}), {c.steps} steps of batch {c.batch_size} drawn from the shuffled augmented set (the same "
      f"for every k); steerable and Canon: {c.baseline_steps or c.steps} steps. "
      "C8/C16 rotate by bilinear interpolation (not exact). Each cell is "
      "the mean ± std over runs of the per-run mean OSP.",
      "",
      f"## Out of distribution (headline): test digits shrunk to {c.ood_zoom} and shifted by {c.ood_shift} px",
      table("ood"),
      "",
      "## Test set",
      table("test"),
      "",
      "## Out of distribution: patches of scikit-learn's sample photographs",
      table("ood_photos"),
      "",
      f"## Test accuracy / OSP over {c.so2_angles} rotations (SO(2), max {c.so2_angles}) / symmetrized KL (OOD) / "
      "entropy of the OOD class histogram (bits, uniform 3.32)",
      extra,
      "",
      "## Class histogram of the OOD predictions (unrotated inputs, all runs; single = all members)",
      hists,
      "",
      *([f"**{len(failed)} training(s) ended at chance (test accuracy <= {CHANCE_FAILED}; their OSP only measures a "
         "near-constant prediction, and the cells above include them): "
         + ", ".join(f"{_LABELS[m]} C{k} run {r}" for m, k, r in failed) + ".**", ""] if failed else []),
      f"Wall time {out['wall_seconds']:.0f} s.",
      "",
      "![osp](osp_by_method.png) ![so2](so2_agreement.png)",
  ])
  cli.write_summary(workdir, text)


if __name__ == "__main__":
  cli.main(get_config, run, name="rotated_digits", variants=VARIANTS)
