#!/usr/bin/env bash
# Create .venv and install nlu with its dev tools. Safe to run again (it only tops up).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# The CPU build of torch is pinned here, in the install step, not in the package metadata:
# a bare `torch` requirement can pull a multi-GB CUDA build. Override with TORCH_SPEC.
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "$TORCH_SPEC"
# setuptools warns on every editable install that a folder named like the package may shadow
# it: ours are the package (nlu/data and nlu/serve link to data/ and serve/), so it is noise.
PYTHONWARNINGS="ignore:Editable installation" python -m pip install --quiet -e ".[dev,federated]"
python -c "import torch, transformers, nlu; print(f'nlu {nlu.__version__}: torch {torch.__version__}, transformers {transformers.__version__}')"
