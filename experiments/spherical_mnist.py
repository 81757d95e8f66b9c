"""Spherical MNIST with the HEAL-SWIN classifier: NR/NR, R/R and NR/R (train / test rotation).

Digits of the bundled MNIST-5k are projected onto the full HEALPix sphere (gnomonic chart at the north pole,
bilinear, 4 sub-samples per pixel; ``healswin_jax.data.spherical_mnist``), either non-rotated (NR) or rotated
by a Haar-random rotation (R). The HEAL-SWIN encoder + mean pool + linear head is trained with cross-entropy.
Two trainings cover the three settings: one on NR digits (tested on the NR and on the rotated R test digits --
the same digits -- giving NR/NR and NR/R) and one on R digits (R/R). Test digits are disjoint from training
digits.

Run::

  python -m experiments.spherical_mnist --quick --workdir runs/spherical_mnist_quick
  python -m experiments.spherical_mnist --workdir runs/spherical_mnist

Quick: nside 8 (768 pixels), 600 train / 200 test digits, a 2-stage classifier (Swin-V1 attention, no
relative position bias), 600 steps of batch 16 per training (about a minute of CPU time on 2 quiet cores; 165 s
wall / 50 s CPU on a shared, busy machine). Full: nside 16 (3,072 pixels), 4,000 / 1,000 digits, 3 stages (V1,
no bias), 2,000 steps of batch 16 per training (675 s wall on 2 quiet cores). Metrics:
``test_accuracy_nr_nr``, ``test_accuracy_r_r``, ``test_accuracy_nr_r`` and the training
``loss_first_nr`` / ``loss_last_nr``, ``loss_first_r`` / ``loss_last_r`` (mean loss over the first / last 10 %
of steps).

Measured (quick, seed 0): NR/NR 0.38, NR/R 0.105, R/R 0.065 (chance 0.1); loss 2.32 -> 1.59 on NR digits
(ratio 0.68 < 0.7), 2.33 -> 2.29 on R digits (no learning yet at this budget). The quick model learns slowly:
with the paper's Swin-V2 cosine attention (and with V1 at lr >= 3e-3) the NR loss stayed at ln 10 for 300-500
steps, so the quick setting uses V1 at lr 1e-3; a logistic regression on the same NR pixels reaches 0.81, so
the data are not the bottleneck. Measured (full, seed 0): NR/NR 0.725, NR/R 0.097, R/R 0.088; loss 2.09 ->
0.73 on NR digits, 2.34 -> 2.30 on R digits: the rotated training set is still not learned in 2,000 steps
(randomly rotated digits need far more steps or data; the paper's spherical-MNIST numbers are not reproduced).
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np

from healswin_jax import metrics as metrics_lib
from healswin_jax import plotting
from healswin_jax import tasks
from healswin_jax import train
from healswin_jax.data import spherical_mnist
from infra import cli


def get_config(quick: bool = False) -> ml_collections.ConfigDict:
  c = train.base_config()
  c.task = "classification"
  c.data.update(source="spherical_mnist", faces=tuple(range(12)))
  c.loss.class_weights = "none"
  if quick:
    c.num_steps = 600
    c.batch_size = 16
    c.eval_batch_size = 50
    c.checkpoint_every = 300
    c.data.update(num_train=600, num_test=200, nside=8)
    # Swin-V1 attention without the relative position bias: at this scale the paper's V2 cosine attention
    # stays at chance (loss ln 10) for hundreds of steps, V1 starts learning after ~100 (measured, see
    # the module docstring).
    c.model.update(embed_dim=32, depths=(2, 2), num_heads=(2, 4), mlp_ratio=2.0, attention="v1",
                   rel_pos_bias=False)
    c.optim.update(lr=1e-3, warmup_steps=20)
  else:
    c.num_steps = 2000
    c.batch_size = 16
    c.eval_batch_size = 100
    c.checkpoint_every = 500
    c.data.update(num_train=4000, num_test=1000, nside=16)
    # V1 attention without the bias, as in quick mode: the setting that is measured to learn at this scale.
    c.model.update(embed_dim=48, depths=(2, 2, 2), num_heads=(3, 6, 12), attention="v1", rel_pos_bias=False)
    c.optim.update(lr=1e-3, warmup_steps=100)
  return c


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  out = {}
  results = {}
  for train_setting in ("nr_nr", "r_r"):
    cfg = ml_collections.ConfigDict(config.to_dict())
    cfg.data.setting = train_setting
    res = train.train_and_evaluate(cfg, os.path.join(workdir, train_setting))
    results[train_setting] = res
    tag = train_setting.split("_")[0]
    out[f"test_accuracy_{train_setting}"] = res.metrics["test_accuracy"]
    out[f"loss_first_{tag}"] = res.metrics["loss_first"]
    out[f"loss_last_{tag}"] = res.metrics["loss_last"]
  # NR/R: the model trained on non-rotated digits, tested on the same test digits rotated.
  d = config.data
  rotated = spherical_mnist.make_spherical_mnist(d.nside, d.num_train, d.num_test, "nr_r", seed=d.seed,
                                                 faces=tuple(d.faces), half_extent_deg=d.half_extent_deg)
  nr = results["nr_nr"]
  np.testing.assert_array_equal(rotated["y_test"], nr.data.test["targets"])  # same digits, now rotated
  logits = nr.predict(tasks.normalize_inputs(rotated["x_test"]))
  out["test_accuracy_nr_r"] = metrics_lib.accuracy(logits.argmax(-1), rotated["y_test"])

  faces = tuple(d.faces)
  panels = [(f"NR test digit (label {nr.data.test['targets'][0]})", nr.data.test["inputs"][0, :, 0], {}),
            ("same digit rotated (R)", tasks.normalize_inputs(rotated["x_test"][0, :, 0]), {}),
            (f"R/R train digit (label {results['r_r'].data.train['targets'][0]})",
             results["r_r"].data.train["inputs"][0, :, 0], {})]
  cli.save_figure(plotting.sphere_figure(panels, d.nside, faces, "spherical MNIST inputs"), workdir, "inputs")
  rows = [["NR/NR", out["test_accuracy_nr_nr"]], ["R/R", out["test_accuracy_r_r"]],
          ["NR/R", out["test_accuracy_nr_r"]]]
  cli.write_summary(workdir, "\n".join([
      "# Spherical MNIST (HEAL-SWIN classifier)", "",
      f"nside {d.nside}, {d.num_train} train / {d.num_test} test digits, {config.num_steps} steps of batch "
      f"{config.batch_size} per training.", "", cli.markdown_table(rows, ["train/test", "test accuracy"]), "",
      "Figure: `inputs.png` (a digit non-rotated and rotated on the sphere)."]))
  return out


if __name__ == "__main__":
  cli.main(get_config, run, name="spherical_mnist", validate=train.validate_config,
           fixed={"data.setting": "it trains once on NR and once on R digits and tests both"})
