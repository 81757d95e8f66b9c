"""The XLA:CPU crash work-around (infra/xla_cpu.py) is applied on import, respects the user's flags, and warns
when it comes too late. The crash itself is exercised by tests/test_healswin_ntk.py (eNTK of HEAL-SWIN)."""

import os
import subprocess
import sys

from infra import xla_cpu


def _run(code: str, xla_flags: str | None) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  if xla_flags is not None:
    env["XLA_FLAGS"] = xla_flags
  env["JAX_PLATFORMS"] = "cpu"
  return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                        check=True)


def test_import_adds_the_flag_on_affected_jaxlib():
  out = _run("import os, healswin_jax; print(os.environ.get('XLA_FLAGS'))", None).stdout.split()
  if xla_cpu._jaxlib_version() in xla_cpu.AFFECTED:
    assert out == [xla_cpu.FLAG]
  else:
    assert out == ["None"]


def test_user_choice_is_kept():
  mine = "--xla_force_host_platform_device_count=2 --xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT"
  out = _run("import os, ntk; print(os.environ['XLA_FLAGS'])", mine).stdout.strip()
  assert out == mine


def test_warns_when_the_backend_already_started():
  code = ("import warnings, jax, jax.numpy as jnp\n"
          "jnp.ones(2).block_until_ready()\n"
          "from infra import xla_cpu\n"
          "with warnings.catch_warnings(record=True) as w:\n"
          "  warnings.simplefilter('always')\n"
          "  print(xla_cpu.apply(), any('cannot take effect' in str(x.message) for x in w))\n")
  out = _run(code, "").stdout.split()
  if xla_cpu._jaxlib_version() in xla_cpu.AFFECTED:
    assert out == ["False", "True"]
