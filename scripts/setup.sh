#!/usr/bin/env bash
# Creates / updates the project environment in .venv at the repo root (idempotent).
#   bash scripts/setup.sh          runtime stack
#   bash scripts/setup.sh --test   runtime stack + pytest
# neural-tangents 0.6.5 is installed with --no-deps: its declared TensorFlow + tf2jax requirements (2.9 GB)
# are never used here (ntk/_nt_compat.py replaces its only TF module), so `pip check` reporting them
# missing is expected.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "setup: Python >= 3.11 needed (set PYTHON=...)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" -r requirements.lock
"${PIP[@]}" --no-deps neural-tangents==0.6.5
if [ "${1:-}" = "--test" ]; then "${PIP[@]}" -r requirements-test.lock; fi
"${PIP[@]}" --no-deps -e .
.venv/bin/python -c 'import ntk, neural_tangents, healpy, flax; print("setup: ok (jax", __import__("jax").__version__ + ")")'
