from ntk import _xla_cpu

_xla_cpu.apply()  # before any computation: XLA reads XLA_FLAGS once (see ntk/_xla_cpu.py)

from ntk import _nt_compat  # noqa: E402,F401  (must run before neural_tangents is imported anywhere)
