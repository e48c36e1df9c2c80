"""HTTP inference server: POST /parse, GET /skills, GET /health (FastAPI).

The model directory written by `nlu train` is all it needs. Every bad request gets a 4xx JSON
body `{"error": ..., "details": [...]}` that says what to fix.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from nlu.predict import Parser

logger = logging.getLogger(__name__)

MAX_BATCH = 64
MAX_CHARS = 1000


class ParseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: StrictStr | None = Field(None, description="One utterance.")
    texts: list[StrictStr] | None = Field(None, description=f"Up to {MAX_BATCH} utterances.")
    skill: StrictStr | None = Field(None, description="Force this skill instead of routing.")
    top_k: int = Field(5, ge=1, le=50, strict=True, description="Intents to rank.")

    @model_validator(mode="after")
    def one_of_text_or_texts(self) -> ParseRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("send exactly one of `text` (a string) or `texts` (a list of strings)")
        items = [self.text] if self.text is not None else (self.texts or [])
        if not items:
            raise ValueError("`texts` is empty; send at least one utterance")
        if len(items) > MAX_BATCH:
            raise ValueError(f"`texts` has {len(items)} items; at most {MAX_BATCH} per request")
        for i, item in enumerate(items):
            if not item.strip():
                raise ValueError(f"utterance {i} is empty or only whitespace")
        return self


class TooLong(Exception):
    pass


def _error(status: int, message: str, details: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if details is not None:
        body["details"] = details
    return JSONResponse(status_code=status, content=body)


def create_app(parser: Parser, *, model_dir: str | Path | None = None) -> FastAPI:
    app = FastAPI(
        title="nlu",
        summary="Joint multi-skill intent detection and slot filling.",
        version="0.1.0",
    )
    # One forward pass at a time: torch already uses every core for a single batch.
    lock = threading.Lock()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "")}
            for e in exc.errors()
        ]
        return _error(422, "invalid request: " + "; ".join(d["msg"] for d in details), details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model_loaded": True,
            "model": str(model_dir or ""),
            "skills": len(parser.skill_names),
        }

    @app.get("/skills")
    def skills() -> dict[str, Any]:
        return {"skills": [s.to_dict() for s in parser.skills]}

    @app.post("/parse", responses={400: {}, 413: {}, 422: {}})
    def parse(request: ParseRequest) -> Any:
        if request.skill is not None and request.skill not in parser.skill_names:
            known = ", ".join(parser.skill_names)
            return _error(400, f"unknown skill {request.skill!r}; known skills: {known}")
        texts = [request.text] if request.text is not None else list(request.texts or [])
        too_long = [i for i, t in enumerate(texts) if len(t) > MAX_CHARS]
        if too_long:
            return _error(413, f"utterance(s) {too_long} exceed {MAX_CHARS} characters")
        with lock:
            results = parser.parse(texts, skill=request.skill, top_k=request.top_k)
        return results[0] if request.text is not None else {"results": results}

    return app


def serve(*, model_dir: str | Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """`nlu serve`: load the model first so a bad directory fails before the port opens."""
    import uvicorn

    parser = Parser.from_pretrained(model_dir)
    logger.info(
        "serving %s (%d skills) on http://%s:%d", model_dir, len(parser.skill_names), host, port
    )
    uvicorn.run(create_app(parser, model_dir=model_dir), host=host, port=port, log_level="info")
