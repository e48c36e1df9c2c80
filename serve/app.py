"""HTTP inference server (FastAPI): POST /parse, GET /skills, GET /health, GET /metrics.

- Concurrent requests are micro-batched: while one forward pass runs, new requests queue; the
  next pass takes all of them (up to `max_batch` texts, optionally waiting `max_wait_ms` for
  more), runs in a worker thread (the event loop never blocks on tokenization or inference),
  and answers each request with its own rows. A lone request never waits.
- The queue is bounded: when it is full the server answers 503 with Retry-After instead of
  queueing without limit.
- Every bad request gets a 4xx JSON body `{"error": ..., "details": [...]}` saying what to fix.
- Optional API key (header `X-API-Key`) for every route but /health; binds to 127.0.0.1 by
  default.

The model directory written by `nlu train` (PyTorch) or `nlu export` (ONNX) is all it needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from nlu.predict import Parser

logger = logging.getLogger(__name__)

MAX_BATCH = 64  # texts per request
MAX_CHARS = 1000  # characters per text; longer texts are refused (413)
MAX_BODY_BYTES = 1 << 20


_UTTERANCE: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_CHARS,
    "pattern": r"\S",  # not only whitespace
}


def _exactly(schema: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """Replace a field's generated JSON schema (keeping title and description)."""

    def replace(generated: dict[str, Any]) -> None:
        kept = {k: generated[k] for k in ("title", "description") if k in generated}
        generated.clear()
        generated.update(schema, **kept)

    return replace


class ParseRequest(BaseModel):
    """Send exactly one of `text` or `texts`; `skill` is one of this server's skills."""

    # The published schema states every rule the validator enforces (lengths, one of
    # text/texts, no nulls for them, the skill names), so that a request valid by the schema
    # is never refused and an invalid one never accepted; tests/test_openapi_fuzz.py checks it.

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"oneOf": [{"required": ["text"]}, {"required": ["texts"]}]},
    )

    text: StrictStr | None = Field(
        None, description="One utterance.", json_schema_extra=_exactly(_UTTERANCE)
    )
    texts: list[StrictStr] | None = Field(
        None,
        description=f"Up to {MAX_BATCH} utterances.",
        json_schema_extra=_exactly(
            {"type": "array", "items": _UTTERANCE, "minItems": 1, "maxItems": MAX_BATCH}
        ),
    )
    skill: StrictStr | None = Field(None, description="Force this skill instead of routing.")
    top_k: int = Field(5, ge=1, le=50, strict=True, description="Intents to rank.")

    @field_validator("top_k", mode="before")
    @classmethod
    def whole_number(cls, value: Any) -> Any:
        # JSON does not tell 5 from 5.0; JSON Schema counts both as integers. Strings and
        # booleans stay errors (strict field).
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    @model_validator(mode="after")
    def one_of_text_or_texts(self) -> ParseRequest:
        for name in ("text", "texts"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"`{name}` is null; leave it out or send a value")
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


class ErrorBody(BaseModel):
    error: str = Field(description="What is wrong, and what to send instead.")
    details: list[Any] | None = None


class Scored(BaseModel):
    name: str
    confidence: float


class SkillChoice(Scored):
    forced: bool = Field(description="The request forced this skill instead of the router.")


class SlotValue(BaseModel):
    slot: str
    value: str = Field(description="text[start:end]")
    start: int = Field(description="Character offset into `text` (inclusive).")
    end: int = Field(description="Character offset into `text` (exclusive).")
    confidence: float


class ParseResult(BaseModel):
    text: str
    skill: SkillChoice
    intent: Scored
    intents: list[Scored] = Field(description="Top-k intents of the skill, best first.")
    slots: list[SlotValue]
    truncated: bool = Field(description="The text was longer than the model's max_length.")


class ParseResults(BaseModel):
    results: list[ParseResult]


class Overloaded(Exception):
    pass


@dataclass
class _Job:
    texts: list[str]
    skill: str | None
    top_k: int
    future: asyncio.Future[list[dict[str, Any]]] = field(repr=False)


class MicroBatcher:
    """Collect concurrent requests into one forward pass; bounded queue, one worker thread."""

    def __init__(
        self,
        parser: Parser,
        *,
        max_batch: int,
        max_wait_ms: float,
        max_queue: int,
        metrics: Metrics,
    ) -> None:
        self.parser = parser
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.metrics = metrics
        self.queue: asyncio.Queue[_Job] | None = None
        self.executor: ThreadPoolExecutor | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        # Made per start, not per instance: an app can run its lifespan more than once (a test
        # client opened twice), each time on a new event loop, and a shut-down executor accepts
        # no work. One thread: inference already uses every core; more would only contend.
        self.queue = asyncio.Queue(maxsize=self.max_queue)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nlu-infer")
        self.task = asyncio.get_running_loop().create_task(self._run(self.queue, self.executor))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.executor is not None:
            self.executor.shutdown(wait=True)

    async def submit(self, texts: list[str], skill: str | None, top_k: int) -> list[dict[str, Any]]:
        if self.queue is None:
            raise RuntimeError("the batcher is not running: start() it in the app's lifespan")
        future: asyncio.Future[list[dict[str, Any]]] = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(_Job(texts, skill, top_k, future))
        except asyncio.QueueFull:
            raise Overloaded from None
        return await future

    async def _run(self, queue: asyncio.Queue[_Job], executor: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await queue.get()]
            size = len(jobs[0].texts)
            # Requests that arrived while the previous batch ran are already queued, so under
            # load batches form without any waiting; one yield lets handlers that are ready
            # enqueue too. An extra wait (max_wait_ms > 0) only trades latency for batch size.
            await asyncio.sleep(0)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                try:
                    job = queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                jobs.append(job)
                size += len(job.texts)
            texts = [t for job in jobs for t in job.texts]
            options = [(job.skill, job.top_k) for job in jobs for _ in job.texts]
            self.metrics.batch_size.observe(len(texts))
            try:
                results = await loop.run_in_executor(
                    executor,
                    functools.partial(
                        self.parser.parse_with_options, texts, options, batch_size=len(texts)
                    ),
                )
            except Exception as err:  # answer every waiting request, then keep serving
                logger.exception("inference failed")
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            start = 0
            for job in jobs:
                if not job.future.done():  # the client may have gone away
                    job.future.set_result(results[start : start + len(job.texts)])
                start += len(job.texts)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nlu_requests", "HTTP requests", ["route", "status"], registry=self.registry
        )
        self.errors = Counter(
            "nlu_request_errors",
            "HTTP requests answered 4xx/5xx",
            ["route"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "nlu_request_latency_seconds",
            "HTTP request latency",
            ["route"],
            buckets=(0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "nlu_batch_size",
            "texts per forward pass",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )


Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


def _json_error(
    status: int, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if details is not None:
        body["details"] = details
    return JSONResponse(status_code=status, content=body, headers=headers)


class _Guard:
    """Pure ASGI middleware: metrics, API key and body-size limit, before any parsing."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, api_key: str | None) -> None:
        self.app = app
        self.metrics = metrics
        self.api_key = api_key.encode() if api_key else None

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route = scope["path"] if scope["path"] in KNOWN_ROUTES else "other"
        status = 500

        async def send_and_record(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        headers = dict(scope.get("headers") or [])
        try:
            if self.api_key is not None and scope["path"] != "/health":
                given = headers.get(b"x-api-key", b"")
                if not hmac.compare_digest(given, self.api_key):
                    response = _json_error(
                        401, "missing or wrong API key: send it in the X-API-Key header"
                    )
                    await response(scope, receive, send_and_record)
                    return
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
                response = _json_error(413, f"request body over {MAX_BODY_BYTES} bytes")
                await response(scope, receive, send_and_record)
                return
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            if status >= 400:
                self.metrics.errors.labels(route).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)


KNOWN_ROUTES = {"/parse", "/skills", "/health", "/metrics", "/docs", "/openapi.json"}


def create_app(
    parser: Parser,
    *,
    model_dir: str | Path | None = None,
    max_batch: int = 32,
    max_wait_ms: float = 0.0,
    max_queue: int = 1024,
    api_key: str | None = None,
) -> FastAPI:
    metrics = Metrics()
    batcher = MicroBatcher(
        parser, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue, metrics=metrics
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        # Uvicorn has finished in-flight requests before it gets here (graceful SIGTERM).
        await batcher.stop()

    app = FastAPI(
        title="nlu",
        summary="Joint multi-skill intent detection and slot filling.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.add_middleware(_Guard, metrics=metrics, api_key=api_key)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "")}
            for e in exc.errors()
        ]
        return _json_error(422, "invalid request: " + "; ".join(d["msg"] for d in details), details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _json_error(exc.status_code, str(exc.detail))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model_loaded": True,
            "model": str(model_dir or ""),
            "backend": parser.backend,
            "skills": len(parser.skill_names),
        }

    @app.get("/skills")
    async def skills() -> dict[str, Any]:
        return {
            "skills": [{**s.to_dict(), "adapter": s.name in parser.adapters} for s in parser.skills]
        }

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorBody, "description": description}
        for code, description in (
            (400, "Unknown skill."),
            (401, "Missing or wrong API key (only with --api-key)."),
            (413, f"An utterance over {MAX_CHARS} characters, or a body over 1 MiB."),
            (422, "The body is not a valid request (the message says which rule)."),
            (503, "The request queue is full; retry after Retry-After seconds."),
        )
    }
    ok: dict[int | str, dict[str, Any]] = {
        200: {
            "description": "`text` gets one result, `texts` a list of results.",
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/ParseResult"},
                            {"$ref": "#/components/schemas/ParseResults"},
                        ]
                    }
                }
            },
        }
    }

    @app.post("/parse", responses={**ok, **errors})
    async def parse(request: ParseRequest) -> Any:
        if request.skill is not None and request.skill not in parser.skill_names:
            known = ", ".join(parser.skill_names)
            return _json_error(400, f"unknown skill {request.skill!r}; known skills: {known}")
        texts = [request.text] if request.text is not None else list(request.texts or [])
        too_long = [i for i, t in enumerate(texts) if len(t) > MAX_CHARS]
        if too_long:
            return _json_error(
                413, f"utterance(s) {too_long} exceed {MAX_CHARS} characters; split them up"
            )
        try:
            results = await batcher.submit(texts, request.skill, request.top_k)
        except Overloaded:
            return _json_error(
                503, "server busy: request queue is full", headers={"Retry-After": "1"}
            )
        # orjson: the response is plain dicts/lists/str/float, and FastAPI's generic encoder
        # costs more than the int8 forward pass for a single utterance.
        payload = results[0] if request.text is not None else {"results": results}
        return Response(orjson.dumps(payload), media_type="application/json")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            components = schema["components"]["schemas"]
            for model in (ParseResult, ParseResults):
                extra = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(extra.pop("$defs", {}))
                components[model.__name__] = extra
            # This server's skills, so clients (and schema-driven fuzzers) know them.
            components["ParseRequest"]["properties"]["skill"]["anyOf"][0]["enum"] = list(
                parser.skill_names
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def create_app_from_env() -> FastAPI:
    """App factory for `uvicorn --factory` / several workers: settings come from NLU_* env."""
    model_dir = os.environ["NLU_MODEL"]
    workers = int(os.environ.get("NLU_WORKERS", "1"))
    threads = int(os.environ.get("NLU_THREADS") or max(1, (os.cpu_count() or 1) // workers))
    parser = Parser.from_pretrained(
        model_dir, backend=os.environ.get("NLU_BACKEND", "auto"), threads=threads
    )
    return create_app(
        parser,
        model_dir=model_dir,
        max_batch=int(os.environ.get("NLU_MAX_BATCH", "32")),
        max_wait_ms=float(os.environ.get("NLU_MAX_WAIT_MS", "0")),
        max_queue=int(os.environ.get("NLU_MAX_QUEUE", "1024")),
        api_key=os.environ.get("NLU_API_KEY") or None,
    )


def serve(
    *,
    model_dir: str | Path,
    backend: str = "auto",
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    threads: int | None = None,
    max_batch: int = 32,
    max_wait_ms: float = 0.0,
    max_queue: int = 1024,
    api_key: str | None = None,
) -> None:
    """`nlu serve`: check the model first so a bad directory fails before the port opens."""
    import uvicorn

    probe = Parser.from_pretrained(model_dir, backend=backend)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        logger.warning("binding to %s without an API key: anyone who can reach it can use it", host)
    logger.info(
        "serving %s (%s, %d skills) on http://%s:%d with %d worker(s)",
        model_dir,
        probe.backend,
        len(probe.skill_names),
        host,
        port,
        workers,
    )
    os.environ.update(
        NLU_MODEL=str(model_dir),
        NLU_BACKEND=probe.backend,
        NLU_WORKERS=str(workers),
        NLU_MAX_BATCH=str(max_batch),
        NLU_MAX_WAIT_MS=str(max_wait_ms),
        NLU_MAX_QUEUE=str(max_queue),
    )
    if api_key:
        os.environ["NLU_API_KEY"] = api_key
    if threads:
        os.environ["NLU_THREADS"] = str(threads)
    del probe
    uvicorn.run(
        "nlu.serve.app:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        timeout_graceful_shutdown=30,
    )
