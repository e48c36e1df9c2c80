"""Latency and throughput of the real server on loopback, against the pipelines baseline.

    python benchmarks/serve_latency.py --torch-model runs/demo/model --onnx-model runs/demo/int8

For each server (nlu torch backend, nlu ONNX int8 backend, and `baseline_server.py`: two Hugging
Face pipelines behind FastAPI), started as its own process on 127.0.0.1:
- single-request latency: sequential requests, p50/p95/p99;
- throughput with 1, 8 and 32 concurrent clients for a fixed bounded duration.
All servers run in the same invocation, one after the other, so ratios (ours / baseline) compare
like with like on a shared, noisy machine. The load generator runs on the same 2 cores as the
server, so it is a minimal HTTP/1.1 keep-alive client (stdlib `http.client` for sequential
requests, raw asyncio streams for concurrent ones): a full client library such as httpx spends
about 1 ms per request itself, which would hide the server's own cost. Writes
benchmarks/results/serve_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from latency_common import UTTERANCES, percentile


def start(
    cmd: list[str], port: int, *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    env = {**(env or os.environ), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{cmd} exited: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{cmd} did not become healthy in 120 s")


def sequential(port: int, requests: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Content-Type": "application/json"}
    times = []
    for i in range(requests + 20):
        body = json.dumps({"text": UTTERANCES[i % len(UTTERANCES)]})
        t0 = time.perf_counter()
        conn.request("POST", "/parse", body, headers)
        response = conn.getresponse()
        payload = response.read()
        elapsed = (time.perf_counter() - t0) * 1000
        if response.status != 200:
            raise RuntimeError(f"status {response.status}: {payload[:200]!r}")
        if i >= 20:  # warm-up
            times.append(elapsed)
    conn.close()
    return {
        "p50_ms": round(statistics.median(times), 3),
        "p95_ms": round(percentile(times, 95), 3),
        "p99_ms": round(percentile(times, 99), 3),
        "requests": len(times),
    }


async def _post(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int, body: bytes
) -> tuple[int, bytes]:
    writer.write(
        b"POST /parse HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (port, len(body), body)
    )
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = next(
        int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:")
    )
    return status, await reader.readexactly(length)


async def concurrent(port: int, clients: int, seconds: float) -> dict[str, float]:
    done = 0
    failed = 0
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal done, failed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        while time.perf_counter() < stop:
            text = UTTERANCES[i % len(UTTERANCES)]
            t0 = time.perf_counter()
            status, payload = await _post(reader, writer, port, json.dumps({"text": text}).encode())
            latencies.append((time.perf_counter() - t0) * 1000)
            # Every answer must belong to its own request (the baseline echoes no text).
            if status == 200 and json.loads(payload).get("text", text) == text:
                done += 1
            else:
                failed += 1
            i += clients
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(clients)))
    wall = time.perf_counter() - began
    return {
        "clients": clients,
        "utterances_per_s": round(done / wall, 1),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "ok": done,
        "failed": failed,
    }


def measure(name: str, cmd: list[str], port: int, requests: int, seconds: float) -> dict[str, Any]:
    proc = start(cmd, port)
    try:
        result: dict[str, Any] = {"single": sequential(port, requests)}
        result["concurrent"] = [asyncio.run(concurrent(port, c, seconds)) for c in (1, 8, 32)]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(
        f"{name:24} p50 {result['single']['p50_ms']:.2f} ms  "
        + "  ".join(
            f"{c['clients']} clients: {c['utterances_per_s']:.0f}/s" for c in result["concurrent"]
        )
    )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--torch-model", default="runs/demo/model")
    ap.add_argument("--onnx-model", default="runs/demo/int8")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--only", help="comma-separated server names to run (default: all)")
    ap.add_argument("--out", default="benchmarks/results/serve_latency.json")
    args = ap.parse_args()
    here = Path(__file__).parent

    def nlu(model: str, backend: str, port: int, *extra: str) -> list[str]:
        cmd = [sys.executable, "-m", "nlu.cli", "serve", model, "--backend", backend]
        return [*cmd, "--port", str(port), *extra]

    servers = {
        "nlu torch": nlu(args.torch_model, "torch", 8811),
        "nlu onnx-int8": nlu(args.onnx_model, "onnx", 8812),
        # Two processes with one inference thread each: the event loop, HTTP parsing and
        # decoding are Python and hold the GIL, so one process cannot keep both cores busy.
        "nlu onnx-int8 2 workers": nlu(args.onnx_model, "onnx", 8814, "--workers", "2"),
        "baseline": [sys.executable, str(here / "baseline_server.py"), "--port", "8813"],
    }
    ports = {"nlu torch": 8811, "nlu onnx-int8": 8812, "nlu onnx-int8 2 workers": 8814}
    ports["baseline"] = 8813
    if args.only:
        servers = {k: v for k, v in servers.items() if k in args.only.split(",")}
    results = {
        name: measure(name, cmd, ports[name], args.requests, args.seconds)
        for name, cmd in servers.items()
    }
    if "baseline" not in results:
        return
    base = results["baseline"]
    ratios = {}
    for name in [k for k in results if k != "baseline"]:
        ours = results[name]
        ratios[name] = {
            "p50_latency_ours_over_baseline": round(
                ours["single"]["p50_ms"] / base["single"]["p50_ms"], 3
            ),
            "throughput_32_ours_over_baseline": round(
                ours["concurrent"][2]["utterances_per_s"]
                / max(base["concurrent"][2]["utterances_per_s"], 1e-9),
                2,
            ),
        }
        print(
            f"{name}: p50 latency ratio {ratios[name]['p50_latency_ours_over_baseline']:.3f}, "
            f"32-client throughput ratio {ratios[name]['throughput_32_ours_over_baseline']:.2f}"
        )
    out = {
        "results": results,
        "ratios": ratios,
        "cpu_count": os.cpu_count(),
        "duration_s": args.seconds,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
