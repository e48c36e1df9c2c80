"""The server against hostile clients and unlucky operators: bodies that never end, lone
surrogates, foreign Host headers, failing batch-mates, keys in files."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from nlu.cli import main
from nlu.inference.parser import Parser
from nlu.serve.app import create_app
from nlu.serve.settings import LOCAL_HOSTS, ServeSettings
from nlu.training.engine import TrainResult


@pytest.fixture(scope="module")
def parser(trained: TrainResult) -> Parser:
    return Parser.from_pretrained(trained.model_dir)


@pytest.fixture
def client(parser: Parser) -> Iterator[TestClient]:
    with TestClient(create_app(parser)) as c:
        yield c


def test_a_lone_surrogate_is_a_422_naming_the_field(client: TestClient) -> None:
    body = '{"texts": ["turn on the lights", "bad \\ud800 text"]}'  # legal JSON, not text
    r = client.post("/parse", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert "`texts[1]` is not valid text: a lone UTF-16 surrogate" in r.json()["error"]
    pair = '{"text": "turn on the lights \\ud83d\\ude00"}'  # a valid pair is one emoji
    ok = client.post("/parse", content=pair, headers={"content-type": "application/json"})
    assert ok.status_code == 200 and ok.json()["text"].endswith("\U0001f600")


class Poisoned:
    """The real parser, but any batch holding POISON fails as a tokenizer would."""

    POISON = "poison pill"

    def __init__(self, parser: Parser) -> None:
        self.parser = parser
        self.skill_names = parser.skill_names
        self.skills = parser.skills
        self.adapters = parser.adapters
        self.backend = parser.backend
        self.ood = parser.ood

    def check_options(self, options: Any) -> None:
        self.parser.check_options(options)

    def parse_checked(self, texts: Any, options: Any, *, batch_size: int) -> Any:
        if self.POISON in texts:
            raise ValueError("cannot encode this text")
        return self.parser.parse_checked(texts, options, batch_size=batch_size)


def test_a_failing_request_gets_a_json_500_and_its_batch_mates_their_answers(
    parser: Parser,
) -> None:
    app = create_app(Poisoned(parser), ServeSettings(max_wait_ms=30))  # type: ignore[arg-type]
    texts = [f"turn on the {room} lights" for room in ("kitchen", "hall", "bedroom")] * 10
    expected = {t: r.to_dict() for t, r in zip(texts, parser.parse(texts), strict=True)}

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as c,
        ):
            calls = [c.post("/parse", json={"text": t}) for t in texts]
            calls += [c.post("/parse", json={"text": Poisoned.POISON}) for _ in range(3)]
            return await asyncio.gather(*calls)

    responses = asyncio.run(run())
    good, bad = responses[: len(texts)], responses[len(texts) :]
    assert [r.status_code for r in good] == [200] * len(texts)
    assert [r.json() for r in good] == [expected[t] for t in texts]
    assert [r.status_code for r in bad] == [500] * 3
    assert all("cannot encode this text" in r.json()["error"] for r in bad)


def _call(app: Any, receive: Callable[[], Any]) -> list[dict[str, Any]]:
    """One POST /parse straight through the ASGI interface, as a server would make it."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": "/parse",
        "raw_path": b"/parse",
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5000),
        # No content-length: the body comes chunked.
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    return sent


def test_the_body_limit_counts_bytes_received_even_when_chunked(parser: Parser) -> None:
    calls = 0

    async def receive() -> dict[str, Any]:  # 16 MiB in 256 KiB chunks if it were all read
        nonlocal calls
        calls += 1
        return {"type": "http.request", "body": b"a" * (256 * 1024), "more_body": calls < 64}

    sent = _call(create_app(parser), receive)
    assert sent[0]["status"] == 413 and b"over 1048576 bytes" in sent[1]["body"]
    assert calls == 5  # it stopped reading at the first chunk past 1 MiB


def test_a_chunked_body_over_the_limit_through_http_is_413(client: TestClient) -> None:
    def body() -> Iterator[bytes]:  # a generator: no Content-Length
        yield from [b'{"text": "' + b"a" * (512 * 1024)] * 4

    r = client.post("/parse", content=body(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over 1048576 bytes" in r.json()["error"]
    assert r.headers["connection"] == "close"  # keep-alive clients must not reuse it


def test_a_body_that_never_arrives_times_out_with_408(parser: Parser) -> None:
    async def receive() -> dict[str, Any]:  # a client that sends headers, then nothing
        await asyncio.Event().wait()
        return {}

    sent = _call(create_app(parser, ServeSettings(body_timeout_s=0.2)), receive)
    assert sent[0]["status"] == 408
    assert b"did not arrive within 0.2 s" in sent[1]["body"]


def test_a_body_trickled_a_byte_at_a_time_times_out_as_a_whole(parser: Parser) -> None:
    calls = 0

    async def receive() -> dict[str, Any]:  # one byte every 0.1 s, each well inside 0.3 s
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.1)
        return {"type": "http.request", "body": b" ", "more_body": True}

    sent = _call(create_app(parser, ServeSettings(body_timeout_s=0.3)), receive)
    assert sent[0]["status"] == 408 and calls <= 4


def test_a_local_server_refuses_foreign_host_headers(parser: Parser) -> None:
    app = create_app(parser, ServeSettings(trusted_hosts=LOCAL_HOSTS))
    with TestClient(app, base_url="http://localhost:8000") as c:
        assert c.post("/parse", json={"text": "lights on"}).status_code == 200
        ipv6 = c.get("/health", headers={"host": "[::1]:8000"})
        assert ipv6.status_code == 200
        rebound = c.post("/parse", json={"text": "lights on"}, headers={"host": "evil.example"})
        assert rebound.status_code == 400 and "evil.example" in rebound.json()["error"]


def test_health_shows_no_path_and_docs_work_offline(client: TestClient, parser: Parser) -> None:
    health = client.get("/health").json()
    assert "/" not in health["model"]
    page = client.get("/docs")
    assert page.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()
    script = client.get("/docs-assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.content) > 100_000


def test_api_key_file_and_its_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nlu.cli import build_parser
    from nlu.serve.commands import api_key

    key = tmp_path / "key"
    key.write_text("s3cret\n")
    args = build_parser().parse_args(["serve", "--api-key-file", str(key)])
    assert api_key(args) == "s3cret"
    assert main(["serve", "--api-key-file", str(tmp_path / "missing")]) == 2
    assert "--api-key-file" in capsys.readouterr().err
