"""experiments.width_sweep at tiny sizes: runs end to end; mu_t is exactly invariant for the rot90-symmetric
support and not for the asymmetric one; unknown settings are refused."""

import numpy as np
import pytest

from experiments import width_sweep
from tests.test_paper_experiments import _cfg, _pngs, _run


@pytest.mark.slow
def test_width_sweep_tiny(tmp_path):
  m = _run(width_sweep, "width_sweep", tmp_path, settings=("sym", "asym"), n_train=2, n_test=3, widths=(4, 8),
           n_members=16, sub_ensemble=4, steps=3)
  for name in ("sym", "asym"):
    for key in ("inv_err_wmin", "inv_err_wmax", "naive_inv_err_w4", "member_inv_err_w8", "gap_to_mu_w8",
                "gap_to_mu_wmax"):
      assert np.isfinite(m[f"{name}_{key}"]), (name, key)
  assert m["sym_mu_inv_err"] < 1e-6      # symmetric support: the NTK is C4-invariant, so is mu_t
  assert m["mu_inv_err"] > 1e-3          # asymmetric support: it is not
  assert _pngs(tmp_path) == ["width_sweep.png"]


def test_width_sweep_bad_settings(tmp_path):
  with pytest.raises(ValueError, match="unknown settings"):
    width_sweep.run(_cfg(width_sweep, settings=("sym", "hexagonal")), str(tmp_path))
  with pytest.raises(ValueError, match="multiple of sub_ensemble"):
    width_sweep.run(_cfg(width_sweep, n_members=20, sub_ensemble=16), str(tmp_path))
