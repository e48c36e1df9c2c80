#!/usr/bin/env bash
# Lint, type-check and run the tests.
#   bash scripts/test.sh            the fast tier: tiny random encoders, one process (a few minutes)
#   bash scripts/test.sh slow       the slow tier: the real encoder, servers and federations as
#                                   separate processes, ONNX/int8 parity, load
#   bash scripts/test.sh all        both
# Anything after the tier goes to pytest (bash scripts/test.sh slow -k onnx).
set -euo pipefail
cd "$(dirname "$0")/.."
tier=fast
case "${1:-}" in
  fast|slow|all) tier=$1; shift ;;
esac
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
ruff check .
ruff format --check .
mypy nlu
MYPYPATH=benchmarks mypy benchmarks scripts/reference.py
mypy -p tests
case "$tier" in
  fast) python -m pytest -q -m "not slow" "$@" ;;
  slow) python -m pytest -q -m slow "$@" ;;
  all) python -m pytest -q "$@" ;;
esac
