"""The micro-batcher's failure path, and `nlu serve --workers 2` as a real process."""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Histogram

from nlu.result import ParseOptions
from nlu.serve.batching import InferenceFailed, MicroBatcher
from nlu.serve.settings import ServeSettings
from nlu.training.engine import TrainResult
from tests.helpers import start_server


class FlakyParser:
    """Answers each text with itself, but fails any batch that holds "boom"."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def parse_checked(
        self, texts: Sequence[str], options: Sequence[Any], *, batch_size: int
    ) -> list[str]:
        self.batches.append(list(texts))
        if "boom" in texts:
            raise RuntimeError("tokenizer exploded")
        return [t.upper() for t in texts]


def test_only_the_request_that_breaks_a_batch_gets_an_error() -> None:
    parser = FlakyParser()
    sizes = Histogram("sizes", "", registry=CollectorRegistry())
    batcher = MicroBatcher(parser, ServeSettings(max_wait_ms=50), batch_sizes=sizes)  # type: ignore[arg-type]

    async def run() -> tuple[Any, Any]:
        batcher.start()
        try:
            together = await asyncio.gather(
                batcher.submit(["boom"], ParseOptions()),
                batcher.submit(["fine"], ParseOptions()),
                return_exceptions=True,
            )
            after = await batcher.submit(["later", "too"], ParseOptions())
        finally:
            await batcher.stop()
        return together, after

    together, after = asyncio.run(run())
    assert parser.batches[0] == ["boom", "fine"]  # one forward pass for both requests...
    assert parser.batches[1:3] == [["boom"], ["fine"]]  # ...which failed: then one by one
    failed, answered = together
    assert isinstance(failed, InferenceFailed) and "tokenizer exploded" in str(failed)
    assert answered == ["FINE"]  # the request beside the bad one is answered
    assert after == ["LATER", "TOO"]  # and serving goes on


def test_batches_wait_to_fill_only_under_heavy_load() -> None:
    """After a pass at least half of max_batch, the next waits (up to fill_wait_ms) for more
    requests; after a smaller one, or at the start, a lone request runs at once."""
    parser = FlakyParser()
    sizes = Histogram("sizes", "", registry=CollectorRegistry())
    settings = ServeSettings(max_batch=8, fill_wait_ms=2000)
    batcher = MicroBatcher(parser, settings, batch_sizes=sizes)  # type: ignore[arg-type]

    async def run() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        batcher.start()
        try:
            started = loop.time()
            await batcher.submit(["lone"], ParseOptions())  # idle server: no wait
            lone = loop.time() - started
            await asyncio.gather(*(batcher.submit([f"busy {i}"], ParseOptions()) for i in range(8)))
            # A full pass just ran: the next request waits for company, which arrives.
            started = loop.time()

            async def later() -> Any:
                await asyncio.sleep(0.3)
                return await batcher.submit(["second"], ParseOptions())

            await asyncio.gather(batcher.submit(["first"], ParseOptions()), later())
            waited = loop.time() - started
            # That pass carried two of eight: the next lone request runs at once again.
            started = loop.time()
            await batcher.submit(["alone again"], ParseOptions())
            return lone, loop.time() - started if waited >= 0.3 else -1.0
        finally:
            await batcher.stop()

    lone, alone_again = asyncio.run(run())
    assert ["first", "second"] in parser.batches  # one pass: the first waited for the second
    assert parser.batches[-1] == ["alone again"]
    assert lone < 1.0 and 0 <= alone_again < 1.0  # neither waited out the 2 s fill wait


@pytest.mark.slow
def test_two_worker_processes_serve_the_same_answers(trained: TrainResult) -> None:
    from nlu.inference.parser import Parser

    run_folder = trained.model_dir.parent  # serves its model/, as the README says
    proc, port = start_server(run_folder, "--workers", "2", "--threads", "1", timeout=90)
    try:
        texts = [f"turn on the {room} lights" for room in ("kitchen", "hall", "bedroom")] * 4
        expected = [r.to_dict() for r in Parser.from_pretrained(trained.model_dir).parse(texts)]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            answers = [client.post("/parse", json={"text": t}).json() for t in texts]
            health = client.get("/health").json()
            rebound = client.get("/health", headers={"host": "evil.example"})

        async def burst() -> list[Any]:
            # Concurrent requests, micro-batched in both workers.
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
                replies = await asyncio.gather(*(c.post("/parse", json={"text": t}) for t in texts))
            return [r.json() for r in replies]

        concurrent = asyncio.run(burst())
        # Each on a new connection, so that both workers answer some.
        expositions = [
            httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text for _ in range(8)
        ]
        # A local bind answers only requests addressed to a loopback name (DNS rebinding).
        assert rebound.status_code == 400
        assert answers == expected

        def meaning(row: dict[str, Any]) -> Any:
            return row["intent"]["name"], [(s["slot"], s["start"], s["end"]) for s in row["slots"]]

        assert [meaning(r) for r in concurrent] == [meaning(r) for r in expected]
        # /metrics counts every worker's requests, whichever worker answers it.
        for exposition in expositions:
            parsed = re.search(
                r'^nlu_requests_total\{route="/parse",status="200"\} (\S+)$', exposition, re.M
            )
            assert parsed is not None and float(parsed.group(1)) == 2 * len(texts), exposition
            texts_seen = re.search(r"^nlu_batch_size_sum (\S+)$", exposition, re.M)
            assert texts_seen is not None and float(texts_seen.group(1)) == 2 * len(texts)
        assert health["model"] == trained.model_dir.name  # no absolute path without a key
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
