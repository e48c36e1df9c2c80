# CPU image that serves the demo skills' int8 ONNX model with `nlu serve`.
# Every step is a command the README's set-up already runs (scripts/setup.sh, nlu train,
# nlu export, nlu serve); nothing here is tested in CI (no Docker engine there).
#
#   docker build -t nlu .
#   docker run -p 8000:8000 -e NLU_API_KEY=change-me nlu
#   curl -H 'X-API-Key: change-me' -d '{"text": "turn on the kitchen lights"}' \
#        -H 'content-type: application/json' http://127.0.0.1:8000/parse
FROM python:3.11-slim

# scripts/setup.sh pins torch in the install step (TORCH_SPEC); on the public index the CPU
# build of that version lives on PyTorch's own index.
ENV PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu \
    TORCH_SPEC=torch==2.13.0+cpu \
    HF_HUB_OFFLINE=1 \
    PYTHONUNBUFFERED=1

RUN useradd --create-home --uid 10001 nlu
WORKDIR /home/nlu/app
COPY --chown=nlu:nlu . .
USER nlu

RUN bash scripts/setup.sh \
 && .venv/bin/nlu train configs/demo.yaml output_dir=runs/demo overwrite=true \
 && .venv/bin/nlu export runs/demo/model runs/demo/int8 --format onnx --quantize int8 \
 && rm -rf runs/demo/checkpoints

EXPOSE 8000
# /health answers without the API key.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD .venv/bin/python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
# Bound to all interfaces, the server refuses to start without an API key: pass NLU_API_KEY.
CMD [".venv/bin/nlu", "serve", "runs/demo/int8", "--host", "0.0.0.0", "--port", "8000"]
