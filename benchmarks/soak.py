"""Bounded soak of `nlu serve` on loopback: valid traffic with 1 % hostile requests mixed in.

    python benchmarks/soak.py --model runs/demo/int8 --minutes 10 --clients 32
    python benchmarks/soak.py --model runs/demo/int8 --minutes 10 --clients 8 --hostile

With --hostile, a first phase (--baseline-minutes) runs the valid clients alone, then one more
client joins them for --minutes, sending without pause the worst bodies and headers within the
server's limits and beyond them (HOSTILE below: a MiB of empty lists, 60,000 fields, deep
nesting, UTF-16, 16 KiB and 64 MiB of headers, 101 header fields, headers trickled until the
header timeout), each on its own connection. It reports, per hostile kind, the answers, the
largest answer and the slowest one (from the last byte sent to the last byte received), and the
valid clients' p99 with the hostile client over their p99 without it (issue 36: <= 3).

Starts the server as its own process on 127.0.0.1, then runs `--clients` keep-alive clients for
`--minutes`. About 1 in 100 requests is one of the bad inputs found while probing the server
(a lone surrogate, a chunked 2 MiB body, an empty text, a wrong type, a foreign Host header,
malformed JSON, an unknown skill). Every answer is checked: a valid request must get 200 and its
own text back. Reports, per minute, requests, p50 and p99 latency of the valid requests and
answers by status, plus the server's resident memory at the start and the end. Targets (issue
12): 0 valid requests failed, 0 5xx, RSS growth <= 5 %, p99 within 2x from the first to the last
minute. Writes benchmarks/results/soak.json. Sends traffic to 127.0.0.1 only and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
from latency_common import UTTERANCES, percentile

BAD_RATE = 0.01
BAD_KINDS = (
    "surrogate",
    "chunked_2mib",
    "blank",
    "wrong_type",
    "foreign_host",
    "bad_json",
    "skill",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def bad_request(kind: int) -> dict[str, Any]:
    """httpx.request keyword arguments for one of the hostile inputs."""
    json_type = {"content-type": "application/json"}
    if kind == 0:
        return {"content": b'{"text": "bad \\ud800 text"}', "headers": json_type}
    if kind == 1:

        async def chunks() -> Any:  # an async iterator: no Content-Length, chunked
            for _ in range(8):
                yield b"a" * (256 * 1024)

        return {"content": chunks(), "headers": json_type}
    if kind == 2:
        return {"json": {"text": "   "}}
    if kind == 3:
        return {"json": {"texts": "not a list"}}
    if kind == 4:
        return {"json": {"text": "turn on the lights"}, "headers": {"host": "evil.example"}}
    if kind == 5:
        return {"content": b'{"text": ', "headers": json_type}
    return {"json": {"text": "turn on the lights", "skill": "no_such_skill"}}


async def _with_hostile(port: int, opts: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    seconds = opts.minutes * 60
    return tuple(  # type: ignore[return-value]
        await asyncio.gather(soak(port, opts.clients, seconds), hostile_client(port, seconds))
    )


def _p99(minutes: list[dict[str, Any]]) -> float:
    return max(m["p99_ms"] for m in minutes)


async def soak(port: int, clients: int, seconds: float) -> dict[str, Any]:
    started = time.perf_counter()
    latencies: dict[int, list[float]] = defaultdict(list)
    statuses: dict[int, Counter[str]] = defaultdict(Counter)
    valid_failures: list[str] = []
    rng = random.Random(0)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30
    ) as client:

        async def worker(k: int) -> None:
            i = 0
            while (now := time.perf_counter()) - started < seconds:
                minute = int((now - started) // 60)
                i += 1
                if rng.random() < BAD_RATE:
                    kind = rng.randrange(len(BAD_KINDS))
                    try:
                        r = await client.post("/parse", **bad_request(kind))
                        statuses[minute][f"{BAD_KINDS[kind]} {r.status_code}"] += 1
                    except httpx.HTTPError as err:  # the server may close a too-large upload
                        statuses[minute][f"{BAD_KINDS[kind]} {type(err).__name__}"] += 1
                    continue
                text = f"{UTTERANCES[(k + i) % len(UTTERANCES)]} {k}-{i}"
                sent = time.perf_counter()
                try:
                    r = await client.post("/parse", json={"text": text})
                    ok = r.status_code == 200 and r.json()["text"] == text
                    status = str(r.status_code)
                except httpx.HTTPError as err:
                    ok, status = False, type(err).__name__
                latencies[minute].append(1000 * (time.perf_counter() - sent))
                statuses[minute][f"valid {status}"] += 1
                if not ok:
                    valid_failures.append(f"minute {minute}: {status} for {text!r}")

        await asyncio.gather(*(worker(k) for k in range(clients)))
    minutes = []
    for minute in sorted(latencies):
        values = latencies[minute]
        minutes.append(
            {
                "minute": minute + 1,
                "valid_requests": len(values),
                "p50_ms": round(percentile(values, 50), 2),
                "p99_ms": round(percentile(values, 99), 2),
                "answers": dict(statuses[minute]),
            }
        )
    return {"minutes": minutes, "valid_failures": valid_failures}


def _hostile_bodies() -> dict[str, bytes]:
    def post(body: bytes, kind: bytes = b"application/json") -> bytes:
        head = b"POST /parse HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + kind
        return head + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body

    many = b",".join(b'"k%d": 1' % i for i in range(60_000))
    return {
        "1MiB_empty_lists": post(b'{"texts": [' + b",".join([b"[]"] * 340_000) + b"]}"),
        "60k_fields": post(b"{" + many + b', "text": "hi"}'),
        "60k_fields_other_json": post(b"{" + many + b"}", b"application/merge-patch+json"),
        "deep_nesting": post(b"[" * 500_000 + b"]" * 500_000),
        "utf16_body": post('{"text": "turn on the lights"}'.encode("utf-16")),
        "16KiB_headers": b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: "
        + b"a" * 16_000
        + b"\r\n\r\n",
        "64MiB_headers": b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: "
        + b"a" * (64 * 1024 * 1024)
        + b"\r\n\r\n",
        "101_header_fields": b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + b"".join(b"X-%d: 1\r\n" % i for i in range(101))
        + b"\r\n",
    }


async def _answer(reader: asyncio.StreamReader) -> bytes:
    """One HTTP answer: its head, then as many bytes as its Content-Length says (the
    connection may stay open)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
         if line.startswith(b"content-length:")),
        0,
    )  # fmt: skip
    return head + await reader.readexactly(length)


async def _one_hostile(port: int, raw: bytes) -> tuple[str, int, float]:
    """Send `raw` on a new connection; (status, answer bytes, ms from last byte sent)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        with contextlib.suppress(ConnectionError):  # refused and closed before taking it all
            await writer.drain()
        sent = time.perf_counter()
        answer = await asyncio.wait_for(_answer(reader), timeout=30)
        took = 1000 * (time.perf_counter() - sent)
    except (ConnectionError, TimeoutError, asyncio.IncompleteReadError) as err:
        return type(err).__name__, 0, 0.0
    finally:
        writer.close()
    status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "none"
    return status, len(answer), took


async def hostile_client(port: int, seconds: float) -> dict[str, Any]:
    bodies = _hostile_bodies()
    seen: dict[str, Counter[str]] = defaultdict(Counter)
    biggest: dict[str, int] = defaultdict(int)
    slowest: dict[str, float] = defaultdict(float)
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for name, raw in bodies.items():
            status, size, took = await _one_hostile(port, raw)
            seen[name][status] += 1
            biggest[name], slowest[name] = max(biggest[name], size), max(slowest[name], took)
        # Headers trickled: the server must close this one at its header timeout.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHo")
        opened = time.perf_counter()
        answer = await asyncio.wait_for(reader.read(), timeout=60)
        writer.close()
        seen["trickled_headers"][answer.split(b" ", 2)[1].decode() if answer else "closed"] += 1
        slowest["trickled_headers"] = max(
            slowest["trickled_headers"], 1000 * (time.perf_counter() - opened)
        )
    return {
        name: {
            "answers": dict(seen[name]),
            "largest_bytes": biggest[name],
            "slowest_ms": round(slowest[name], 1),
        }
        for name in seen
    }


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args.add_argument("--model", required=True, help="a servable folder (int8 ONNX export)")
    args.add_argument("--minutes", type=float, default=10)
    args.add_argument("--clients", type=int, default=32)
    args.add_argument("--out", default="benchmarks/results/soak.json")
    args.add_argument("--hostile", action="store_true", help="add the hostile client (see above)")
    args.add_argument("--baseline-minutes", type=float, default=3)
    opts = args.parse_args()

    port = free_port()
    cmd = [sys.executable, "-m", "nlu.cli", "serve", opts.model, "--port", str(port)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.time() > deadline:
                raise SystemExit(f"server did not start: {server.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            time.sleep(0.3)
        # Warm up, then take the starting memory.
        for text in UTTERANCES * 5:
            httpx.post(f"http://127.0.0.1:{port}/parse", json={"text": text}, timeout=30)
        rss_start = rss_mb(server.pid)
        hostile: dict[str, Any] = {}
        if opts.hostile:
            alone = asyncio.run(soak(port, opts.clients, opts.baseline_minutes * 60))
            hostile["valid_alone"] = alone["minutes"]
            hostile["rss_mb_before_hostile"] = round(rss_mb(server.pid), 1)
            report, hostile["kinds"] = asyncio.run(_with_hostile(port, opts))
        else:
            report = asyncio.run(soak(port, opts.clients, opts.minutes * 60))
        rss_end = rss_mb(server.pid)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        server.terminate()
        server.wait(timeout=60)
    stderr = server.stderr.read().decode() if server.stderr else ""
    first, last = report["minutes"][0], report["minutes"][-1]
    totals: Counter[str] = Counter()
    for m in report["minutes"]:
        totals.update(m["answers"])
    five_xx = sum(n for k, n in totals.items() if k.split()[-1].startswith("5"))
    bad_accepted = sum(
        n for k, n in totals.items() if not k.startswith("valid") and k.endswith(" 200")
    )
    summary = {
        "model": opts.model,
        "clients": opts.clients,
        "minutes": opts.minutes,
        "answers": dict(totals),
        "valid_failed": len(report["valid_failures"]),
        "server_5xx": five_xx,
        "bad_accepted": bad_accepted,
        "rss_mb_start": round(rss_start, 1),
        "rss_mb_end": round(rss_end, 1),
        "rss_growth_pct": round(100 * (rss_end - rss_start) / rss_start, 2),
        "p99_last_over_first": round(last["p99_ms"] / first["p99_ms"], 2),
        "server_log_lines": len(stderr.splitlines()),
        "batch_size_count": next(
            (line.split()[-1] for line in metrics.splitlines() if "nlu_batch_size_count" in line),
            None,
        ),
        "per_minute": report["minutes"],
        **(
            {
                "hostile": hostile["kinds"],
                "valid_p99_with_over_without_hostile": round(
                    _p99(report["minutes"]) / _p99(hostile["valid_alone"]), 2
                ),
                "valid_alone": hostile["valid_alone"],
                "rss_mb_before_hostile": hostile["rss_mb_before_hostile"],
            }
            if hostile
            else {}
        ),
        "valid_failures_first": report["valid_failures"][:10],
    }
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    for m in report["minutes"]:
        print(
            f"minute {m['minute']:>2}: {m['valid_requests']:>6} valid, p50 {m['p50_ms']:7.2f} ms, "
            f"p99 {m['p99_ms']:7.2f} ms  {m['answers']}"
        )
    keys: tuple[str, ...] = (
        "valid_failed",
        "server_5xx",
        "bad_accepted",
        "rss_mb_start",
        "rss_mb_end",
        "rss_growth_pct",
    )
    if hostile:
        keys = (*keys, "rss_mb_before_hostile", "valid_p99_with_over_without_hostile")
        for name, kind in hostile["kinds"].items():
            print(f"{name:>24}: {kind}")
    print(json.dumps({k: summary[k] for k in (*keys, "p99_last_over_first")}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
