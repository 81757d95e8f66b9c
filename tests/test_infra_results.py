import json
import os
import re

import jax
import ml_collections
import numpy as np
import pytest

from infra import results


def test_record_and_load_round_trip(tmp_path):
  config = ml_collections.ConfigDict({"lr": 0.1, "sizes": (2, 3), "sub": {"name": "x"}, "n": np.int64(4)})
  p = results.record("exp", "quick", {"acc": np.float32(0.25), "ok": True}, config, 1.5, root=str(tmp_path))
  assert p == os.path.join(str(tmp_path), "exp", "quick.json")
  rec = results.load("exp", "quick", root=str(tmp_path))
  assert rec == json.loads(open(p).read())
  assert rec["metrics"] == {"acc": 0.25, "ok": 1.0}
  assert rec["config"] == {"lr": 0.1, "sizes": [2, 3], "sub": {"name": "x"}, "n": 4}
  assert rec["wall_s"] == 1.5 and rec["jax_version"] == jax.__version__ and rec["cpu_count"] == os.cpu_count()
  assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rec["date_utc"])
  commit, dirty = results.git_state()
  assert rec["git_commit"] == commit and rec["git_dirty"] == dirty
  if commit is not None:  # this test runs from the repository checkout
    assert re.fullmatch(r"[0-9a-f]{4,40}", commit) and isinstance(dirty, bool)
  assert "git_at_write" not in rec  # the checkout did not change during the "run"


def test_record_names_the_launch_commit_and_a_checkout_that_moved(tmp_path):
  now = results.git_state()
  results.record("exp", "a", {"x": 1.0}, {}, 0.0, root=str(tmp_path), launch_git=now)
  assert "git_at_write" not in results.load("exp", "a", root=str(tmp_path))
  launched = ("0000000", False)  # the commit the run started from; the checkout has moved since
  results.record("exp", "b", {"x": 1.0}, {}, 0.0, root=str(tmp_path), launch_git=launched)
  rec = results.load("exp", "b", root=str(tmp_path))
  assert (rec["git_commit"], rec["git_dirty"]) == launched
  assert rec["git_at_write"] == {"commit": now[0], "dirty": now[1]}


def test_bad_input_fails_clearly(tmp_path):
  with pytest.raises(FileNotFoundError, match="--record"):
    results.load("exp", "paper", root=str(tmp_path))
  with pytest.raises(TypeError, match="shape"):
    results.record("exp", "v", {"a": np.zeros(2)}, {}, 0.0, root=str(tmp_path))
  with pytest.raises(TypeError, match="cannot be written"):
    results.record("exp", "v", {"a": 1.0}, {"f": object()}, 0.0, root=str(tmp_path))
  with pytest.raises(ValueError, match="plain file name"):
    results.path("../exp", "v", root=str(tmp_path))
  assert not any(tmp_path.iterdir())
