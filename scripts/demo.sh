#!/usr/bin/env bash
# The main job on the bundled defaults: train one model on the shipped skills with the default
# offline encoder, evaluate it on the skills' hand-written tests, serve it on 127.0.0.1 and
# answer a sample query through the endpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
PORT=${NLU_PORT:-8765}
OUT=runs/demo

nlu train configs/demo.yaml "output_dir=$OUT" overwrite=true  # rerunning the demo retrains
nlu evaluate "$OUT/model" skills --out "$OUT/eval"

nlu serve "$OUT/model" --port "$PORT" > "$OUT/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  if curl -fsS "http://127.0.0.1:$PORT/health" > /dev/null 2>&1; then break; fi
  if ! kill -0 $server 2>/dev/null; then cat "$OUT/server.log"; exit 1; fi
  sleep 0.5
done
echo
echo "POST http://127.0.0.1:$PORT/parse"
curl -fsS -X POST "http://127.0.0.1:$PORT/parse" -H 'content-type: application/json' \
  -d '{"text": "wake me up at 6:30 am tomorrow for the gym"}' | python -m json.tool
