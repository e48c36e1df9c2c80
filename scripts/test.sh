#!/usr/bin/env bash
# Lint, type-check and run every test (including the slow real-encoder test, about a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
ruff check .
ruff format --check .
mypy nlu
python -m pytest -q "$@"
