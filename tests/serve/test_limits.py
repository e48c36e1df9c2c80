"""Bounded work per request: the worst bodies get small answers without the schema's
validation running over them, headers and idle connections have limits at the protocol, and
the refusals the documentation promises are real (issue 36)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from uvicorn.config import Config
from uvicorn.server import ServerState

from nlu.inference.parser import OptionError, Parser
from nlu.serve import protocol
from nlu.serve.app import create_app
from nlu.serve.protocol import MAX_HEADER_BYTES, MAX_HEADERS, BoundedHttpToolsProtocol
from nlu.serve.settings import ServeSettings
from nlu.training.engine import TrainResult

WORST = [
    b'{"texts": [' + b",".join([b"[]"] * 340_000) + b"]}",  # 1 MiB of wrong list items
    b"{" + b",".join(b'"k%d": 1' % i for i in range(60_000)) + b', "text": "hi"}',
    b'{"hypotheses": [{"text": "x", "confidence": 1, '
    + b",".join(b'"k%d": 1' % i for i in range(60_000))
    + b"}]}",
]


@pytest.fixture(scope="module")
def client(trained: TrainResult) -> Iterator[TestClient]:
    with TestClient(create_app(Parser.from_pretrained(trained.model_dir))) as c:
        yield c


@pytest.mark.parametrize("body", WORST, ids=["340k-items", "60k-fields", "60k-fields-nested"])
@pytest.mark.parametrize("kind", ["application/json", "application/merge-patch+json"])
def test_the_worst_bodies_get_a_small_answer_without_validating_them(
    client: TestClient, body: bytes, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nlu.serve.reading

    validated: list[object] = []

    class Spy(nlu.serve.reading.ParseRequest):
        @classmethod
        def model_validate(cls, obj: Any, **kwargs: Any) -> Any:
            validated.append(obj)
            return super().model_validate(obj, **kwargs)

    monkeypatch.setattr(nlu.serve.reading, "ParseRequest", Spy)
    assert len(body) <= 1024 * 1024
    answer = client.post("/parse", content=body, headers={"content-type": kind})
    assert answer.status_code == 422 and len(answer.content) <= 64 * 1024, len(answer.content)
    assert not validated  # refused on its shape, before the schema's validation
    assert "a /parse request has at most" in answer.json()["error"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"texts": ["hi"] * 65}, "texts: at most 64 items (65 sent)"),
        ({"text": "hi", "txt": "x", "tex": "y"}, "unknown fields 'tex', 'txt'"),
        ({"text": "a [ { : string", "skill": "lights"}, None),  # brackets in strings count not
    ],
)
def test_the_shape_is_checked_before_the_schema(
    client: TestClient, body: dict[str, Any], says: str | None
) -> None:
    answer = client.post("/parse", json=body)
    if says is None:
        assert answer.status_code == 200
    else:
        assert answer.status_code == 422 and says in answer.json()["error"]


def test_validation_errors_are_capped(client: TestClient) -> None:
    body = {"texts": [1] * 64}  # 64 errors (not strings), the shape within bounds
    answer = client.post("/parse", json=body)
    assert answer.status_code == 422
    assert len(answer.json()["details"]) == 10 and "and 54 more" in answer.json()["error"]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"text": "lights on", "oos_threshold": "-100"}, 422, "oos_threshold"),
        ({"text": "lights on", "oos_threshold": True}, 422, "oos_threshold"),
    ],
)
def test_strings_are_not_thresholds(
    client: TestClient, body: dict[str, Any], status: int, says: str
) -> None:
    answer = client.post("/parse", json=body)
    assert answer.status_code == status and says in answer.json()["error"]


def test_a_body_that_is_not_utf8_is_refused(client: TestClient) -> None:
    utf16 = json.dumps({"text": "lights on"}).encode("utf-16")
    answer = client.post("/parse", content=utf16, headers={"content-type": "application/json"})
    assert answer.status_code == 400 and "not UTF-8" in answer.json()["error"]


# -- the protocol ----------------------------------------------------------------------------


class Transport(asyncio.Transport):
    """Records what the protocol writes and whether it closed the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _connect(
    settings: ServeSettings, monkeypatch: pytest.MonkeyPatch, state: ServerState | None = None
) -> tuple[BoundedHttpToolsProtocol, Transport]:
    monkeypatch.setattr(protocol, "_settings", lambda: settings)
    config = Config(app=_app, limit_concurrency=settings.max_connections)
    config.load()
    conn = BoundedHttpToolsProtocol(
        config=config, server_state=state or ServerState(), app_state={}
    )
    transport = Transport()
    conn.connection_made(transport)
    return conn, transport


def test_headers_over_the_limit_get_431_and_the_connection_closes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def run() -> None:
        conn, transport = _connect(ServeSettings(), monkeypatch)
        conn.data_received(b"POST /parse HTTP/1.1\r\nHost: x\r\nX-Big: ")
        for _ in range(MAX_HEADER_BYTES // 1024 + 1):  # in pieces, no end of headers in sight
            conn.data_received(b"a" * 1024)
        assert transport.written.startswith(b"HTTP/1.1 431 ") and transport.closed
        conn.data_received(b"b" * 1024 * 1024)  # nothing more is read or answered
        assert transport.written.count(b"HTTP/1.1") == 1

        conn, transport = _connect(ServeSettings(), monkeypatch)
        many = b"".join(b"X-%d: 1\r\n" % i for i in range(MAX_HEADERS + 1))
        conn.data_received(b"GET /health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
        assert transport.written.startswith(b"HTTP/1.1 431 ") and transport.closed
        assert transport.written.count(b"HTTP/1.1") == 1

    asyncio.run(run())


def test_slow_headers_get_408_and_idle_connections_close(monkeypatch: pytest.MonkeyPatch) -> None:
    async def run() -> None:
        settings = ServeSettings(header_timeout_s=0.05)
        conn, transport = _connect(settings, monkeypatch)
        conn.data_received(b"GET /health HTTP/1.1\r\nHo")  # and then nothing more
        await asyncio.sleep(0.15)
        assert transport.written.startswith(b"HTTP/1.1 408 ") and transport.closed

        conn, transport = _connect(settings, monkeypatch)  # never sends a byte
        await asyncio.sleep(0.15)
        assert transport.closed and transport.written == b""

        conn, transport = _connect(settings, monkeypatch)  # a request in time is served
        conn.data_received(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.15)
        assert transport.written.startswith(b"HTTP/1.1 200 ")

    asyncio.run(run())


def test_one_connection_over_the_cap_gets_503(monkeypatch: pytest.MonkeyPatch) -> None:
    async def run() -> None:
        settings = ServeSettings(max_connections=2)
        state = ServerState()
        for _ in range(2):
            _, transport = _connect(settings, monkeypatch, state)
            assert not transport.closed
        _, transport = _connect(settings, monkeypatch, state)
        assert transport.written.startswith(b"HTTP/1.1 503 ") and transport.closed

    asyncio.run(run())


def test_serving_the_network_without_a_key_is_refused_unless_trusted(
    trained: TrainResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    from nlu.serve.run import serve

    started: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: started.append(kwargs))
    folder = str(trained.model_dir)
    with pytest.raises(OptionError, match="without an API key"):
        serve(ServeSettings(model_dir=folder, host="0.0.0.0"))
    assert not started
    serve(ServeSettings(model_dir=folder, host="0.0.0.0", api_key="k"))
    serve(ServeSettings(model_dir=folder, host="0.0.0.0", trust_network=True))
    assert len(started) == 2 and started[0]["http"] is BoundedHttpToolsProtocol
