from infra import xla_cpu

xla_cpu.apply()  # before any computation: XLA reads XLA_FLAGS once (see infra/xla_cpu.py)

from ntk import _nt_compat  # noqa: E402,F401  (must run before neural_tangents is imported anywhere)
