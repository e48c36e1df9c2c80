"""The baseline a user would otherwise write: two Hugging Face pipelines behind FastAPI.

A text-classification pipeline for the intent and a token-classification pipeline for the slots,
both on the same encoder size as nlu's default (all-MiniLM-L6-v2, 22.7M parameters). The heads
are untrained: this server exists to measure latency and throughput, not accuracy.

    python benchmarks/baseline_server.py --port 8801
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from pydantic import BaseModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class Request(BaseModel):
    text: str


def build_app() -> Any:
    from fastapi import FastAPI
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
        pipeline,
    )

    from nlu.model.encoders import resolve_encoder

    path = resolve_encoder("default")
    tokenizer = AutoTokenizer.from_pretrained(path)
    intents = pipeline(
        "text-classification",
        model=AutoModelForSequenceClassification.from_pretrained(path, num_labels=19),
        tokenizer=tokenizer,
        device="cpu",
    )
    slots = pipeline(
        "token-classification",
        model=AutoModelForTokenClassification.from_pretrained(path, num_labels=45),
        tokenizer=tokenizer,
        aggregation_strategy="simple",
        device="cpu",
    )

    app = FastAPI()

    @app.post("/parse")
    def parse(request: Request) -> dict[str, Any]:
        intent = intents(request.text)[0]
        entities = slots(request.text)
        return {
            "intent": {"name": intent["label"], "confidence": float(intent["score"])},
            "slots": [
                {
                    "slot": e["entity_group"],
                    "value": e["word"],
                    "start": int(e["start"]),
                    "end": int(e["end"]),
                }
                for e in entities
            ],
        }

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    import uvicorn

    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8801)
    args = ap.parse_args()
    uvicorn.run(build_app(), host="127.0.0.1", port=args.port, log_level="warning")
