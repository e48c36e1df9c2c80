"""Reliability: fuzzed bodies never cause a 5xx; a real server on loopback under 32 concurrent
clients loses nothing and answers every request with its own result; SIGTERM is graceful."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nlu.inference.parser import Parser
from nlu.serve.app import create_app
from nlu.training.engine import TrainResult
from tests.helpers import start_server


@pytest.fixture(scope="module")
def model_dir(trained: TrainResult) -> Path:
    return trained.model_dir


@pytest.fixture(scope="module")
def client(model_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Parser.from_pretrained(model_dir))) as c:
        yield c


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "text": json_values | st.text(max_size=60),
            "texts": json_values | st.lists(st.text(max_size=30), max_size=70),
            "skill": json_values | st.sampled_from(["lights", "weather", ""]),
            "top_k": json_values | st.integers(-5, 60),
        },
    ),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies)
def test_fuzzed_json_never_causes_a_server_error(client: TestClient, body: object) -> None:
    r = client.post(
        "/parse", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert r.status_code < 500, (body, r.text)
    payload = r.json()
    if r.status_code == 200:
        assert "results" in payload or "intent" in payload
    else:
        assert isinstance(payload["error"], str) and payload["error"]


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=80))
def test_fuzzed_bytes_never_cause_a_server_error(client: TestClient, raw: bytes) -> None:
    r = client.post("/parse", content=raw, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500 or r.status_code == 200, r.text


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    proc, port = start_server(model_dir, "--max-wait-ms", "5")
    yield proc, port
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize(
    "per_client", [pytest.param(20, id="640-requests"), pytest.param(200, id="6400-requests")]
)
def test_32_concurrent_clients_nothing_lost_or_mixed_up(
    server: tuple[subprocess.Popen[bytes], int], per_client: int
) -> None:
    _, port = server
    rooms = ["kitchen", "hall", "bedroom", "living room"]
    clients = 32

    async def run() -> tuple[int, list[str]]:
        ok, problems = 0, []
        limits = httpx.Limits(max_connections=clients)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60
        ) as c:

            async def worker(k: int) -> None:
                nonlocal ok
                for i in range(per_client):
                    text = f"turn on the {rooms[(k + i) % 4]} lights {k}-{i}"
                    r = await c.post("/parse", json={"text": text})
                    body = r.json()
                    if r.status_code == 200 and body["text"] == text:
                        ok += 1
                    else:
                        problems.append(f"{r.status_code} {text!r} -> {str(body)[:80]}")

            await asyncio.gather(*(worker(k) for k in range(clients)))
        return ok, problems

    ok, problems = asyncio.run(run())
    assert problems == []
    assert ok == clients * per_client
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    count = next(line for line in metrics.splitlines() if line.startswith("nlu_batch_size_count"))
    assert float(count.split()[-1]) < clients * per_client  # requests were micro-batched


@pytest.mark.slow
def test_sigterm_finishes_in_flight_requests(server: tuple[subprocess.Popen[bytes], int]) -> None:
    proc, port = server

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            texts = ["turn on the kitchen lights"] * 64
            pending = [
                asyncio.create_task(c.post("/parse", json={"texts": texts})) for _ in range(8)
            ]
            await asyncio.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            return await asyncio.gather(*pending)

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 8
    assert all(len(r.json()["results"]) == 64 for r in responses)
    # Uvicorn shuts down gracefully, then re-raises the captured signal as its exit status.
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert "Traceback" not in stderr, stderr
