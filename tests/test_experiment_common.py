import json

import ml_collections
import numpy as np
import pytest

from experiments import common


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

  out = common.main(_cfg, run, "t", ["--quick", "--workdir", str(tmp_path),
                                     "--set", "lr=1", "--set", "sizes=[3,4]", "--set", "sub.k=5", "--set", "name=b"])
  assert seen["width"] == 8 and seen["lr"] == 1.0 and isinstance(seen["lr"], float)
  assert seen["sizes"] == (3, 4) and seen["sub"]["k"] == 5 and seen["name"] == "b"
  on_disk = json.loads((tmp_path / "metrics.json").read_text())
  assert on_disk == out and out["a"] == 1.5 and out["ok"] == 1.0 and out["arr1"] == 3.0
  assert "wall_seconds" in out


def test_bad_metrics_and_overrides_fail_clearly(tmp_path):
  with pytest.raises(TypeError, match="shape"):
    common.flat_metrics({"v": np.zeros(3)})
  with pytest.raises(TypeError, match="not a number"):
    common.flat_metrics({"v": "x"})
  with pytest.raises(KeyError, match="no field 'nope'"):
    common.apply_overrides(_cfg(True), ["nope=1"])
  with pytest.raises(ValueError, match="key=value"):
    common.apply_overrides(_cfg(True), ["width"])
