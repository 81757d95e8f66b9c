"""infra.checkpoint: the one Orbax layout of both training stacks ({"state", "losses"} plus the run stamp)."""

import jax
import numpy as np
import pytest

from infra import checkpoint
from infra import run_guard


def _state(step=3):
  return {"params": {"w": np.arange(6.0, dtype=np.float32).reshape(2, 3)}, "step": np.int32(step)}


def test_round_trip_with_and_without_losses_and_the_stamp(tmp_path):
  mngr = checkpoint.manager(str(tmp_path / "ck"))
  stamp = run_guard.stamp({"lr": 0.1})
  checkpoint.save(mngr, 3, _state(), losses=np.array([2.0, 1.0, 0.5]), run_stamp=stamp)
  checkpoint.save(mngr, 4, _state(4))  # no losses kept: the item has no "losses" entry
  checkpoint.check_stamp(mngr, 3, stamp)
  with pytest.raises(run_guard.StaleCheckpointError):
    checkpoint.check_stamp(mngr, 3, run_guard.stamp({"lr": 0.2}))
  like = jax.tree.map(np.zeros_like, _state())
  state, losses = checkpoint.restore(mngr, 3, like)
  np.testing.assert_array_equal(state["params"]["w"], _state()["params"]["w"])
  np.testing.assert_array_equal(losses, [2.0, 1.0, 0.5])
  state, losses = checkpoint.restore(mngr, 4, like)
  assert int(state["step"]) == 4 and losses.shape == (0,)


def test_wrong_structure_names_the_checkpoint_and_the_fix(tmp_path):
  mngr = checkpoint.manager(str(tmp_path / "ck"))
  checkpoint.save(mngr, 2, _state(2))
  with pytest.raises(checkpoint.CheckpointError, match=r"ck/2 cannot be restored.*Fix: delete.*like="):
    checkpoint.restore(mngr, 2, {"other": np.zeros(3, np.float32)})
