"""HTTP inference server (FastAPI): POST /parse, GET /skills, GET /health, GET /metrics.

- Concurrent requests are micro-batched (`nlu.serve.batching`); a full queue answers 503 with
  Retry-After instead of queueing without limit.
- Every bad request gets a 4xx JSON body `{"error": ..., "details": [...]}` saying what to fix
  (`nlu.serve.schemas` states every rule in the OpenAPI document).
- Optional API key (header `X-API-Key`) for every route but /health; binds to 127.0.0.1 by
  default (`nlu.serve.run`).

The model folder written by `nlu train` (PyTorch) or `nlu export` (ONNX) is all it needs.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from nlu.inference.nbest import combine
from nlu.inference.parser import OptionError, Parser, UnknownSkillError
from nlu.model.ood import PROBABILITY_METHODS
from nlu.result import ParseOptions
from nlu.serve.batching import InferenceFailed, MicroBatcher, Overloaded
from nlu.serve.reading import invalid, json_error, read_request, skeleton_problem
from nlu.serve.schemas import (
    MAX_BODY_BYTES,
    ErrorBody,
    ParseRequest,
    response_components,
    shape_problem,
)
from nlu.serve.settings import ServeSettings

logger = logging.getLogger(__name__)


# prometheus_client's multiprocess mode: set (by `nlu serve --workers N`) before the workers
# import prometheus_client.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


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


class _Guard:
    """Pure ASGI middleware, before any parsing: metrics, trusted Host header, API key, and the
    body limit (on the bytes received, whatever the transfer encoding, with a read timeout)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        settings: ServeSettings,
        parse: Callable[[ParseRequest], Awaitable[Response]],
    ) -> None:
        self.app = app
        self.parse = parse
        self.metrics = metrics
        self.api_key = settings.api_key.encode() if settings.api_key else None
        self.hosts = {h.lower() for h in settings.trusted_hosts or ()}
        self.body_timeout = settings.body_timeout_s

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
            host = _host_name(headers.get(b"host", b""))
            if self.hosts and host not in self.hosts:
                response = json_error(
                    400,
                    f"Host header {host!r} is not one of this server's names "
                    f"({', '.join(sorted(self.hosts))}); a local server answers only requests "
                    "addressed to it (DNS-rebinding protection; see `nlu serve --allow-host`)",
                )
                await response(scope, receive, send_and_record)
                return
            if self.api_key is not None and scope["path"] != "/health":
                given = headers.get(b"x-api-key", b"")
                if not hmac.compare_digest(given, self.api_key):
                    response = json_error(
                        401, "missing or wrong API key: send it in the X-API-Key header"
                    )
                    await response(scope, receive, send_and_record)
                    return
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
                response = json_error(413, f"request body over {MAX_BODY_BYTES} bytes")
                await response(scope, receive, send_and_record)
                return
            if scope["path"] == "/parse" and scope["method"] == "POST":
                kind = headers.get(b"content-type", b"").split(b";")[0].strip()
                if kind == b"application/json":
                    await self._parse(scope, self._limited(receive), send_and_record)
                    return
                if kind.endswith(b"json"):  # other JSON types: the route words the errors
                    await self._bounded(scope, self._limited(receive), send_and_record)
                    return
            await self.app(scope, self._limited(receive), send_and_record)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            if status >= 400:
                self.metrics.errors.labels(route).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)

    async def _parse(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        """POST /parse without the framework's routing, request object and dependency solving
        (about 0.5 ms of CPU per request, measured in-process:
        benchmarks/results/studies/serving.md): every `application/json` body, valid or not,
        is answered here, the errors worded as the FastAPI route words them."""
        body = await self._body(scope, receive, send)
        if body is None:
            return
        request = read_request(body)
        response = await self.parse(request) if isinstance(request, ParseRequest) else request
        await response(scope, receive, send)

    async def _body(
        self, scope: MutableMapping[str, Any], receive: Receive, send: Send
    ) -> bytes | None:
        """The whole body, or None once the client left or a limit was answered."""
        chunks = []
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None  # the client went away: nobody to answer
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    return b"".join(chunks)
        except StarletteHTTPException as exc:
            headers = dict(exc.headers) if exc.headers else None
            await json_error(exc.status_code, str(exc.detail), headers=headers)(
                scope, receive, send
            )
            return None

    async def _bounded(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        """A JSON body for the route, whose shape is checked first (`shape_problem`): the
        framework's validation would spend seconds on 300,000 wrong list items."""
        body = await self._body(scope, receive, send)
        if body is None:
            return
        too_big = skeleton_problem(body)
        if too_big is not None:
            await too_big(scope, receive, send)
            return
        try:
            problem = shape_problem(orjson.loads(body))
        except orjson.JSONDecodeError:
            problem = None  # the route words JSON errors
        if problem:
            await invalid(problem)(scope, receive, send)
            return
        replayed = False

        async def replay() -> MutableMapping[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _limited(self, receive: Receive) -> Receive:
        received = 0
        deadline: float | None = None

        async def limited() -> MutableMapping[str, Any]:
            # One deadline for the whole body, so a client trickling a byte at a time cannot
            # hold a request open by staying just under a per-read timeout.
            nonlocal received, deadline
            loop = asyncio.get_running_loop()
            if deadline is None:
                deadline = loop.time() + self.body_timeout
            try:
                # timeout_at, not wait_for: wait_for wraps every read in a new task (3.11).
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise StarletteHTTPException(
                    408,
                    f"the request body did not arrive within {self.body_timeout:g} s",
                    headers=_CLOSE,
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    # An HTTPException, so FastAPI's body reading passes it on as it is.
                    raise StarletteHTTPException(
                        413, f"request body over {MAX_BODY_BYTES} bytes", headers=_CLOSE
                    )
            return message

        return limited


# The rest of the body is never read, so the connection cannot carry another request: say so,
# or a keep-alive client sends its next request into a connection the server closes.
_CLOSE = {"connection": "close"}


def _host_name(header: bytes) -> str:
    """The host of a Host header, without the port ("[::1]:8000" -> "::1")."""
    host = header.decode("latin-1").strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _offline_docs(app: FastAPI) -> None:
    """/docs with Swagger UI served from the installed swagger-ui-bundle package, not a CDN, so
    it works on a machine without internet access."""
    import swagger_ui_bundle
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), "assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="nlu API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )


KNOWN_ROUTES = {"/parse", "/skills", "/health", "/metrics", "/docs", "/openapi.json"}


def create_app(parser: Parser, settings: ServeSettings | None = None) -> FastAPI:
    """The ASGI app over a loaded parser; `settings` as `nlu serve` takes them."""
    settings = settings or ServeSettings()
    if settings.oos_threshold is not None:
        parser.use_threshold(settings.oos_threshold)
    metrics = Metrics()
    batcher = MicroBatcher(parser, settings, batch_sizes=metrics.batch_size)

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
        docs_url=None,
    )
    _offline_docs(app)
    _error_handlers(app)
    _info_routes(app, parser, settings, metrics)
    answer = _answerer(parser, batcher, settings.timezone)

    # Declared for the OpenAPI document and for requests the guard's fast path hands back
    # (not JSON, or invalid: the exception handlers word the error).
    @app.post("/parse", responses={**PARSE_OK, **PARSE_ERRORS})
    async def parse(request: ParseRequest) -> Any:
        return await answer(request)

    app.add_middleware(_Guard, metrics=metrics, settings=settings, parse=answer)
    app.openapi = _openapi(app, parser)  # type: ignore[method-assign]
    return app


def _error_handlers(app: FastAPI) -> None:
    """Every error as `{"error": ..., "details": [...]}` with its status."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid(exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        return json_error(exc.status_code, str(exc.detail), headers=headers)


def _info_routes(app: FastAPI, parser: Parser, settings: ServeSettings, metrics: Metrics) -> None:
    """GET /health, /skills and /metrics."""

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model_loaded": True,
            # The folder's name only: /health answers without the API key.
            "model": Path(settings.model_dir).name,
            "backend": parser.backend,
            "skills": len(parser.skill_names),
            # Without a detector (a model saved before there was one) every text is in scope.
            "out_of_scope": {"method": parser.ood.method, "threshold": parser.ood.threshold}
            if parser.ood is not None
            else None,
        }

    @app.get("/skills")
    async def skills() -> dict[str, Any]:
        return {
            "skills": [{**s.to_dict(), "adapter": s.name in parser.adapters} for s in parser.skills]
        }

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        registry = metrics.registry
        if os.environ.get(MULTIPROCESS_ENV):
            # Several worker processes (`nlu serve --workers N`): each writes its counts to the
            # shared folder; whichever worker answers sums them all.
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


PARSE_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": description}
    for code, description in (
        (401, "Missing or wrong API key (only with --api-key)."),
        (400, "Unknown skill, or a Host header that is not this server's."),
        (408, "The request body did not arrive in time."),
        (413, "A request body over 1 MiB."),
        (422, "The body is not a valid request (the message says which rule)."),
        (500, "Inference failed for this request (other requests are not affected)."),
        (503, "The request queue is full; retry after Retry-After seconds."),
    )
}
PARSE_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "`text` and `hypotheses` get one result, `texts` a list of results.",
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


def _answerer(
    parser: Parser, batcher: MicroBatcher, default_zone: str | None
) -> Callable[[ParseRequest], Awaitable[Response]]:
    """The one handler of a valid /parse request, for the route and the guard's fast path."""

    async def answer(request: ParseRequest) -> Response:
        if request.hypotheses is not None:
            texts = [h.text for h in request.hypotheses]
        else:
            texts = [request.text] if request.text is not None else list(request.texts or [])
        zone = request.timezone
        if zone is None and (
            request.reference_time is None or request.reference_time.tzinfo is None
        ):
            zone = default_zone  # the server's zone only where the request gives none
        options = ParseOptions(
            request.skill,
            request.top_k,
            request.oos_threshold,
            request.reference_time,
            zone,
            request.locale,
        )
        # The one check of the options (the schema checked the texts): the batcher parses
        # without checking again.
        try:
            parser.check_options(options)
        except UnknownSkillError:
            known = ", ".join(parser.skill_names)
            return json_error(400, f"unknown skill {request.skill!r}; known skills: {known}")
        except OptionError as err:
            return json_error(422, f"invalid request: {err}")
        try:
            results = await batcher.submit(texts, options)
        except Overloaded:
            return json_error(
                503, "server busy: request queue is full", headers={"Retry-After": "1"}
            )
        except InferenceFailed as err:
            return json_error(500, f"inference failed for this request: {err}")
        # orjson serialises the result dataclasses natively; FastAPI's generic encoder costs
        # more than the int8 forward pass for a single utterance.
        payload: Any
        if request.hypotheses is not None:
            asr = [h.confidence for h in request.hypotheses]
            payload = combine(results, asr, top_k=request.top_k)
        else:
            payload = results[0] if request.text is not None else {"results": results}
        return Response(orjson.dumps(payload), media_type="application/json")

    return answer


def _openapi(app: FastAPI, parser: Parser) -> Callable[[], dict[str, Any]]:
    """The OpenAPI document, with this server's skills and its detector's threshold range."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            components = schema["components"]["schemas"]
            components.update(response_components())
            # This server's skills, so clients (and schema-driven fuzzers) know them.
            request = components["ParseRequest"]["properties"]
            request["skill"]["anyOf"][0]["enum"] = list(parser.skill_names)
            # And the thresholds its detector can use (none without a detector).
            if parser.ood is None:
                del request["oos_threshold"]
            elif parser.ood.method in PROBABILITY_METHODS:
                request["oos_threshold"]["anyOf"][0].update(minimum=0, maximum=1)
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi
