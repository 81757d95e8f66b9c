"""Experiment entry points: ``python -m experiments.<name> [--quick] [--workdir DIR] [--set key=value ...]``."""
