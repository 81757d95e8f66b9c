"""Bad input, misuse and faults: each case stops with an error naming the field or file and the fix.

Every test here reproduces a case that used to pass silently or fail with an unhelpful message; the
assertions check the error type, the named field/file and the suggested fix (``docs/failure_modes.md``).
"""

import contextlib
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import ntk  # noqa: F401  (compat layer before neural_tangents)
from neural_tangents import stax

from ntk import blockcirc as B
from ntk import groups as G
from ntk import kernels as K


def _erf_mlp(out=2):
  return stax.serial(stax.Flatten(), stax.Dense(16, W_std=1.5, b_std=0.1), stax.Erf(),
                     stax.Dense(out, W_std=1.5, b_std=0.1))[2]


# ---------------------------------------------------------------------------------------------------------
# NTK solvers.


def _swapped_shift_group():
  """Z4 shifts whose rho has elements 1 and 2 swapped: exact permutations, cyclic table, NOT a homomorphism.

  Installed after construction so the test does not depend on what ``FiniteGroup`` itself validates.
  """
  group = G.cyclic_shifts_1d(4)
  perms = np.asarray(group.rep_x.idx[:, :, 0])[[0, 2, 1, 3]]
  object.__setattr__(group, "rep_x", G.GatherRep(perms[:, :, None].astype(np.int32), np.ones(perms.shape + (1,)),
                                                 group.rep_x.shape))
  return group


def test_blockcirc_refuses_a_rho_that_is_not_a_homomorphism():
  group = _swapped_shift_group()
  rng = np.random.default_rng(0)
  x, y, xt = rng.normal(size=(3, 4)), rng.normal(size=(3, 2)), rng.normal(size=(2, 4))
  assert "not a homomorphism" in B.homomorphism_defect(group)
  with pytest.raises(ValueError, match=r"rho_X of Z4 .*not a homomorphism.*fix the representation"):
    B.augmented_ensemble_predict(_erf_mlp(), group, x, y, xt, [1.0], method="blockcirc")
  with pytest.warns(UserWarning, match="not a homomorphism.*falling back"):
    pred = B.augmented_ensemble_predict(_erf_mlp(), group, x, y, xt, [1.0], diag_reg=1e-4)
  assert pred.method == "dense"
  assert B.homomorphism_defect(G.cyclic_shifts_1d(4)) is None
  assert B.homomorphism_defect(G.rotations_2d_points(5, equivariant_outputs=True)) is None


@pytest.mark.parametrize("ts", [[-1.0], [1.0, np.nan], -0.5])
def test_ntk_times_must_be_non_negative(ts):
  rng = np.random.default_rng(0)
  x, y, xt = rng.normal(size=(3, 4)), rng.normal(size=(3, 2)), rng.normal(size=(2, 4))
  for predict in (lambda: K.infinite_ensemble_predict(_erf_mlp(), x, y, xt, ts),
                  lambda: B.augmented_ensemble_predict(_erf_mlp(), G.cyclic_shifts_1d(4), x, y, xt, ts)):
    with pytest.raises(ValueError, match=r"ts: times must be >= 0.*Pass non-negative times"):
      predict()


# ---------------------------------------------------------------------------------------------------------
# Errors that name the file (and say what to do about it).


def _truncate(path, keep=0.5):
  data = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(data[:int(len(data) * keep)])


@pytest.fixture
def woodscape_copy(tmp_path):
  from healswin_jax.data import woodscape  # pylint: disable=g-import-not-at-top
  from healswin_jax.data.fisheye import FisheyeCamera  # pylint: disable=g-import-not-at-top
  root = str(tmp_path / "syn")
  woodscape.write_fake_dataset(root, 3, FisheyeCamera.woodscape_fv(32), synthetic=True)
  return woodscape, woodscape.list_frames(root, synthetic=True)


@pytest.mark.parametrize("part,what", [("rgb", "RGB image"), ("labels", "label image"), ("depth", "depth .npy"),
                                       ("calibration", "calibration JSON")])
def test_truncated_frame_files_are_named(woodscape_copy, part, what):
  from infra.files import UnreadableFileError  # pylint: disable=g-import-not-at-top
  woodscape, frames = woodscape_copy
  path = getattr(frames[1], part)
  _truncate(path)
  with pytest.raises(UnreadableFileError, match=rf"{path}: cannot read this {what} .*Fix: "):
    woodscape.load_frame(frames[1])


def test_projection_cache_is_keyed_on_content_and_rebuilt_when_corrupt(woodscape_copy, tmp_path):
  woodscape, frames = woodscape_copy
  cache = str(tmp_path / "cache")
  first = woodscape.load_projected(frames[:1], 4, range(8), cache_dir=cache, progress=False)
  (entry,) = os.listdir(cache)
  # A fixed label file (new content, new mtime) must not be served the stale sphere labels.
  from PIL import Image  # pylint: disable=g-import-not-at-top
  labels = np.asarray(Image.open(frames[0].labels))
  Image.fromarray(((labels + 1) % 4).astype(np.uint8)).save(frames[0].labels)
  os.utime(frames[0].labels, ns=(os.stat(frames[0].labels).st_atime_ns, os.stat(frames[0].labels).st_mtime_ns + 10**9))
  second = woodscape.load_projected(frames[:1], 4, range(8), cache_dir=cache, progress=False)
  mask = second["sphere_mask"][0]
  assert not np.array_equal(second["sphere_labels"][0][mask], first["sphere_labels"][0][mask])
  assert len(os.listdir(cache)) == 2
  # A corrupt entry is rebuilt with a warning naming it.
  (new_entry,) = set(os.listdir(cache)) - {entry}
  _truncate(os.path.join(cache, new_entry))
  with pytest.warns(UserWarning, match=rf"{new_entry}: corrupt projection cache entry.*rebuilding"):
    third = woodscape.load_projected(frames[:1], 4, range(8), cache_dir=cache, progress=False)
  np.testing.assert_array_equal(third["sphere_labels"], second["sphere_labels"])
  with np.load(os.path.join(cache, new_entry)) as z:   # and the rebuilt entry is readable again
    np.testing.assert_array_equal(z["sphere_labels"], second["sphere_labels"][0])


def test_too_few_frames_for_the_split(woodscape_copy):
  woodscape, frames = woodscape_copy
  with pytest.raises(ValueError, match=r"1 frame\(s\) cannot be split.*Fix: point data.root at a complete copy"):
    woodscape.train_val_split(frames[:1])


def test_fashion_mnist_corrupt_gz_and_bad_labels(tmp_path):
  import gzip  # pylint: disable=g-import-not-at-top
  import struct  # pylint: disable=g-import-not-at-top
  from infra.files import UnreadableFileError  # pylint: disable=g-import-not-at-top
  from ntk import datasets  # pylint: disable=g-import-not-at-top

  def idx(path, a):
    with gzip.open(path, "wb") as f:
      f.write(struct.pack(">BBBB", 0, 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes())

  idx(str(tmp_path / "t10k-images-idx3-ubyte.gz"), np.zeros((3, 28, 28), np.uint8))
  labels = str(tmp_path / "t10k-labels-idx1-ubyte.gz")
  idx(labels, np.array([0, 3, 12], np.uint8))
  with pytest.raises(ValueError, match=rf"{labels}: labels must be class ids 0..9, found \[12\].*re-download"):
    datasets.load_fashion_mnist(str(tmp_path), "test")
  _truncate(labels)
  with pytest.raises(UnreadableFileError, match=rf"{labels}: cannot read this IDX file.*Fix: re-download"):
    datasets.load_fashion_mnist(str(tmp_path), "test")


def test_pathmnist_and_tif_corrupt_files_are_named(tmp_path):
  import tifffile  # pylint: disable=g-import-not-at-top
  from infra.files import UnreadableFileError  # pylint: disable=g-import-not-at-top
  from ntk import datasets  # pylint: disable=g-import-not-at-top
  npz = str(tmp_path / "pathmnist.npz")
  np.savez_compressed(npz, train_images=np.zeros((2, 28, 28, 3), np.uint8), train_labels=np.zeros((2, 1)))
  _truncate(npz)
  with pytest.raises(UnreadableFileError, match=rf"{npz}: cannot read this PathMNIST .npz.*Fix: re-download"):
    datasets.load_pathmnist(npz)
  os.makedirs(tmp_path / "nct" / "ADI")
  tile = str(tmp_path / "nct" / "ADI" / "ADI-0001.tif")
  tifffile.imwrite(tile, np.zeros((32, 32, 3), np.uint8))
  _truncate(tile, 0.3)
  with pytest.raises(UnreadableFileError, match=rf"{tile}: cannot read this .tif tile.*Fix: replace or delete"):
    datasets.load_nct_crc(str(tmp_path / "nct"), size=8)


# ---------------------------------------------------------------------------------------------------------
# Cameras and model configs.


def test_camera_must_be_finite_and_see_the_faces(tmp_path):
  import dataclasses  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  from healswin_jax.data.fisheye import FisheyeCamera, make_projection  # pylint: disable=g-import-not-at-top
  cam = FisheyeCamera.woodscape_fv(32)
  with pytest.raises(ValueError, match=r"camera field k1 = inf must be a finite number.*calibration"):
    dataclasses.replace(cam, k1=float("inf"))
  bad = cam.to_json_dict()
  bad["intrinsic"]["k1"] = float("inf")
  path = str(tmp_path / "00000_FV.json")
  with open(path, "w") as f:
    json.dump(bad, f)
  with pytest.raises(ValueError, match=rf"{path}: invalid intrinsics.*k1 = inf.*Fix the 'intrinsic' block"):
    FisheyeCamera.from_json(path)
  for broken in (dataclasses.replace(cam, k2=-5000.0), dataclasses.replace(cam, cx_offset=1e5)):
    with pytest.raises(ValueError, match=r"sees none of the faces.*0 % coverage.*Fix: check the calibration"):
      make_projection(broken, 4, range(8))


def test_model_config_fields_are_named():
  from healswin_jax.config import HealSwinConfig  # pylint: disable=g-import-not-at-top
  small = dict(nside=16, depths=(1,), num_heads=(1,), embed_dim=4, window_size=4)
  assert HealSwinConfig(faces=range(12), **small).faces == tuple(range(12))
  cfg = HealSwinConfig(faces=np.arange(3, 6), **small)
  assert cfg.faces == (3, 4, 5) and all(type(f) is int for f in cfg.faces)
  assert HealSwinConfig(faces=[np.int64(0), np.int32(4)], **small).faces == (0, 4)
  with pytest.raises(ValueError, match=r"faces: entries \[0.5\] are not integers \(types \['float'\]\).*Fix"):
    HealSwinConfig(faces=(0.5, 1), **small)
  with pytest.raises(ValueError, match=r"mlp_ratio: must be a positive number, got nan.*Fix: use e.g."):
    HealSwinConfig(mlp_ratio=float("nan"), **small)
  d = HealSwinConfig(**small).to_dict()
  del d["window_size"]
  with pytest.raises(ValueError, match=r"missing field\(s\) \['window_size'\].*Fix: give every field"):
    HealSwinConfig.from_dict(d)


# ---------------------------------------------------------------------------------------------------------
# Run directories: one owner, and checkpoints stamped with the run that wrote them.


@contextlib.contextmanager
def _other_process_holding(directory):
  """A second Python process that holds ``directory``'s run lock until the block ends (then is killed)."""
  code = ("import sys, time\nfrom infra import run_guard\nwith run_guard.workdir_lock(sys.argv[1]):\n"
          "  print('locked', flush=True)\n  time.sleep(120)\n")
  proc = subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  try:
    assert proc.stdout.readline().strip() == "locked"
    yield proc
  finally:
    proc.kill()
    proc.wait()


def test_workdir_lock_refuses_a_live_owner_and_takes_over_from_a_dead_one(tmp_path):
  from infra import run_guard  # pylint: disable=g-import-not-at-top
  with _other_process_holding(tmp_path) as proc:
    with pytest.raises(run_guard.WorkdirLockedError,
                       match=rf"in use by pid {proc.pid} on host '{socket.gethostname()}'.*Fix: wait"):
      with run_guard.workdir_lock(str(tmp_path)):
        pass
  # The owner was SIGKILLed: its lock died with it, and the next run takes the directory over.
  with run_guard.workdir_lock(str(tmp_path)) as path:
    with run_guard.workdir_lock(str(tmp_path)):      # re-entrant within one process
      pass
    with open(path) as f:
      assert json.load(f)["pid"] == os.getpid()


def _tiny_ensemble_inputs(n=6):
  from ntk.architectures import ArchSpec  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  model = ArchSpec(kind="mlp", width=8, depth=1, out_dim=2).flax()
  return model, rng.normal(size=(n, 3)).astype(np.float32), rng.normal(size=(n, 2)).astype(np.float32)


@pytest.mark.slow
def test_ensemble_checkpoint_dir_refuses_another_run(tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  from infra import run_guard  # pylint: disable=g-import-not-at-top
  from ntk import ensemble as ens  # pylint: disable=g-import-not-at-top
  model, x, y = _tiny_ensemble_inputs()
  key, ckpt = jax.random.PRNGKey(0), str(tmp_path / "ckpt")
  run = lambda **kw: ens.gd_ensemble_snapshots(model, kw.get("x", x), y, x, [0, 3], kw.get("lr", 0.1),
                                               kw.get("m", 2), key, checkpoint_dir=ckpt, checkpoint_every=1)
  first = run()
  np.testing.assert_array_equal(run()[3], first[3])       # same arguments: resumes and agrees
  for kw, field in ((dict(lr=0.2), "lr"), (dict(m=3), "n_members"), (dict(x=x + 1), "data")):
    with pytest.raises(run_guard.StaleCheckpointError,
                       match=rf"{ckpt}/3 was written by a different run \(fields \['{field}'\].*Fix: use a fresh"):
      run(**kw)
  with _other_process_holding(ckpt) as proc:
    with pytest.raises(run_guard.WorkdirLockedError, match=rf"{ckpt} is in use by pid {proc.pid}"):
      run()


# ---------------------------------------------------------------------------------------------------------
# Overrides: every --set takes effect or fails before work starts.


def _run_experiment(name, workdir, *overrides, quick=True):
  """``python -m experiments.<name>`` in a subprocess: (returncode, stderr)."""
  cmd = [sys.executable, "-m", f"experiments.{name}", "--workdir", str(workdir)] + (["--quick"] if quick else [])
  for o in overrides:
    cmd += ["--set", o]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env,
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return proc.returncode, proc.stderr


@pytest.mark.parametrize("name,override,message", [
    ("spherical_mnist", "data.setting=r_r", r"--set data.setting: this experiment sets data.setting itself.*"
                                            r"Fix: drop --set data.setting"),
    ("histology", "groups=('c4', 'c8')", r"groups=\('c4', 'c8'\): \['c8'\] not in \['c4', 'd4'\]. Fix: e.g."),
])
def test_overrides_that_cannot_take_effect_fail_before_work(tmp_path, name, override, message):
  import re  # pylint: disable=g-import-not-at-top
  rc, err = _run_experiment(name, tmp_path / "run", override)
  assert rc != 0 and re.search(message, err), err[-2000:]
  assert not (tmp_path / "run").exists()      # nothing written, nothing trained


# ---------------------------------------------------------------------------------------------------------
# HEAL-SWIN training: run settings, the last update, the workdir.


def _tiny_train_config(**over):
  from tests.test_healswin_train import tiny_config  # pylint: disable=g-import-not-at-top
  return tiny_config(**over)


@pytest.mark.parametrize("field,value,message", [
    ("num_steps", 0, r"num_steps=0 must be a positive integer. Fix: --set num_steps=100"),
    ("num_steps", -3, r"num_steps=-3 must be a positive integer"),
    ("batch_size", 0, r"batch_size=0 must be a positive integer. Fix: --set batch_size=4"),
    ("checkpoint_every", 0, r"checkpoint_every=0 must be a positive integer. Fix: --set checkpoint_every=50"),
    ("eval_batch_size", 0, r"eval_batch_size=0 must be a positive integer"),
    ("optim.lr", -1e-3, r"optim.lr=-0.001 must be a finite number > 0.0. Fix: --set optim.lr=1e-3"),
    ("optim.lr", float("nan"), r"optim.lr=nan must be a finite number > 0.0"),
    ("data.num_test", 0, r"data.num_test=0 must be a positive integer. Fix: --set data.num_test=16"),
    ("data.num_train", 0, r"data.num_train=0 must be a positive integer"),
    ("model.mlp_ratio", float("nan"), r"mlp_ratio: must be a positive number, got nan. Fix"),
    ("loss.class_weights", "[1, -2]", r"loss.class_weights='\[1, -2\]' must be a non-empty list of finite weights"),
])
def test_run_settings_are_checked_before_any_work(tmp_path, field, value, message):
  from healswin_jax import train  # pylint: disable=g-import-not-at-top
  cfg = _tiny_train_config(**{field: value})
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(cfg, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_class_weights_list_form_from_the_command_line():
  from healswin_jax import tasks, train  # pylint: disable=g-import-not-at-top
  from infra import cli  # pylint: disable=g-import-not-at-top
  cfg = cli.apply_overrides(_tiny_train_config(), ["loss.class_weights=[1, 2, 0.5]"])
  train.validate_config(cfg)
  np.testing.assert_array_equal(tasks.class_weights(np.zeros(4, int), 3, cfg.loss.class_weights), [1, 2, 0.5])
  with pytest.raises(ValueError, match=r"has 3 entries for 4 classes. Fix: give one weight per class"):
    tasks.class_weights(np.zeros(4, int), 4, cfg.loss.class_weights)


def test_spherical_mnist_and_empty_batches_are_refused():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from healswin_jax.config import HealSwinConfig  # pylint: disable=g-import-not-at-top
  from healswin_jax.data import spherical_mnist  # pylint: disable=g-import-not-at-top
  from healswin_jax.model import HealSwinUNet  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=r"num_train=0, num_test=5: both must be >= 1. Fix"):
    spherical_mnist.make_spherical_mnist(4, 0, 5)
  cfg = HealSwinConfig(nside=8, depths=(1,), num_heads=(1,), embed_dim=4, window_size=4, in_channels=1)
  with pytest.raises(ValueError, match=r"empty batch \(B = 0.*Fix: pass at least one example"):
    HealSwinUNet(cfg).init(__import__("jax").random.PRNGKey(0), jnp.zeros((0, cfg.num_pixels, 1)))


@pytest.mark.slow
def test_divergence_on_the_last_update_stops_before_results(tmp_path):
  """lr = 1e30 with one warmup step: the loss of step 1 is finite (lr was 0 at step 0), its update is not."""
  from healswin_jax import train  # pylint: disable=g-import-not-at-top
  cfg = _tiny_train_config(num_steps=2, **{"optim.lr": 1e30})
  with pytest.raises(FloatingPointError, match=r"parameters after the update of step 1 \(0-based\) are not finite"
                                               r".*Fix: lower optim.lr"):
    train.train_and_evaluate(cfg, str(tmp_path))
  assert "2" not in os.listdir(tmp_path / "checkpoints")          # the diverged state was never saved
  assert not any("final" in json.loads(line) for line in open(tmp_path / "metrics.jsonl"))


@pytest.mark.slow
def test_two_runs_on_one_workdir_and_checkpoints_without_data(tmp_path):
  from healswin_jax import train  # pylint: disable=g-import-not-at-top
  from infra import run_guard  # pylint: disable=g-import-not-at-top
  cfg = _tiny_train_config(num_steps=2)
  train.train_and_evaluate(cfg, str(tmp_path))
  log = open(tmp_path / "metrics.jsonl").read()
  # A second run while the first is alive is refused before it touches anything.
  with _other_process_holding(tmp_path) as proc:
    with pytest.raises(run_guard.WorkdirLockedError, match=rf"{tmp_path} is in use by pid {proc.pid}.*Fix"):
      train.train_and_evaluate(cfg, str(tmp_path))
  assert open(tmp_path / "metrics.jsonl").read() == log
  # A checkpoint whose array files are gone: one clear error, without orbax's chained tracebacks.
  for dirpath, _, names in os.walk(tmp_path / "checkpoints" / "2" / "default"):
    for name in names:
      os.remove(os.path.join(dirpath, name))
  with pytest.raises(train.CheckpointError, match=r"(?s)checkpoints/2 cannot be restored.*Fix: delete") as err:
    train.train_and_evaluate(cfg, str(tmp_path))
  assert err.value.__cause__ is None and err.value.__suppress_context__


def test_checkpoint_without_a_stamp_is_refused():
  from infra import run_guard  # pylint: disable=g-import-not-at-top
  current = run_guard.stamp({"optim": {"lr": 1e-3}, "num_steps": 5})
  run_guard.check_stamp(run_guard.stamp({"num_steps": 5, "optim": {"lr": 1e-3}}), current, "ck/5")
  with pytest.raises(run_guard.StaleCheckpointError, match=r"ck/5 carries no run stamp.*Fix: use a fresh"):
    run_guard.check_stamp(None, current, "ck/5")


def test_experiment_workdir_has_one_owner(tmp_path):
  """A second experiment run on a live run's workdir is refused before it rewrites config.json or metrics."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from infra import cli, run_guard  # pylint: disable=g-import-not-at-top
  ran = []
  get_config = lambda quick: ml_collections.ConfigDict({"lr": 1e-3})
  run = lambda config, workdir: ran.append(config.lr) or {"loss": 1.0}
  argv = ["--workdir", str(tmp_path), "--set", "lr=3e-3"]
  with _other_process_holding(tmp_path) as proc:
    with pytest.raises(run_guard.WorkdirLockedError, match=rf"in use by pid {proc.pid}"):
      cli.main(get_config, run, "toy", argv)
  assert ran == [] and not (tmp_path / "config.json").exists() and not (tmp_path / "metrics.json").exists()
  cli.main(get_config, run, "toy", argv)     # the owner is gone: the directory is taken over
  assert ran == [3e-3] and json.load(open(tmp_path / "config.json"))["lr"] == 3e-3
