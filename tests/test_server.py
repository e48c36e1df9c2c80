"""The endpoint answers valid requests and turns every bad one into a 4xx JSON error."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nlu.config import TrainConfig
from nlu.predict import Parser
from nlu.serve.app import MAX_BATCH, MAX_CHARS, create_app
from nlu.train import train


@pytest.fixture(scope="module")
def client(
    make_config: Callable[..., TrainConfig], tmp_path_factory: pytest.TempPathFactory
) -> TestClient:
    cfg = make_config(tmp_path_factory.mktemp("serve_run"), epochs=20, dev_fraction=0.1)
    result = train(**dataclasses.asdict(cfg))
    return TestClient(
        create_app(Parser.from_pretrained(result.model_dir), model_dir=result.model_dir)
    )


def test_parse_single_text(client: TestClient) -> None:
    r = client.post("/parse", json={"text": "turn on the kitchen lights"})
    assert r.status_code == 200
    body = r.json()
    assert body["text"] == "turn on the kitchen lights"
    assert body["skill"]["name"] == "lights" and body["intent"]["name"] == "turn_on"
    assert body["slots"] == [
        {
            "slot": "room",
            "value": "kitchen",
            "start": 12,
            "end": 19,
            "confidence": body["slots"][0]["confidence"],
        }
    ]
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
        ({"text": "x" * (MAX_CHARS + 1)}, 413, f"exceed {MAX_CHARS}"),
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


def test_unknown_route_and_method_are_json_errors(client: TestClient) -> None:
    assert client.get("/nope").json()["error"] == "Not Found"
    assert client.get("/parse").status_code == 405
