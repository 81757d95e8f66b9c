"""The bridge healswin_ntk: HEALPix groups, HEAL-SWIN's own symmetry, orbit kernels, kernel regression, metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from healswin_jax.healpix import symmetry
from healswin_jax.model import build_model
from healswin_ntk import ensembles, entk, models, tasks
from healswin_ntk.groups import healpix_group
from ntk import ensemble as ens
from ntk import groups as ntk_groups


@pytest.fixture(scope="module")
def cls_task():
  return tasks.spherical_mnist_task("classification", 8, 4, 2, 2, seed=0)


@pytest.fixture(scope="module")
def seg_task():
  return tasks.spherical_mnist_task("segmentation", 8, 2, 2, 1, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["classification", "segmentation"])
def test_grid_healswin_is_exactly_c4_equivariant_and_ring_and_reflection_are_not(kind, cls_task, seg_task, key):
  task = cls_task if kind == "classification" else seg_task
  x = np.concatenate([task.x_test, task.x_ood[:1]])
  errs = {}
  for strategy in ("grid", "ring"):
    model = build_model(models.small_config(task, strategy, embed_dim=8))
    params = model.init(key, x[:1])["params"]
    # Non-zero relative position biases, so the reflection cannot hide behind a zero-initialized table.
    params = jax.tree.map(lambda a: a + 0.05 * jax.random.normal(jax.random.fold_in(key, a.size), a.shape), params)
    errs[strategy] = models.model_equivariance_errors(model, params, task.group, x)
  assert errs["grid"][0] == 0.0
  assert np.max(errs["grid"][1:4]) < 1e-5            # r, r^2, r^3: float32 round-off (0 for dense heads)
  assert np.min(errs["grid"][4:]) > 1e-3             # s, r s, ...: genuinely broken
  # The spiral shift commutes with r only approximately: per-pixel outputs show it plainly, the mean-pooled
  # classifier only weakly (measured ~1e-5 at embed 8, vs ~1e-7 round-off for grid).
  assert np.max(errs["ring"][1:4]) > (1e-3 if kind == "segmentation" else 1e-6)
  if kind == "segmentation":
    assert np.max(errs["grid"][1:4]) == 0.0          # dense outputs: the same numbers, permuted


def test_segmentation_labels_transform_with_the_input(seg_task):
  x_aug, y_aug = tasks.augment(seg_task, seg_task.x_train, seg_task.y_train)
  n = seg_task.x_train.shape[0]
  assert x_aug.shape == (8 * n,) + seg_task.x_train.shape[1:] and y_aug.shape == (8 * n, seg_task.x_train.shape[1])
  mean, std = seg_task.standardization
  raw = x_aug[..., 0] * std + mean   # undo the scalar standardization
  ink = raw > 0.3
  np.testing.assert_array_equal(y_aug > 0, ink)      # labels are recomputable from the transformed input
  np.testing.assert_array_equal(np.unique(y_aug[ink] - 1), np.unique(seg_task.y_train[seg_task.y_train > 0] - 1))


def _rbf(z):
  flat = z.reshape(z.shape[0], -1)
  d = np.sum((flat[:, None] - flat[None]) ** 2, -1)
  return np.exp(-d / np.median(d[d > 0]))


def test_orbit_index_matches_kernels_on_transformed_sets():
  group = healpix_group(2, None, reflection=True, channels=1)
  x = np.random.default_rng(0).normal(size=(3, 48, 1))
  z = np.asarray(group.orbit(x)).reshape(-1, 48, 1)
  # A non-invariant kernel: RBF on a fixed random linear embedding.
  w = np.random.default_rng(1).normal(size=(48, 5))
  kern = lambda s: _rbf(s[..., 0] @ w)
  k = kern(z)
  idx = entk.orbit_index(group, 3)
  for b in range(group.order):
    np.testing.assert_allclose(k[np.ix_(idx[b], idx[b])], kern(np.asarray(group.act_x(b, z))), rtol=1e-12)
  assert entk.kernel_invariance_error(k, group, 3) > 1e-2
  sym = entk.group_average_kernel(k.astype(np.float32), group, 3)
  assert entk.kernel_invariance_error(sym, group, 3) == 0.0  # bit-exact for float32 entries summed in float64
  assert entk.kernel_invariance_error(_rbf(z), group, 3) < 1e-12  # an invariant kernel (permutations are isometries)


def test_kernel_regression_on_augmented_data_is_invariant_only_with_augmentation():
  group = healpix_group(2, None, reflection=True, channels=1)
  n_train, n_test = 4, 2
  x = np.random.default_rng(2).normal(size=(n_train + n_test, 48, 1))
  z = np.asarray(group.orbit(x)).reshape(-1, 48, 1)
  w = np.random.default_rng(3).normal(size=(48, 6))
  k = entk.group_average_kernel(_rbf(z[..., 0] @ w), group, n_train + n_test)
  rows = np.arange(group.order * (n_train + n_test)).reshape(group.order, -1)
  y = np.random.default_rng(4).normal(size=(n_train, 3))
  test = rows[:, n_train:].reshape(-1)

  def err(train_rows, targets):
    pred = entk.kernel_regression(k, train_rows, test, targets).reshape(group.order, n_test, -1)
    return np.max(np.linalg.norm(pred - pred[:1], axis=-1) / np.linalg.norm(pred[:1], axis=-1))

  assert err(rows[:, :n_train].reshape(-1), np.tile(y, (group.order, 1))) < 1e-10
  assert err(rows[0, :n_train], y) > 1e-3


def test_ensemble_metrics_on_synthetic_orbit_predictions():
  group = healpix_group(2, None, reflection=True, channels=1)
  rng = np.random.default_rng(0)
  m, n, classes = 16, 50, 10
  invariant = np.broadcast_to(rng.normal(size=(1, 1, n, classes)) * 3, (m, group.order, n, classes))
  preds = invariant + rng.normal(size=(m, group.order, n, classes))   # i.i.d. member noise
  out = ensembles.ensemble_metrics(preds, group, labels=np.argmax(invariant[0, 0], -1))
  assert 3.0 < out["ensemble_invariance_gain"] < 5.0                     # ~ sqrt(16)
  assert out["inv_err_ensemble_M16"] == out["inv_err_ensemble"]
  assert out["inv_err_ensemble_M1"] > out["inv_err_ensemble_M4"] > out["inv_err_ensemble_M16"]
  assert out["inv_err_ensemble_M1"] == pytest.approx(out["inv_err_member"], rel=1e-12)  # M=1: the members' mean
  assert out["osp_ensemble"] > out["osp_member"] and out["osp_ensemble"] <= group.order
  assert out["acc_ensemble"] >= out["acc_member"]


def test_entk_of_grid_model_is_c4_invariant_per_seed(cls_task, key):
  model = build_model(models.small_config(cls_task, "grid", embed_dim=8))
  x = cls_task.x_test[:2]
  z = np.asarray(cls_task.group.orbit(x)).reshape((-1,) + x.shape[1:])
  params = model.init(key, z[:1])["params"]
  k = np.asarray(entk.entk_fn(model)(z, None, params), np.float64)
  assert k.shape == (16, 16)
  np.testing.assert_allclose(k, k.T, rtol=1e-5, atol=1e-7 * np.abs(k).max())
  idx = entk.orbit_index(cls_task.group, 2)
  for b in range(1, 4):   # rotations: the network itself is invariant, hence so is its eNTK
    np.testing.assert_allclose(k[np.ix_(idx[b], idx[b])], k, rtol=1e-4, atol=1e-6 * np.abs(k).max())
  assert entk.kernel_invariance_error(k, cls_task.group, 2) > 1e-3  # but not under the reflection


@pytest.mark.slow
def test_vmapped_healswin_ensemble_trains_and_predicts_on_orbits(cls_task, key):
  cfg = models.small_config(cls_task, "grid", embed_dim=8)
  x = cls_task.x_test
  run = ensembles.train_ensemble(cls_task, cfg, members=2, steps=4, augmented=True, batch_size=8, key=key,
                                 steps_per_call=2, snapshot_steps=(0, 2, 4), snapshot_x=x)
  assert run.losses.shape == (4, 2) and np.all(np.isfinite(run.losses))
  preds = ens.orbit_logits(run.model, run.params, cls_task.group, x)
  assert preds.shape == (2, 8, x.shape[0], 10)
  # Member 1 equals the model applied to its own slice of the stacked parameters.
  p1 = jax.tree.map(lambda a: a[1], run.params)
  direct = run.model.apply({"params": p1}, jnp.asarray(x))
  np.testing.assert_allclose(preds[1, 0], np.asarray(direct), rtol=1e-5, atol=1e-6)
  # Snapshots: at step 0 the initialization fold_in(key, m), at the last step the trained members.
  assert sorted(run.snapshots) == [0, 2, 4]
  np.testing.assert_array_equal(run.snapshots[4], preds)
  init1 = run.model.init(jax.random.fold_in(key, 1), jnp.asarray(x[:1]))["params"]
  np.testing.assert_allclose(run.snapshots[0][1, 0], np.asarray(run.model.apply({"params": init1}, jnp.asarray(x))),
                             rtol=1e-5, atol=1e-6)
  assert not np.allclose(run.snapshots[0], run.snapshots[2])


def test_snapshot_schedule_runs_from_init_to_the_end_in_call_multiples():
  s = ensembles.snapshot_schedule(400, 6, 20)
  assert s[0] == 0 and s[-1] == 400 and len(s) == 6 and all(b > a for a, b in zip(s, s[1:]))
  assert all(t % 20 == 0 for t in s)
  assert ensembles.snapshot_schedule(8, 6, 2) == (0, 2, 4, 6, 8)
  with pytest.raises(ValueError, match="multiple"):
    ensembles.snapshot_schedule(50, 6, 20)


@pytest.mark.slow
def test_experiment_smoke(tmp_path):
  import json
  from experiments import sphere_equivariance
  from infra import cli
  workdir = str(tmp_path / "sphere")
  cli.main(sphere_equivariance.get_config, sphere_equivariance.run, "sphere_equivariance",
           ["--quick", "--workdir", workdir, "--set", "num_train=4", "--set", "num_test=2", "--set", "num_test_t=2",
            "--set", "num_ood=2", "--set", "members=2", "--set", "steps=8", "--set", "steps_per_call=2",
            "--set", "entk_widths=(8,)", "--set", "entk_seeds=(1, 2)", "--set", "entk_train=2", "--set",
            "entk_test=1"], validate=sphere_equivariance.validate_config)
  with open(f"{workdir}/metrics.json") as f:
    m = json.load(f)
  for k in ("inv_err_member", "inv_err_ensemble", "ensemble_invariance_gain", "osp_member", "osp_ensemble",
            "entk_regression_equiv_err", "noaug_inv_err_ensemble", "model_err_grid_c4", "model_err_ring_c4",
            "member_test_accuracy", "ensemble_invariance_gain_final", "osp_ensemble_final", "osp_member_final",
            "inv_err_ensemble_vs_t_max", "baseline_logreg_test_accuracy"):
    assert k in m and np.isfinite(m[k]), k
  assert m["entk_regression_equiv_err"] <= 1e-8 < m["entk_regression_equiv_err_noaug"]
  assert m["model_err_grid_c4"] < 1e-5 < m["model_err_grid_reflection"]
  # Training-time checkpoints 0, 2, 4, 6, 8 for both runs, with sane ranges.
  for p in ("", "noaug_"):
    for t in (0, 2, 4, 6, 8):
      assert 1.0 <= m[f"{p}osp_member_t{t}"] <= 8.0 and 1.0 <= m[f"{p}osp_ensemble_t{t}"] <= 8.0
      assert 0.0 <= m[f"{p}acc_member_orbit_t{t}"] <= 1.0
      assert 0.0 <= m[f"{p}inv_err_ensemble_t{t}"] and m[f"{p}skl_member_t{t}"] >= 0.0
    assert m[f"{p}inv_err_ensemble_vs_t_max"] == max(m[f"{p}inv_err_ensemble_t{t}"] for t in (0, 2, 4, 6, 8))
  assert m["ensemble_invariance_gain_final"] == m["ensemble_invariance_gain"] > 0
  assert 0.0 <= m["member_test_accuracy"] <= 1.0
  for fig in ("input_orbit", "orbit_predictions", "invariance_vs_M", "invariance_vs_t", "model_symmetry"):
    assert (tmp_path / "sphere" / f"{fig}.png").exists()
  summary = (tmp_path / "sphere" / "summary.md").read_text()
  assert "Emergent equivariance" in summary and "`member_test_accuracy`" in summary
  assert "MISSED" in summary  # 8 steps on 4 digits cannot reach the accuracy target, and the summary says so


def test_experiment_config_refuses_bad_input():
  from experiments import sphere_equivariance
  c = sphere_equivariance.get_config(quick=True)
  c.steps = 55
  with pytest.raises(ValueError, match="steps=55.*steps_per_call"):
    sphere_equivariance.validate_config(c)
  c = sphere_equivariance.get_config(quick=True)
  c.num_test_t = 0
  with pytest.raises(ValueError, match="num_test_t"):
    sphere_equivariance.validate_config(c)
  sphere_equivariance.validate_config(sphere_equivariance.get_config(quick=False))


@pytest.mark.parametrize("reflection", [False, True])
def test_healpix_group_is_a_finite_group_acting_on_maps(reflection):
  nside, c = 4, 3
  group = healpix_group(nside, None, reflection=reflection, channels=c, equivariant_output=True,
                        out_channels=2)
  _, src = symmetry.pixel_permutations(nside, None, reflection=reflection)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(5, 12 * nside**2, c))
  y = rng.normal(size=(5, 12 * nside**2, 2))
  assert group.order == (8 if reflection else 4) and group.exact and group.input_shape == (12 * nside**2, c)
  for g in range(group.order):
    np.testing.assert_array_equal(group.act_x(g, x), x[:, src[g], :])
    np.testing.assert_array_equal(group.act_y(g, y), y[:, src[g], :])
    np.testing.assert_array_equal(np.asarray(group.act_x(g, jnp.asarray(x))), x[:, src[g], :].astype(np.float32))
    for h in range(group.order):
      np.testing.assert_array_equal(group.act_x(group.compose(g, h), x), group.act_x(g, group.act_x(h, x)))
  xa, ya = ntk_groups.augment_full_orbit(group, x, y)
  np.testing.assert_array_equal(xa[3 * 5:4 * 5], group.act_x(3, x))
  np.testing.assert_array_equal(ya[3 * 5:4 * 5], group.act_y(3, y))
  invariant = healpix_group(nside, tuple(range(8)), channels=c)
  assert invariant.invariant and invariant.input_shape == (8 * nside**2, c)
  labels = np.arange(5)
  np.testing.assert_array_equal(invariant.act_y(1, labels), labels)
  with pytest.raises(ValueError, match="expected a batch of shape"):
    invariant.act_x(1, x)  # 12-face maps given to the 8-face group
