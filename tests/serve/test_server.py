"""The endpoint answers valid requests and turns every bad one into a 4xx JSON error."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nlu.inference.parser import Parser
from nlu.result import ParseResult
from nlu.serve.app import create_app
from nlu.serve.schemas import MAX_BATCH, MAX_CHARS
from nlu.serve.settings import ServeSettings
from nlu.training.engine import TrainResult


@pytest.fixture(scope="module")
def model_dir(trained: TrainResult) -> Path:
    return trained.model_dir


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Iterator[TestClient]:
    # The context manager runs the app's lifespan, which starts the micro-batcher.
    with TestClient(
        create_app(Parser.from_pretrained(model_dir), ServeSettings(model_dir=str(model_dir)))
    ) as c:
        yield c


def test_parse_single_text(client: TestClient, model_dir: Path) -> None:
    r = client.post("/parse", json={"text": "turn on the kitchen lights"})
    assert r.status_code == 200
    body = r.json()
    assert body["text"] == "turn on the kitchen lights"
    assert body["skill"]["name"] == "lights" and body["intent"]["name"] == "turn_on"
    assert [(s["slot"], s["value"], s["start"], s["end"]) for s in body["slots"]] == [
        ("room", "kitchen", 12, 19)
    ]
    # The JSON answer is the in-process result, confidences included, field for field.
    (expected,) = Parser.from_pretrained(model_dir).parse(["turn on the kitchen lights"])
    assert body == expected.to_dict()
    assert 0 < body["intent"]["confidence"] <= 1 and body["truncated"] is False


def test_parse_batch_keeps_order_and_matches_single(client: TestClient) -> None:
    texts = ["lights on", "make the hall blue", "switch the bedroom light off"]
    r = client.post("/parse", json={"texts": texts, "top_k": 2})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["text"] for x in results] == texts
    assert all(len(x["intents"]) == 2 for x in results)
    for text, batched in zip(texts, results, strict=True):
        single = client.post("/parse", json={"text": text}).json()
        assert single["intent"]["name"] == batched["intent"]["name"]
        assert [s["value"] for s in single["slots"]] == [s["value"] for s in batched["slots"]]


def test_skills_and_health(client: TestClient) -> None:
    skills = client.get("/skills").json()["skills"]
    assert skills[0]["name"] == "lights" and "set_color" in skills[0]["intents"]
    assert skills[0]["intent_slots"]["set_color"] == ["color", "room"]
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model_loaded"] is True
    assert client.get("/openapi.json").json()["paths"]["/parse"]


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        ({"text": ""}, 422, "empty"),
        ({"text": "   "}, 422, "empty"),
        ({"text": 42}, 422, "string"),
        ({"texts": "not a list"}, 422, "list"),
        ({"texts": []}, 422, "at least one"),
        ({"texts": ["ok", 3]}, 422, "string"),
        ({"utterance": "hi"}, 422, "utterance"),
        ({}, 422, "exactly one of"),
        ({"text": "hi", "texts": ["hi"]}, 422, "exactly one of"),
        ({"text": "hi", "top_k": 0}, 422, "top_k"),
        ({"text": "hi", "top_k": "3"}, 422, "top_k"),
        ({"texts": ["hi"] * (MAX_BATCH + 1)}, 422, f"at most {MAX_BATCH}"),
        ({"text": "x" * (MAX_CHARS + 1)}, 422, f"at most {MAX_CHARS} per utterance"),
        ({"texts": ["ok", "\u3000\t\u2009"]}, 422, "`texts[1]` is empty or only whitespace"),
        ({"text": "hi", "skill": "weather"}, 400, "unknown skill 'weather'"),
    ],
)
def test_bad_requests_get_a_json_4xx(
    client: TestClient, payload: dict[str, Any], status: int, fragment: str
) -> None:
    r = client.post("/parse", json=payload)
    assert r.status_code == status, r.text
    body = r.json()
    assert fragment in body["error"] or fragment in str(body.get("details"))


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"text": "caf\xe9"}', "application/json"),  # invalid UTF-8
        (b'{"text": ', "application/json"),  # truncated JSON
        (b"text=hello", "application/x-www-form-urlencoded"),
        (b'"just a string"', "application/json"),
    ],
)
def test_malformed_bodies_get_a_json_4xx(
    client: TestClient, content: bytes, content_type: str
) -> None:
    r = client.post("/parse", content=content, headers={"content-type": content_type})
    assert 400 <= r.status_code < 500, r.text
    assert "error" in r.json()


@pytest.mark.parametrize(
    "body",
    [
        b'{"text": "turn on the kitchen lights"}',
        b'{"texts": ["lights on", "make the hall blue"], "top_k": 2}',
        b'{"text": "set a timer", "skill": "lights", "top_k": 3.0}',
        b'{"hypotheses": [{"text": "lights on", "confidence": 0.7}, '
        b'{"text": "light son", "confidence": 0.3}]}',
        b'{"text": "caf\xc3\xa9", "text": "lights off"}',  # duplicate key: the last one
        b'{"text": "hi", "skill": "weather"}',
        b'{"text": "\\ud800"}',  # valid JSON, not text: orjson refuses it, the route words it
        b'{"text": NaN}',
        b'{"text": "lights on", "top_k": 1e400}',
        b"",
        b"[]",
    ],
)
def test_fast_parse_path_answers_exactly_as_the_route(
    client: TestClient, body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard answers `application/json` bodies itself; `application/merge-patch+json` is
    JSON to FastAPI but not to the fast path, so it shows what the route alone answers."""
    import nlu.serve.reading

    validated: list[object] = []

    class Spy(nlu.serve.reading.ParseRequest):
        @classmethod
        def model_validate(cls, obj: Any, **kwargs: Any) -> Any:
            validated.append(obj)
            return super().model_validate(obj, **kwargs)

    monkeypatch.setattr(nlu.serve.reading, "ParseRequest", Spy)
    fast = client.post("/parse", content=body, headers={"content-type": "application/json"})
    took_fast_path = bool(validated)
    route = client.post(
        "/parse", content=body, headers={"content-type": "application/merge-patch+json"}
    )
    assert len(validated) == took_fast_path  # the route never calls the guard's validation
    assert (fast.status_code, fast.content) == (route.status_code, route.content)
    assert fast.headers["content-type"] == route.headers["content-type"]
    if fast.status_code == 200:
        assert took_fast_path


def test_unknown_route_and_method_are_json_errors(client: TestClient) -> None:
    assert client.get("/nope").json()["error"] == "Not Found"
    assert client.get("/parse").status_code == 405


def test_metrics_count_requests_errors_and_batches(client: TestClient) -> None:
    client.post("/parse", json={"text": "lights on"})
    client.post("/parse", json={"text": ""})
    text = client.get("/metrics").text
    assert 'nlu_requests_total{route="/parse",status="200"}' in text
    assert 'nlu_requests_total{route="/parse",status="422"}' in text
    assert 'nlu_request_errors_total{route="/parse"}' in text
    assert "nlu_request_latency_seconds_bucket" in text
    assert "nlu_batch_size_count" in text


def test_api_key_guards_everything_but_health(model_dir: Path) -> None:
    app = create_app(Parser.from_pretrained(model_dir), ServeSettings(api_key="s3cret"))
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        r = c.post("/parse", json={"text": "lights on"})
        assert r.status_code == 401 and "X-API-Key" in r.json()["error"]
        assert c.get("/skills", headers={"X-API-Key": "wrong"}).status_code == 401
        ok = c.post("/parse", json={"text": "lights on"}, headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200


def test_concurrent_requests_are_micro_batched_and_matched(model_dir: Path) -> None:
    import asyncio

    import httpx

    parser = Parser.from_pretrained(model_dir)
    app = create_app(parser, ServeSettings(max_batch=16, max_wait_ms=20))
    texts = [f"turn on the {room} lights" for room in ("kitchen", "hall", "bedroom", "living room")]
    texts = [texts[i % 4] for i in range(64)]
    expected = {t: parser.parse([t])[0] for t in set(texts)}

    async def run() -> list[dict[str, Any]]:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as c,
        ):
            responses = await asyncio.gather(*(c.post("/parse", json={"text": t}) for t in texts))
            metrics = (await c.get("/metrics")).text
        assert all(r.status_code == 200 for r in responses)
        count = next(
            line for line in metrics.splitlines() if line.startswith("nlu_batch_size_count")
        )
        assert float(count.split()[-1]) < len(texts)  # several requests shared a forward pass
        return [r.json() for r in responses]

    for text, result in zip(texts, asyncio.run(run()), strict=True):
        assert result["text"] == text
        assert result["slots"] == expected[text].to_dict()["slots"]


def test_full_queue_answers_503_with_retry_after(model_dir: Path) -> None:
    import asyncio

    import httpx

    app = create_app(
        Parser.from_pretrained(model_dir), ServeSettings(max_queue=1, max_wait_ms=50, max_batch=1)
    )

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as c,
        ):
            return await asyncio.gather(
                *(c.post("/parse", json={"text": "lights on"}) for _ in range(20))
            )

    responses = asyncio.run(run())
    codes = {r.status_code for r in responses}
    assert codes <= {200, 503} and 503 in codes and 200 in codes
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and "queue is full" in busy.json()["error"]


@pytest.mark.slow
def test_onnx_export_matches_torch(model_dir: Path, tmp_path: Path) -> None:
    import numpy as np

    from nlu.model.alignment import encode
    from nlu.model.export import export_onnx
    from nlu.model.features import encodings_inputs

    export_onnx(model_dir=model_dir, out_dir=tmp_path / "onnx")
    export_onnx(model_dir=model_dir, out_dir=tmp_path / "int8", quantize="int8")
    torch_parser = Parser.from_pretrained(model_dir)
    onnx_parser = Parser.from_pretrained(tmp_path / "onnx")
    assert onnx_parser.backend == "onnx" and onnx_parser.skill_names == torch_parser.skill_names
    texts = [
        "turn on the kitchen lights",
        "make the hall blue",
        "lights on",
        "switch the bedroom light off now please",
    ]
    batch = encodings_inputs(encode(torch_parser.tokenizer, texts, torch_parser.max_length), 0)
    a, b = torch_parser.forward(batch), onnx_parser.forward(batch)
    for x, y in ((a.router, b.router), (a.intents, b.intents), (a.slots, b.slots)):
        np.testing.assert_allclose(x, y, atol=1e-4)

    def decisions(results: list[ParseResult]) -> list[Any]:
        return [(r.intent.name, [(s.slot, s.start, s.end) for s in r.slots]) for r in results]

    assert decisions(onnx_parser.parse(texts)) == decisions(torch_parser.parse(texts))
    int8 = Parser.from_pretrained(tmp_path / "int8")
    assert (tmp_path / "int8" / "model.onnx").stat().st_size < (
        tmp_path / "onnx" / "model.onnx"
    ).stat().st_size
    assert len(int8.parse(texts)) == len(texts)
    # The exported directory is servable on its own.
    with TestClient(create_app(onnx_parser)) as c:
        assert c.post("/parse", json={"text": "lights on"}).json()["intent"]["name"] == "turn_on"


def test_nbest_hypotheses_give_one_combined_result(client: TestClient, model_dir: Path) -> None:
    from nlu.inference.parser import Parser

    hypotheses = [
        {"text": "turn on the kitchen lights", "confidence": 0.5},
        {"text": "turn on the kitchen light", "confidence": 0.3},
        {"text": "turn of the kitchen lights", "confidence": 0.2},
    ]
    answer = client.post("/parse", json={"hypotheses": hypotheses})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (
        body["hypothesis"] in (0, 1, 2) and body["text"] == hypotheses[body["hypothesis"]]["text"]
    )
    expected = Parser.from_pretrained(model_dir).parse_nbest(
        [(str(h["text"]), float(h["confidence"])) for h in hypotheses]  # type: ignore[arg-type]
    )
    assert body == expected.to_dict()
    both = client.post("/parse", json={"text": "lights on", "hypotheses": hypotheses})
    assert both.status_code == 422 and "exactly one of" in both.json()["error"]
    blank = client.post("/parse", json={"hypotheses": [{"text": " ", "confidence": 1}]})
    assert blank.status_code == 422


def test_reference_time_is_an_iso_date_time(client: TestClient) -> None:
    ok = client.post("/parse", json={"text": "lights on", "reference_time": "2026-11-26T09:00:00"})
    assert ok.status_code == 200
    for value in ("2026-11-26T09:00Z", "2026-11-26 09:00:00.5+01:00", "2026-12-31T23:59:60Z"):
        assert client.post("/parse", json={"text": "x", "reference_time": value}).status_code == 200
    # Pydantic alone would read a number or a numeric string as Unix time, a date as midnight.
    rejected: list[object] = ["next tuesday", -276, 1.5, "1700000000", "2026-11-27", True]
    for wrong in [*rejected, "2026-11-26T09"]:
        bad = client.post("/parse", json={"text": "lights on", "reference_time": wrong})
        assert bad.status_code == 422 and "reference_time" in bad.text, wrong


def test_a_request_sets_the_zone_of_its_slot_values(model_dir: Path) -> None:
    from tests.helpers import dated_parser

    evening = "2026-12-06T20:00:00+00:00"  # 05:00 on the 7th in Tokyo
    settings = ServeSettings(timezone="Asia/Tokyo")
    with TestClient(create_app(dated_parser(model_dir), settings)) as c:

        def tomorrow(**fields: str) -> Any:
            answer = c.post("/parse", json={"text": "turn on the kitchen lights", **fields})
            assert answer.status_code == 200, answer.text
            (slot,) = answer.json()["slots"]
            return slot["resolved"], slot["grain"]

        assert tomorrow(reference_time=evening) == ("2026-12-07", "day")  # its offset wins
        assert tomorrow(reference_time=evening, timezone="Asia/Tokyo")[0] == "2026-12-08"
        # Neither a zone nor an offset: the server's zone.
        assert tomorrow(reference_time="2026-12-06T20:00:00")[0] == "2026-12-07"
        for field, value in (("timezone", "Mars/Olympus"), ("timezone", 5), ("locale", "xx")):
            bad = c.post("/parse", json={"text": "lights on", field: value})
            assert bad.status_code == 422 and field in bad.json()["error"], (field, bad.text)


def test_json_bodies_never_reach_the_framework(model_dir: Path) -> None:
    """Every application/json /parse body, invalid ones too, is answered by the guard: the
    FastAPI route's validation (and its error handler) is for other content types only."""
    from fastapi.exceptions import RequestValidationError

    app = create_app(Parser.from_pretrained(model_dir))
    handled: list[str] = []
    route_handler = app.exception_handlers[RequestValidationError]

    async def spy(request: Any, exc: Exception) -> Any:
        handled.append(request.headers["content-type"])
        return await route_handler(request, exc)  # type: ignore[misc]

    app.exception_handlers[RequestValidationError] = spy
    with TestClient(app) as c:
        for body in (b"", b"[]", b"{", b'{"text": ""}', b'{"text": NaN}', b'{"txt": "x"}'):
            answer = c.post("/parse", content=body, headers={"content-type": "application/json"})
            assert answer.status_code == 422, body
        assert handled == []
        other = c.post("/parse", content=b"{", headers={"content-type": "application/x+json"})
        assert other.status_code == 422 and handled == ["application/x+json"]


def test_each_check_runs_once_per_request(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The schema checks the texts and the answer checks the options, once: the batcher then
    parses without checking either again."""
    from nlu.inference import parser as parser_module

    parser = Parser.from_pretrained(model_dir)
    checks: list[object] = []
    texts_checked: list[str] = []
    real_check, real_text = parser.check_options, parser_module.text_problem

    def check(options: Any) -> None:
        checks.append(options)
        real_check(options)

    def text_problem(text: str) -> str | None:
        texts_checked.append(text)
        return real_text(text)

    monkeypatch.setattr(parser, "check_options", check)
    monkeypatch.setattr(parser_module, "text_problem", text_problem)
    with TestClient(create_app(parser)) as c:
        skill = parser.skill_names[0]
        answer = c.post("/parse", json={"texts": ["lights on", "lights off"], "skill": skill})
        assert answer.status_code == 200
    assert len(checks) == 1 and texts_checked == []


def test_serve_start_up_checks_the_zone_and_says_when_the_engine_is_missing(
    model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before the port opens: an unknown --timezone is an error, a missing engine one line."""
    import json
    import shutil

    import uvicorn

    from nlu.inference.parser import OptionError
    from nlu.resolve import engine
    from nlu.serve.run import serve

    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    meta = json.loads((folder / "nlu.json").read_text())
    meta["skills"][0]["slot_kinds"] = {"room": "date"}
    (folder / "nlu.json").write_text(json.dumps(meta))
    started: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: started.append(kwargs))
    with pytest.raises(OptionError, match="--timezone: unknown time zone 'Europe/Berln'"):
        serve(ServeSettings(model_dir=str(folder), timezone="Europe/Berln"))
    assert not started

    def missing() -> None:
        raise engine.EngineUnavailable("slot kinds need the Duckling engine: pip install ...")

    monkeypatch.setattr(engine, "load", missing)
    with caplog.at_level(logging.WARNING, logger="nlu.serve.run"):
        serve(ServeSettings(model_dir=str(folder), timezone="Europe/Berlin"))
    assert len(started) == 1
    said = [r.getMessage() for r in caplog.records if "Duckling" in r.getMessage()]
    assert said == ["slot kinds need the Duckling engine: pip install ..."]
