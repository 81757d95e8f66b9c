"""HEAL-SWIN in JAX/Flax: a Swin transformer on the HEALPix sphere (Carlsson, Gerken et al., CVPR 2024)."""

from infra import xla_cpu

xla_cpu.apply()  # an XLA:CPU crash work-around; must run before the first computation (infra/xla_cpu.py)

# pylint: disable=g-import-not-at-top,wrong-import-position
from healswin_jax.config import FlatSwinConfig, HealSwinConfig
from healswin_jax.flat_swin import FlatSwinClassifier, FlatSwinUNet
from healswin_jax.model import HealSwinClassifier, HealSwinUNet, build_model
from healswin_jax.parallel import TrainState, data_mesh, init_train_state, make_train_step, shard_batch

__all__ = [
    "FlatSwinClassifier", "FlatSwinConfig", "FlatSwinUNet", "HealSwinClassifier", "HealSwinConfig",
    "HealSwinUNet", "TrainState", "build_model", "data_mesh", "init_train_state", "make_train_step",
    "shard_batch",
]
