"""Benchmarks: ``python -m benchmarks.<name> --workdir DIR`` writes ``DIR/metrics.json``."""
