"""Server settings: one object, with the one set of defaults that `nlu serve` shows."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

DEFAULT_MODEL = "runs/demo/model"
# How uvicorn's worker processes receive the settings (they import the app factory anew).
ENV_VAR = "NLU_SERVE_SETTINGS"


@dataclass(frozen=True)
class ServeSettings:
    model_dir: str = DEFAULT_MODEL
    backend: str = "auto"  # auto | torch | onnx (auto: ONNX when the folder has model.onnx)
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1  # server processes
    threads: int | None = None  # inference threads per worker (default: cores / workers)
    max_batch: int = 32  # texts per forward pass
    # Extra wait to grow micro-batches (requests queued during a pass are batched anyway).
    max_wait_ms: float = 0.0
    max_queue: int = 1024  # queued requests before 503
    api_key: str | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        return cls(**json.loads(text))
