"""The HEAL-SWIN vs flat Swin comparisons at the paper's pixel ratio: presets, matched-resolution checks, the
seed summary, and tiny end-to-end runs of ``healswin_vs_swin`` / ``healswin_data_efficiency`` (metric keys)."""

import json
import os
import re

import numpy as np
import pytest

from experiments import healswin_data_efficiency, healswin_resampling, healswin_segmentation, healswin_vs_swin
from healswin_jax import comparison, evaluation, losses, metrics, presets, tasks, train
from healswin_jax import model as model_lib
from infra import cli, results
from tests.test_healswin_experiments import _finite as _has

# nside 8 on 8 faces vs 24 x 20: 512 : 480, the paper's 1.067.
TINY = ["--set", "num_steps=4", "--set", "checkpoint_every=4", "--set", "data.num_train=4", "--set",
        "data.num_test=2", "--set", "data.nside=8", "--set", "data.image_width=24", "--set", "data.image_height=20",
        "--set", "model.embed_dim=8", "--set", "model.depths=(1, 1)", "--set", "model.num_heads=(1, 2)", "--set",
        "model.mlp_ratio=1.0", "--set", "eval_batch_size=2", "--set", "batch_size=2"]


def _main(module, name, workdir, *extra, variants=presets.PRESETS):
  metrics = cli.main(module.get_config, module.run, name=name, variants=variants,
                     argv=["--workdir", str(workdir), *extra])
  with open(os.path.join(workdir, "metrics.json")) as f:
    assert json.load(f) == metrics
  assert os.path.getsize(os.path.join(workdir, "summary.md")) > 0
  return metrics


def test_paper_preset_settings_and_learning_rates():
  base = comparison.matched_config(quick=False)
  paper = presets.apply_preset(base, "paper")
  m = paper.model
  assert (m.shift_strategy, m.window_size, m.drop_rate, m.attn_drop_rate, m.drop_path_rate) == ("ring", 64, .1, .1, .1)
  assert len(m.depths) == 2 and paper.loss.outside_image == "void"
  assert (paper.optim.name, paper.optim.weight_decay, paper.optim.warmup_steps, paper.optim.final_lr_ratio,
          paper.optim.grad_clip) == ("adam", 0.0, 0, 1.0, 0.0)
  seg = presets.model_configs(paper)
  assert seg["swin"].model.kind == "flat" and seg["swin"].model.window_size == 8  # 8 x 8 tokens
  assert seg["healswin"].optim.lr == seg["swin"].optim.lr == pytest.approx(9.55e-4, rel=1e-3)
  paper.task = "depth"
  dep = presets.model_configs(paper)
  assert (dep["healswin"].optim.lr, dep["swin"].optim.lr) == (5e-3, 5e-5)
  paper.optim.lr = 2e-4  # an explicit rate is used for both models
  assert {c.optim.lr for c in presets.model_configs(paper).values()} == {2e-4}
  # The default preset changes nothing; both models share everything but the grid.
  assert presets.apply_preset(base, "default").to_dict() == base.to_dict()
  d = presets.model_configs(base)
  assert d["swin"].model.window_size == 2 and d["healswin"].optim.to_dict() == d["swin"].optim.to_dict()
  # The paper preset's flat model pads 96 x 80 to 96 x 96 only (8 x 8 windows at both stages).
  mult = 2 * 8 * 2 ** (len(m.depths) - 1)
  assert (-80 % mult, -96 % mult) == (16, 0)


def test_bad_preset_ratio_and_variant_are_clear_errors(tmp_path):
  with pytest.raises(SystemExit):  # argparse: "invalid choice: 'papr' (choose from default, paper)"
    _main(healswin_vs_swin, "healswin_vs_swin", tmp_path, "--variant", "papr")
  with pytest.raises(ValueError, match=r"unknown preset 'papr'\. Fix: use one of \('default', 'paper'\)"):
    healswin_vs_swin.get_config(True, "papr")
  with pytest.raises(ValueError, match=r"is not the paper's 1\.067\. Fix: use image_width=48, image_height=40"):
    _main(healswin_vs_swin, "healswin_vs_swin", tmp_path, "--quick", "--set", "data.image_width=64", "--set",
          "data.image_height=48")
  with pytest.raises(ValueError, match=r"cannot be matched at nside 16 on 12 faces"):
    _main(healswin_vs_swin, "healswin_vs_swin", tmp_path, "--quick", "--set",
          "data.faces=(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)")
  with pytest.raises(SystemExit):
    _main(healswin_segmentation, "healswin_segmentation", tmp_path, "--variant", "paper", variants=("default",))
  with pytest.raises(ValueError, match=r"fractions=\(\) must be non-empty"):
    _main(healswin_data_efficiency, "healswin_data_efficiency", tmp_path, "--quick", "--set", "fractions=()")


def test_summarise_is_mean_and_sample_std_over_seeds():
  runs = {"healswin": [comparison.Run({"a": 1.0, "iou_c1": 0.5}, None), comparison.Run({"a": 2.0}, None),
                       comparison.Run({"a": 4.0}, None)]}
  out = comparison.summarise(runs)
  assert out["a_healswin_mean"] == pytest.approx(7 / 3)
  assert out["a_healswin_std"] == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1))
  assert (out["iou_c1_healswin_mean"], out["iou_c1_healswin_std"]) == (0.5, 0.0)


def test_train_fraction_keeps_the_test_scenes():
  c = comparison.matched_config(quick=True)
  c.data.update(num_train=8, num_test=2, nside=8, image_width=24, image_height=20)
  full = tasks.build_data(c)
  c.data.train_fraction = 0.25
  part = tasks.build_data(c)
  assert len(part.train["inputs"]) == 2
  np.testing.assert_array_equal(part.train["inputs"], full.train["inputs"][:2])
  np.testing.assert_array_equal(part.test["inputs"], full.test["inputs"])
  c.data.train_fraction = 1.5
  with pytest.raises(ValueError, match=r"train_fraction=1\.5 must be in \(0, 1\]"):
    tasks.build_data(c)


@pytest.mark.slow
def test_vs_swin_tiny_segmentation_and_depth_keys(tmp_path):
  m = _main(healswin_vs_swin, "healswin_vs_swin", tmp_path / "seg", "--quick", *TINY)
  per_model = ["miou_backprojected", "miou_backprojected_no_void", "miou_sphere", "miou_sphere_no_void",
               "pixel_accuracy_backprojected", "error_centre", "error_periphery", "num_params", "loss_last"]
  _has(m, [f"{k}_{n}_{s}" for k in per_model for n in ("healswin", "swin") for s in ("mean", "std")])
  _has(m, ["pixel_ratio", "num_pixels_sphere_seeing_image", "iou_backprojected_class7_healswin_mean"])
  assert m["pixel_ratio"] == pytest.approx(512 / 480) and m["num_seeds"] == 2
  assert m["num_params_healswin_mean"] == m["num_params_swin_mean"]
  assert os.path.getsize(tmp_path / "seg" / "errors_centre_vs_periphery.png") > 0
  d = _main(healswin_vs_swin, "healswin_vs_swin", tmp_path / "depth", "--quick", *TINY, "--set", "task=depth")
  _has(d, [f"{k}_{n}_mean" for k in ("abs_rel", "rmse", "delta1", "chamfer", "chamfer_squared", "sphere_abs_rel")
           for n in ("healswin", "swin")])


def test_data_efficiency_tiny_keys(tmp_path):
  m = _main(healswin_data_efficiency, "healswin_data_efficiency", tmp_path, "--quick", *TINY, "--set",
            "fractions=(0.5, 1.0)", "--set", "seeds=(0, 1)")
  _has(m, [f"miou_backprojected_{n}_f{p}_{s}" for n in ("healswin", "swin") for p in (50, 100)
           for s in ("mean", "std")])
  assert m["num_train_f50"] == 2 and 1.05 <= m["pixel_ratio"] <= 1.08
  assert os.path.getsize(tmp_path / "data_efficiency.png") > 0


@pytest.mark.parametrize("variant", ["default", "paper"])
def test_the_full_fraction_is_the_vs_swin_run(variant):
  """In full mode, fraction 1 of the data-efficiency runs is the healswin_vs_swin run of the same preset: the
  same config, seeds and scenes (quick modes differ in steps). The README's data-efficiency table takes its
  f = 1 column from that record."""
  de = healswin_data_efficiency.get_config(False, variant).to_dict()
  assert de.pop("fractions") == (0.1, 0.25, 0.5, 1.0) and de["data"]["train_fraction"] == 1.0
  assert de == healswin_vs_swin.get_config(False, variant).to_dict()


def test_recorded_fractions_share_the_vs_swin_record_config():
  """Every full data-efficiency record (``<preset>-f<pct>``, one fraction each) ran the config of the
  healswin_vs_swin record of its preset, except for the fraction: the table puts them side by side."""
  root = os.path.join(results.DEFAULT_ROOT, "healswin_data_efficiency")
  names = sorted(n[:-5] for n in os.listdir(root) if re.fullmatch(r"(default|paper)-f\d+\.json", n))
  for name in names:
    rec = results.load("healswin_data_efficiency", name)
    preset, pct = name.split("-f")
    ref = results.load("healswin_vs_swin", preset)["config"]
    cfg = dict(rec["config"])
    assert [round(100 * f) for f in cfg.pop("fractions")] == [int(pct)], name
    assert cfg == ref, name
    assert f"miou_backprojected_healswin_f{pct}_mean" in rec["metrics"], name


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["default", "paper"])
def test_quick_modes_produce_every_key(tmp_path, variant):
  """The quick modes as CI runs them: every key of the issue, pixel ratio within 1.05-1.08."""
  m = _main(healswin_vs_swin, "healswin_vs_swin", tmp_path / "vs", "--quick", "--variant", variant)
  _has(m, [f"miou_{k}_{n}_{s}" for k in ("backprojected", "sphere") for n in ("healswin", "swin")
           for s in ("mean", "std")])
  assert 1.05 <= m["pixel_ratio"] <= 1.08
  e = _main(healswin_data_efficiency, "healswin_data_efficiency", tmp_path / "de", "--quick", "--variant", variant)
  _has(e, [f"miou_backprojected_{n}_f{p}_mean" for n in ("healswin", "swin") for p in (10, 25, 50, 100)])


def _tiny_matched_data(task):
  c = presets.model_configs(comparison.matched_config(quick=True))["healswin"]
  c.task = task
  c.data.update(num_train=2, num_test=3, nside=8, image_width=24, image_height=20)
  return c, tasks.build_data(c)


def test_resampling_ceiling_is_a_perfect_sphere_model_scored_by_the_comparison():
  """The ceiling equals the comparison's own scoring (evaluation.evaluate) of a sphere model whose outputs
  are exactly its test targets: one-hot sphere labels, standardised sphere depths."""
  c, data = _tiny_matched_data("segmentation")
  c_depth, data_depth = _tiny_matched_data("depth")  # the same scenes
  proj = data.projections[0]
  seg_targets = data.test_sphere["labels"]
  ceil = comparison.resampling_ceiling(proj, data.test_flat["labels"], data_depth.test_flat["depth"],
                                       data.num_classes)
  perfect = evaluation.evaluate(c, data, np.eye(data.num_classes, dtype=np.float32)[seg_targets])
  assert perfect["miou_sphere"] == 1.0
  for k in ("miou_backprojected", "miou_backprojected_no_void", "pixel_accuracy_backprojected"):
    assert ceil[k] == perfect[k], k
  assert 0.3 < ceil["miou_backprojected_no_void"] < 1.0  # the round trip loses something at nside 8
  # Depth: a sphere model predicting the sphere depth targets wherever they are valid.
  c, data = c_depth, data_depth
  sph = data.test_sphere["depth"]
  ok = np.isfinite(sph) & (sph > 0)
  outputs = np.where(ok, (np.where(ok, sph, 0.0) - data.depth_mean) / data.depth_std, 1e6)[..., None]
  pred = evaluation.dense_predictions(c, data, outputs.astype(np.float32))["image"]
  cover = np.stack([p.image_mask for p in data.projections])
  keep = cover & metrics.valid_depth(data.test_flat["depth"]) & (pred < 1e5)
  ref = metrics.depth_metrics(pred, data.test_flat["depth"], keep)
  for k in ("abs_rel", "rmse", "delta1"):
    assert ceil[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-6), k
  assert 0 <= ceil["depth_excluded_fraction"] < 0.2
  with pytest.raises(ValueError, match=r"must both be \(n,\) \+ the projection's image shape"):
    comparison.resampling_ceiling(proj, data.test_flat["labels"][:, :-1], data.test_flat["depth"], 8)


def test_resampling_experiment_keys_and_bad_input(tmp_path):
  m = _main(healswin_resampling, "healswin_resampling", tmp_path, "--quick", variants=("default",))
  _has(m, [f"{k}_ceiling_s{s}" for s in (1, 2) for k in (
      "miou_backprojected", "miou_backprojected_no_void", "abs_rel", "depth_excluded_fraction",
      "iou_backprojected_class1")])
  assert (m["nside_s1"], m["nside_s2"], m["image_width_s2"]) == (16, 32, 96)
  assert m["pixel_ratio_s1"] == m["pixel_ratio_s2"] == pytest.approx(1.0667, abs=1e-4)
  assert os.path.getsize(tmp_path / "resampling_ceiling.png") > 0
  with pytest.raises(ValueError, match=r"scales=\(\) must be non-empty"):
    _main(healswin_resampling, "healswin_resampling", tmp_path / "b", "--quick", "--set", "scales=()",
          variants=("default",))
  with pytest.raises(ValueError, match=r"is not the paper's 1\.067"):
    _main(healswin_resampling, "healswin_resampling", tmp_path / "c", "--quick", "--set", "data.image_width=64",
          variants=("default",))


def test_flat_padding_is_an_empty_pixel_not_a_zero_token():
  """Padding 48 x 40 to 64 x 64 (paper preset, 8 x 8 windows) must look like the black pixels outside the lens:
  exact zero inputs give zero tokens at initialisation, whose cosine attention has gradients ~1e12."""
  import jax
  import jax.numpy as jnp
  c = presets.model_configs(comparison.matched_config(quick=True, variant="paper"))["swin"]
  c.data.update(num_train=2, num_test=1)
  c.model.update(embed_dim=8, depths=(1, 1), num_heads=(1, 2), mlp_ratio=1.0)
  data = tasks.build_data(c)
  x = data.train["inputs"]
  assert data.flat_pad == (24, 16) and x.shape[1:3] == (64, 64)
  empty = float(tasks.normalize_inputs(np.zeros(1))[0])  # a black pixel, as outside the lens
  assert (x[:, 40:] == empty).all() and (x[:, :, 48:] == empty).all()
  model = model_lib.build_model(train.model_config(c, data))
  params = model.init(jax.random.key(0), jnp.asarray(x[:1]))["params"]
  loss_fn = losses.make_loss_fn(c)
  batch = {k: jnp.asarray(v) for k, v in data.train.items()}
  grads = jax.grad(lambda p: loss_fn(model.apply({"params": p}, batch["inputs"], deterministic=True), batch))(params)
  norm = float(jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(grads))))
  assert np.isfinite(norm) and norm < 1e3, norm


def test_paper_preset_validates_with_its_per_model_learning_rates():
  """The paper preset leaves optim.lr = None (resolved per model); the comparison's validator checks the
  resolved rates instead of refusing None, and still refuses a bad override before any work."""
  config = healswin_vs_swin.get_config(True, "paper")
  assert config.optim.lr is None
  presets.validate_comparison(config)
  config.optim.lr = -1.0
  with pytest.raises(ValueError, match=r"optim.lr=-1.0 .*Fix"):
    presets.validate_comparison(config)
