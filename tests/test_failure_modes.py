"""Bad input, misuse and faults: each case stops with an error naming the field or file and the fix.

Every test here reproduces a case that used to pass silently or fail with an unhelpful message; the
assertions check the error type, the named field/file and the suggested fix (``docs/failure_modes.md``).
"""

import warnings

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
