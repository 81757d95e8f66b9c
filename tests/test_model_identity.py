"""infra.model_identity: the model part of a run stamp changes with the model's class, config and own code."""

import flax.linen as nn

from healswin_jax.config import HealSwinConfig
from healswin_jax.model import HealSwinBody, HealSwinUNet
from infra.model_identity import model_identity

CFG = HealSwinConfig(nside=2, embed_dim=8, depths=(2,), num_heads=(2,), window_size=4, patch_size=1)

_SRC = '''
class Head(nn.Module):
  @nn.compact
  def __call__(self, h):
    return nn.Dense(2)(nn.gelu(h))


class Model(nn.Module):
  cfg: HealSwinConfig
  width: int = 16

  @nn.compact
  def __call__(self, x, deterministic=True):
    return Head()(HealSwinBody(self.cfg)(x, deterministic))
'''


def _model(src, **kwargs):
  scope = dict(nn=nn, HealSwinConfig=HealSwinConfig, HealSwinBody=HealSwinBody)
  exec(src, scope)  # pylint: disable=exec-used  (classes as a notebook defines them)
  return scope["Model"](CFG, **kwargs)


def test_identity_follows_class_config_and_user_code():
  ref = model_identity(_model(_SRC))
  assert ref["class"].endswith("Model") and ref["code"]
  assert model_identity(_model(_SRC)) == ref                                      # deterministic
  assert model_identity(_model("# comment\n\n" + _SRC)) == ref                      # layout does not matter
  assert model_identity(_model(_SRC.replace("nn.gelu", "nn.relu"))) != ref          # the head's code (same shapes)
  assert model_identity(_model(_SRC, width=8))["config"]["width"] == "8"             # a field, named
  lib = model_identity(HealSwinUNet(CFG))
  assert lib["class"] == "healswin_jax.model.HealSwinUNet" and lib["code"] == ""   # library: name + config only
  assert model_identity(HealSwinUNet(CFG.replace(shift_strategy="none")))["config"] != lib["config"]
