from ntk import _nt_compat  # noqa: F401  (must run before neural_tangents is imported anywhere)
