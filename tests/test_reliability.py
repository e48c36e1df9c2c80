"""Failures found by probing as a hostile client and an unlucky operator, each reproduced."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import nlu
from nlu.cli import main
from nlu.config import TrainConfig
from nlu.inference.parser import Parser
from nlu.schema import DataError
from nlu.serve.app import create_app
from nlu.serve.settings import LOCAL_HOSTS, ServeSettings
from nlu.training.engine import TrainResult
from nlu.training.train import train


@pytest.fixture(scope="module")
def parser(trained: TrainResult) -> Parser:
    return Parser.from_pretrained(trained.model_dir)


@pytest.fixture
def client(parser: Parser) -> Iterator[TestClient]:
    with TestClient(create_app(parser)) as c:
        yield c


# -- one bad request must not fail others ------------------------------------------------------


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

    def parse_with_options(self, texts: Any, options: Any, *, batch_size: int) -> Any:
        if self.POISON in texts:
            raise ValueError("cannot encode this text")
        return self.parser.parse_with_options(texts, options, batch_size=batch_size)


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


# -- limits that hold -------------------------------------------------------------------------


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
    from nlu.cli import _api_key, build_parser

    key = tmp_path / "key"
    key.write_text("s3cret\n")
    args = build_parser().parse_args(["serve", "--api-key-file", str(key)])
    assert _api_key(args) == "s3cret"
    assert main(["serve", "--api-key-file", str(tmp_path / "missing")]) == 2
    assert "--api-key-file" in capsys.readouterr().err


# -- model folders: damaged files are one line naming the file ---------------------------------


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda d: (d / "model.safetensors").write_bytes(os.urandom(4096)), "model.safetensors"),
        (lambda d: (d / "nlu.json").write_text('{"skills": '), "nlu.json is damaged"),
        (lambda d: (d / "config.json").write_text("[]"), "config.json"),
        (lambda d: (d / "tokenizer.json").write_text("{"), "tokenizer.json"),
    ],
)
def test_a_damaged_model_folder_is_one_line_and_exit_2(
    trained: TrainResult,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[Path], None],
    fragment: str,
) -> None:
    model = tmp_path / "model"
    shutil.copytree(trained.model_dir, model)
    damage(model)
    assert main(["predict", "lights on", "--model", str(model)]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1, err
    # The server fails before opening its port, with the same line.
    assert main(["serve", str(model), "--port", "1"]) == 2
    assert fragment in capsys.readouterr().err


def test_a_truncated_onnx_graph_is_named(
    trained: TrainResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nlu.model.export import export_onnx

    target = export_onnx(model_dir=trained.model_dir, out_dir=tmp_path / "onnx")
    with target.open("r+b") as handle:
        handle.truncate(target.stat().st_size // 2)
    assert main(["predict", "lights on", "--model", str(tmp_path / "onnx")]) == 2
    assert "model.onnx is damaged or truncated" in capsys.readouterr().err


# -- skill files --------------------------------------------------------------------------------


SKILL = """skill: alarm
intents:
  set_alarm:
    utterances:
      - wake me up
  set_alarm:
    utterances:
      - another one
"""


def test_duplicate_keys_in_a_skill_file_are_a_path_line_error(tmp_path: Path) -> None:
    from nlu.data.skills import parse_skill_file

    path = tmp_path / "skill.yaml"
    path.write_text(SKILL)
    with pytest.raises(DataError, match=r"skill\.yaml:6: duplicate key 'intents\.set_alarm' "):
        parse_skill_file(path)
    path.write_text("skill: alarm\nintents:\n  set_alarm: [\n")
    with pytest.raises(DataError, match=r"skill\.yaml:4: invalid YAML"):
        parse_skill_file(path)
    path.write_bytes(b"skill: alarm\nintents:\n  caf\xe9: {}\n")
    with pytest.raises(DataError, match=r"skill\.yaml:3: not valid UTF-8"):
        parse_skill_file(path)


# -- resume -------------------------------------------------------------------------------------


def test_resume_skips_a_broken_newest_checkpoint(
    make_config: Callable[..., TrainConfig], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nlu.training")
    first = train(make_config(tmp_path, epochs=2, keep_checkpoints=3))
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "epoch_002" / "optimizer.bin").write_bytes(b"\x00" * 10)  # torn save
    (checkpoints / ".epoch_003.partial").mkdir()  # a save killed half way is never a candidate
    resumed = train(make_config(tmp_path, epochs=3, keep_checkpoints=3, resume="latest"))
    assert "skipping checkpoint" in caplog.text and "epoch_002" in caplog.text
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.history[0] == first.history[0]
    assert "resumed from" in caplog.text and "epoch_001 at epoch 2" in caplog.text


def test_resume_with_no_intact_checkpoint_is_a_clear_error(
    make_config: Callable[..., TrainConfig], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train(make_config(tmp_path, epochs=1))
    (tmp_path / "checkpoints" / "epoch_001" / "trainer_state.json").unlink()
    from nlu.training.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match=r"epoch_001 \(FileNotFoundError"):
        train(make_config(tmp_path, epochs=2, resume="latest"))


def test_nlu_load_takes_a_backend(trained: TrainResult) -> None:
    parser = nlu.load(trained.model_dir, backend="torch")
    assert parser.backend == "torch"
    assert json.loads(json.dumps(parser.parse(["lights on"])[0].to_dict()))["text"] == "lights on"
    with pytest.raises(ValueError, match="backend must be one of"):
        nlu.load(trained.model_dir, backend="tensorflow")
