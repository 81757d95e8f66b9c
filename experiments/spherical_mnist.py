"""Spherical MNIST with the HEAL-SWIN classifier: NR/NR, R/R and NR/R (train / test rotation).

Digits of the bundled MNIST-5k are projected onto the full HEALPix sphere (gnomonic chart at the north pole,
bilinear, 4 sub-samples per pixel; ``healswin_jax.data.spherical_mnist``), either non-rotated (NR) or rotated
by a Haar-random rotation (R). The HEAL-SWIN encoder + max pool + linear head is trained with cross-entropy.
Two trainings cover the three settings: one on NR digits (tested on the NR and on the rotated R test digits --
the same digits -- giving NR/NR and NR/R) and one on R digits (R/R). Test digits are disjoint from training
digits.

Run::

  python -m experiments.spherical_mnist --quick --workdir runs/spherical_mnist_quick
  python -m experiments.spherical_mnist --workdir runs/spherical_mnist

Quick: nside 8 (768 pixels), 2,000 train / 200 test digits, a 2-stage classifier, 600 steps of batch 16 per
training. Full: nside 16 (3,072 pixels), 4,000 / 1,000 digits, 3 stages, 2,000 steps of batch 16 for the NR
training and ``r_num_steps`` = 5,000 for the R training.
Both use the ring shift (the grid shift never joins the four faces that meet at the pole, where the NR digits
sit), Swin-V1 attention without the relative position bias, a LayerNorm after the patch embedding and the
max pool over tokens (``HealSwinConfig.pool``; the mean pool stays at chance on these sparse maps, see the
README). The R training is rotation-augmented: ``data.train_rotations`` independently rotated copies of each
training digit, as many as the training makes passes over the digits, so a digit is shown under a fresh
rotation each time it is drawn (the NR training is never augmented; ``train_rotations=1`` is the fixed-rotation
protocol). The baselines of R/R are fitted on the same augmented arrays.

Metrics: ``test_accuracy_nr_nr``, ``test_accuracy_r_r``, ``test_accuracy_nr_r``, the training
``loss_first_nr`` / ``loss_last_nr``, ``loss_first_r`` / ``loss_last_r`` (mean loss over the first / last 10 %
of steps), ``baseline_{logreg,logreg_sorted,mlp}_accuracy_{nr_nr,r_r,nr_r}``: logistic regression on the
pixels, on the 300 largest pixel values (rotation invariant) and a one-hidden-layer MLP, trained and tested on
the same arrays, and ``baseline_flat_swin_accuracy_nr_nr``: the flat Swin of the same sizes, trained like the NR
training on the same digits before projection (what the architecture reaches without the sphere).
``summary.md`` says in one line when a setting ends at chance or below logistic regression.
Figures: ``learning_curve.png``, ``inputs.png``.
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np

from healswin_jax import metrics as metrics_lib
from healswin_jax import plotting
from healswin_jax import tasks
from healswin_jax import run_config
from healswin_jax.config import MODEL_SIZES
from healswin_jax import train
from healswin_jax.data import spherical_mnist
from infra import cli


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  """Quick (CI) or full settings.

  How they were chosen (short runs on the full-mode data, compared with each other and with the baselines; the
  records under ``results/spherical_mnist`` hold the final numbers): V1 attention without relative position bias,
  patch norm and the max pool fit rotated digits fastest; window 4 (16 tokens per window was not better on NR
  digits); no drop path (0.1 was not better); the digit's half extent 45 degrees (60, more pixels per digit,
  was not better); rotation augmentation for the R training: one fixed rotation per digit leaves a large
  train/test gap, fresh rotations close it, after which the R training is limited by how fast it fits, not by
  overfitting.
  """
  c = run_config.base_config()
  c.task = "classification"
  c.data.update(source="spherical_mnist", faces=tuple(range(12)))
  # R training: rotated copies of each training digit (healswin_jax.data.spherical_mnist.make_spherical_mnist);
  # 1 = one fixed rotation per digit.
  c.data.train_rotations = 1
  c.loss.class_weights = "none"
  # Swin-V1 attention, LayerNorm after the patch embedding and the (default) max pool: the combination that
  # fits 256 rotated digits fastest at nside 8 (see the README's spherical-MNIST diagnosis).
  c.model.update(attention="v1", rel_pos_bias=False, patch_norm=True, pool="max")
  # Ring shift: NR digits sit on the north pole, where four faces meet. Windows never cross faces, and the grid
  # shift never lets two north-polar faces attend to each other (a diagonal translation cannot pass through the
  # pole), so with it the network sees a centred digit as four separate quarters until the pool. The ring shift
  # rolls along the rings around the pole and joins them (README: spherical-MNIST diagnosis).
  c.model.shift_strategy = "ring"
  # Baselines are fitted on at most this many training examples (a seeded random subset of the R training's
  # rotated copies when there are more): scikit-learn's MLP on all copies would cost more than the network.
  c.baseline_max_train = 32000
  if quick:
    c.num_steps = 600
    c.r_num_steps = 600  # steps of the R training (the NR training runs num_steps)
    c.batch_size = 16
    c.eval_batch_size = 50
    c.checkpoint_every = 300
    c.data.update(num_train=2000, num_test=200, nside=8, train_rotations=5)  # 600 x 16 = 4.8 passes
    c.model.update(embed_dim=32, depths=(2, 2), num_heads=(2, 4), mlp_ratio=2.0)
    c.optim.update(lr=1e-3, warmup_steps=20)
  else:
    c.num_steps = 2000
    # The R training is limited by how fast it fits (test accuracy rose with its length while the NR training
    # had long converged), so it gets 2.5x the steps; 8,000 steps on 32 copies gave a higher R/R but ran past
    # 30 minutes on a 2-core host (results/spherical_mnist/r_steps_8000.json); set r_num_steps and
    # data.train_rotations to run it.
    c.r_num_steps = 5000
    c.batch_size = 16
    c.eval_batch_size = 100
    c.checkpoint_every = 500
    # 5,000 steps of 16 = 20 passes over 4,000 digits: 20 rotated copies show an R digit under a fresh rotation
    # every time it is drawn (the standard rotation augmentation, new rotations each epoch).
    c.data.update(num_train=4000, num_test=1000, nside=16, train_rotations=20)
    c.model.update(MODEL_SIZES["full"])
    c.optim.update(lr=1e-3, warmup_steps=100)
  return c


CHANCE = 0.1


def _verdict(name: str, acc: float, logreg: float, num_test: int) -> str | None:
  """One line when a HEAL-SWIN accuracy is at chance (within 3 binomial standard deviations of the test set)
  or below the logistic-regression baseline; None otherwise."""
  at_chance = acc <= CHANCE + 3 * np.sqrt(CHANCE * (1 - CHANCE) / num_test)
  if not (at_chance or acc < logreg):
    return None
  if at_chance:
    return (f"**{name}: HEAL-SWIN test accuracy {acc:.3f} is at chance level {CHANCE}: this setting was not "
            f"learned and its number is not a result (best logistic regression on the same arrays: {logreg:.3f}).**")
  return (f"**{name}: HEAL-SWIN test accuracy {acc:.3f} is below the best logistic regression on the same arrays "
          f"({logreg:.3f}): here the network does worse than a linear model.**")


def learning_curve_figure(results: dict, window: int):
  """Training loss (moving average over ``window`` steps) of each training, with ln 10 (chance) marked."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 3.5))
  for setting, res in results.items():
    loss = np.asarray(res.losses, np.float64)
    w = max(1, min(window, len(loss)))
    smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
    ax.plot(np.arange(w, len(loss) + 1), smooth, label=f"trained on {setting.split('_')[0].upper()} digits")
  ax.axhline(np.log(10.0), color="gray", ls="--", lw=1, label="ln 10 (chance)")
  ax.set_xlabel("step")
  ax.set_ylabel(f"training loss ({window}-step mean)")
  ax.legend()
  ax.set_title("spherical MNIST: HEAL-SWIN learning curves")
  return fig


def _train_flat(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """The flat Swin of the same sizes (``run_config.flat_model_config``) trained like the NR training, on the same
  digits unprojected (``workdir/flat_nr_nr``): ``baseline_flat_swin_accuracy_nr_nr``, what the same
  architecture reaches without the sphere."""
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.model = run_config.flat_model_config(config.model)
  cfg.data.update(setting="nr_nr", train_rotations=1)
  res = train.train_and_evaluate(cfg, os.path.join(workdir, "flat_nr_nr"))
  return {"baseline_flat_swin_accuracy_nr_nr": res.metrics["test_accuracy"]}


_SETTINGS = ("nr_nr", "r_r", "nr_r")
_NAMES = {"nr_nr": "NR/NR", "r_r": "R/R", "nr_r": "NR/R"}
_BASELINES = ("logreg", "logreg_sorted", "mlp")


def _train_both(config: ml_collections.ConfigDict, workdir: str) -> tuple[dict, dict[str, float]]:
  """Trains once on NR and once on R digits (each in ``workdir/<setting>``).

  Returns ({"nr_nr": result, "r_r": result} of ``train.train_and_evaluate``, the metrics
  ``test_accuracy_{nr_nr,r_r}`` and ``loss_{first,last}_{nr,r}``).
  """
  out, results = {}, {}
  for train_setting in ("nr_nr", "r_r"):
    cfg = ml_collections.ConfigDict(config.to_dict())
    cfg.data.setting = train_setting
    if train_setting == "nr_nr":  # rotation augmentation applies to the rotated training digits only
      cfg.data.train_rotations = 1
    else:
      cfg.num_steps = config.r_num_steps
    res = train.train_and_evaluate(cfg, os.path.join(workdir, train_setting))
    results[train_setting] = res
    tag = train_setting.split("_")[0]
    out[f"test_accuracy_{train_setting}"] = res.metrics["test_accuracy"]
    out[f"loss_first_{tag}"] = res.metrics["loss_first"]
    out[f"loss_last_{tag}"] = res.metrics["loss_last"]
  return results, out


def _rotated_test(d: ml_collections.ConfigDict, nr) -> tuple[np.ndarray, np.ndarray]:
  """The NR training's test digits, rotated (NR/R): normalized inputs (num_test, pixels, 1) and labels
  (num_test,), asserted to be the same digits as ``nr.data.test``."""
  rotated = spherical_mnist.make_spherical_mnist(d.nside, d.num_train, d.num_test, "nr_r", seed=d.seed,
                                                 faces=tuple(d.faces), half_extent_deg=d.half_extent_deg)
  np.testing.assert_array_equal(rotated["y_test"], nr.data.test["targets"])  # same digits, now rotated
  return tasks.normalize_inputs(rotated["x_test"]), rotated["y_test"]


def _baseline_metrics(results: dict, x_nr_r: np.ndarray, y_nr_r: np.ndarray, seed: int,
                      max_train: int) -> dict[str, float]:
  """``baseline_{logreg,logreg_sorted,mlp}_accuracy_{nr_nr,r_r,nr_r}``, fitted on the very arrays HEAL-SWIN
  was trained and tested on (the NR training's arrays for NR/NR and NR/R, the R training's for R/R; at most
  ``max_train`` training examples, a seeded random subset)."""
  nr, r = results["nr_nr"].data, results["r_r"].data

  def subset(data):
    n = len(data.train["targets"])
    idx = np.sort(np.random.default_rng(seed).permutation(n)[:max_train]) if n > max_train else slice(None)
    return data.train["inputs"][idx], data.train["targets"][idx]

  base = spherical_mnist.baseline_accuracies(
      *subset(nr), {"nr_nr": (nr.test["inputs"], nr.test["targets"]), "nr_r": (x_nr_r, y_nr_r)}, seed=seed)
  base.update({k: v for k, v in spherical_mnist.baseline_accuracies(
      *subset(r), {"r_r": (r.test["inputs"], r.test["targets"])}, seed=seed).items()
      if k.endswith("r_r")})
  return {f"baseline_{m}_accuracy_{s}": base[f"{m}_{s}"] for m in _BASELINES for s in _SETTINGS}


def _inputs_figure(results: dict, x_nr_r: np.ndarray, d: ml_collections.ConfigDict):
  """An NR test digit, the same digit rotated and an R training digit on the sphere."""
  nr, r = results["nr_nr"].data, results["r_r"].data
  panels = [(f"NR test digit (label {nr.test['targets'][0]})", nr.test["inputs"][0, :, 0], {}),
            ("same digit rotated (R)", x_nr_r[0, :, 0], {}),
            (f"R/R train digit (label {r.train['targets'][0]})", r.train["inputs"][0, :, 0], {})]
  return plotting.sphere_figure(panels, d.nside, tuple(d.faces), "spherical MNIST inputs")


def _summary(config: ml_collections.ConfigDict, out: dict[str, float]) -> str:
  """summary.md: the settings, the verdict lines (chance / below logistic regression) and the accuracy table."""
  d = config.data
  rows = [[_NAMES[s], out[f"test_accuracy_{s}"]] + [out[f"baseline_{m}_accuracy_{s}"] for m in _BASELINES]
          for s in _SETTINGS]
  verdicts = [_verdict(_NAMES[s], out[f"test_accuracy_{s}"],
                       max(out[f"baseline_logreg_accuracy_{s}"], out[f"baseline_logreg_sorted_accuracy_{s}"]),
                       d.num_test) for s in ("nr_nr", "r_r")]
  return "\n".join([
      "# Spherical MNIST (HEAL-SWIN classifier)", "",
      f"nside {d.nside}, {d.num_train} train / {d.num_test} test digits, {config.num_steps} (NR) and "
      f"{config.r_num_steps} (R) steps of batch {config.batch_size}; attention {config.model.attention}, "
      f"window {config.model.window_size}, {config.model.shift_strategy} shift, "
      f"pool {config.model.pool}. The R training uses {d.train_rotations} rotated "
      f"cop{'y' if d.train_rotations == 1 else 'ies'} of each training digit (rotation augmentation"
      f"{'' if d.train_rotations > 1 else ' off'}). "
      f"Baselines (scikit-learn) on the same arrays (for R/R: the rotated copies; at most "
      f"{config.baseline_max_train} training examples, a random subset): logistic regression on the "
      f"pixels, on the "
      f"{min(300, d.nside**2 * len(tuple(d.faces)))} largest pixel values (rotation invariant) and an MLP (256 "
      "hidden).",
      "", *[v for v in verdicts if v], "",
      cli.markdown_table(rows, ["train/test", "HEAL-SWIN", "logreg (pixels)", "logreg (sorted pixels)",
                                   "MLP (pixels)"]), "",
      f"The flat Swin of the same sizes, trained like the NR training on the same digits before projection: "
      f"test accuracy {out['baseline_flat_swin_accuracy_nr_nr']:.3f} (HEAL-SWIN NR/NR "
      f"{out['test_accuracy_nr_nr']:.3f}).", "",
      "Figures: `learning_curve.png` (training loss of both trainings), `inputs.png` (a digit non-rotated and "
      "rotated on the sphere)."])


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  for key in ("r_num_steps", "baseline_max_train"):  # checked before any training starts
    if not isinstance(config[key], int) or config[key] < 1:
      raise ValueError(f"{key}={config[key]!r} must be a positive int; fix it with --set {key}=N.")
  results, out = _train_both(config, workdir)
  # NR/R: the model trained on non-rotated digits, tested on the same test digits rotated.
  x_nr_r, y_nr_r = _rotated_test(config.data, results["nr_nr"])
  out["test_accuracy_nr_r"] = metrics_lib.accuracy(results["nr_nr"].predict(x_nr_r).argmax(-1), y_nr_r)
  out.update(_baseline_metrics(results, x_nr_r, y_nr_r, config.data.seed, config.baseline_max_train))
  out.update(_train_flat(config, workdir))
  cli.save_figure(_inputs_figure(results, x_nr_r, config.data), workdir, "inputs")
  cli.save_figure(learning_curve_figure(results, max(1, config.num_steps // 20)), workdir, "learning_curve")
  cli.write_summary(workdir, _summary(config, out))
  return out


if __name__ == "__main__":
  cli.main(get_config, run, name="spherical_mnist", validate=train.validate_config,
           fixed={"data.setting": "it trains once on NR and once on R digits and tests both"})
