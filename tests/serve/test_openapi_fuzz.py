"""Schema-driven fuzzing: schemathesis generates requests for every route from the server's own
OpenAPI document, both valid ones and ones that break the schema, and checks every answer
against that document (no 5xx, documented status codes, content types and response bodies)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation import GenerationMode

from nlu.inference.parser import Parser
from nlu.serve.app import create_app
from nlu.training.engine import TrainResult


@pytest.fixture(scope="module")
def api_schema(trained: TrainResult) -> Any:
    app = create_app(Parser.from_pretrained(Path(trained.model_dir)))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def test_schema_covers_every_route(api_schema: Any) -> None:
    routes = {(op.method.upper(), op.path) for op in _operations(api_schema)}
    assert {("POST", "/parse"), ("GET", "/skills"), ("GET", "/health")} <= routes


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_route_answers_as_its_schema_says(api_schema: Any, mode: GenerationMode) -> None:
    checked = 0
    for operation in _operations(api_schema):
        if mode is GenerationMode.NEGATIVE and not operation.body:
            continue  # a route without a body or parameters has no invalid request to make

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            case.call_and_validate()

        check()
        checked += 1
    assert checked >= (1 if mode is GenerationMode.NEGATIVE else 4)
