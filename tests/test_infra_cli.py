import json

import ml_collections
import numpy as np
import pytest

from infra import cli


def _cfg(quick):
  c = ml_collections.ConfigDict()
  c.width = 8 if quick else 64
  c.lr = 0.5
  c.name = "a"
  c.sizes = (1, 2)
  c.sub = ml_collections.ConfigDict({"k": 3})
  return c


def test_main_writes_flat_metrics_and_applies_overrides(tmp_path):
  seen = {}

  def run(config, workdir):
    seen.update(config.to_dict())
    return {"a": np.float32(1.5), "b": 2, "ok": True, "arr1": np.array([3.0])}

  out = cli.main(_cfg, run, "t", ["--quick", "--workdir", str(tmp_path),
                                     "--set", "lr=1", "--set", "sizes=[3,4]", "--set", "sub.k=5", "--set", "name=b"])
  assert seen["width"] == 8 and seen["lr"] == 1.0 and isinstance(seen["lr"], float)
  assert seen["sizes"] == (3, 4) and seen["sub"]["k"] == 5 and seen["name"] == "b"
  on_disk = json.loads((tmp_path / "metrics.json").read_text())
  assert on_disk == out and out["a"] == 1.5 and out["ok"] == 1.0 and out["arr1"] == 3.0
  assert "wall_seconds" in out


def test_bad_metrics_and_overrides_fail_clearly(tmp_path):
  with pytest.raises(TypeError, match="shape"):
    cli.flat_metrics({"v": np.zeros(3)})
  with pytest.raises(TypeError, match="not a number"):
    cli.flat_metrics({"v": "x"})
  with pytest.raises(KeyError, match="no field 'nope'"):
    cli.apply_overrides(_cfg(True), ["nope=1"])
  with pytest.raises(ValueError, match="key=value"):
    cli.apply_overrides(_cfg(True), ["width"])


def _cfg_variants(quick, variant="default"):
  c = _cfg(quick)
  c.name = variant
  return c


def test_variant_selects_config_and_unknown_variant_lists_valid_ones(tmp_path, capsys):
  seen = {}
  run = lambda config, workdir: seen.update(config.to_dict()) or {"x": 1.0}
  cli.main(_cfg_variants, run, "t", ["--variant", "paper", "--workdir", str(tmp_path)], variants=("default", "paper"))
  assert seen["name"] == "paper" and seen["width"] == 64
  cli.main(_cfg, run, "t", ["--quick", "--workdir", str(tmp_path)])  # old one-argument get_config still works
  assert seen["name"] == "a"
  with pytest.raises(SystemExit):
    cli.main(_cfg_variants, run, "t", ["--variant", "nope", "--workdir", str(tmp_path)], variants=("default", "paper"))
  err = capsys.readouterr().err
  assert "nope" in err and "'default', 'paper'" in err


def test_record_writes_results_file_only_when_asked(tmp_path):
  run = lambda config, workdir: {"acc": np.float32(0.5)}
  root = tmp_path / "results"
  cli.main(_cfg_variants, run, "exp", ["--quick", "--workdir", str(tmp_path / "w")], variants=("default", "paper"),
           results_root=str(root))
  assert not root.exists()
  cli.main(_cfg_variants, run, "exp", ["--quick", "--variant", "paper", "--record", "--workdir", str(tmp_path / "w")],
           variants=("default", "paper"), results_root=str(root))
  cli.main(_cfg_variants, run, "exp", ["--quick", "--record", "--workdir", str(tmp_path / "w")],
           variants=("default", "paper"), results_root=str(root))
  assert sorted(p.name for p in (root / "exp").iterdir()) == ["paper-quick.json", "quick.json"]
  plain = (root / "exp" / "quick.json").read_text()
  # With --set overrides a bare --record would replace the plain run's record: refused before any work.
  ran = []
  with pytest.raises(ValueError, match=r"--record without a NAME.*quick\.json.*--set width=3.*Fix: name"):
    cli.main(_cfg_variants, lambda c, w: ran.append(1) or {"acc": 1.0}, "exp",
             ["--quick", "--record", "--set", "width=3", "--workdir", str(tmp_path / "w2")],
             variants=("default", "paper"), results_root=str(root))
  assert not ran and (root / "exp" / "quick.json").read_text() == plain
  cli.main(_cfg_variants, run, "exp", ["--quick", "--record", "quick-width3", "--set", "width=3", "--workdir",
                                       str(tmp_path / "w")], variants=("default", "paper"), results_root=str(root))
  assert (root / "exp" / "quick.json").read_text() == plain
  rec = json.loads((root / "exp" / "quick-width3.json").read_text())
  assert rec["metrics"]["acc"] == 0.5 and rec["config"]["width"] == 3 and rec["config"]["sizes"] == [1, 2]
  assert rec["variant"] == "quick-width3" and rec["wall_s"] >= 0
  assert rec["argv"] == ["--quick", "--record", "quick-width3", "--set", "width=3", "--workdir", str(tmp_path / "w")]
  with pytest.raises(ValueError, match="not a plain file name"):
    cli.main(_cfg_variants, run, "exp", ["--record", "../x", "--workdir", str(tmp_path / "w")],
             variants=("default", "paper"), results_root=str(root))


def test_every_experiment_and_benchmark_parses_help():
  """`python -m experiments.<name> --help` (and benchmarks) gets through the module's `__main__` block: the names
  it passes to cli.main (get_config, run, variants, validate) all exist, and its usage line names the module it
  was started as. One interpreter, runpy per module."""
  import pathlib  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(__file__).resolve().parents[1]
  names = sorted(f"{d}.{p.stem}" for d in ("experiments", "benchmarks") for p in (root / d).glob("*.py")
                 if not p.stem.startswith("_") and p.stem != "anchor_worker")
  script = (
      "import runpy, sys\n"
      "bad = []\n"
      f"for name in {names!r}:\n"
      "  sys.argv = [name, '--help']\n"
      "  try:\n"
      "    runpy.run_module(name, run_name='__main__', alter_sys=True)\n"
      "  except SystemExit as e:\n"
      "    if e.code not in (0, None): bad.append((name, e.code))\n"
      "  except Exception as e:\n"
      "    bad.append((name, repr(e)))\n"
      "print(bad)\n"
      "sys.exit(1 if bad else 0)\n")
  out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  for name in names:
    assert f"usage: python -m {name} " in out.stdout, name
