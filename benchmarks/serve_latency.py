"""Latency and throughput of the real server on loopback, against the pipelines baseline.

    python benchmarks/serve_latency.py --torch-model runs/demo/model --onnx-model runs/demo/int8

For each server (nlu torch backend, nlu ONNX int8 backend, and `baseline_server.py`: two Hugging
Face pipelines behind FastAPI), started as its own process on 127.0.0.1:
- single-request latency: sequential requests, p50/p95/p99;
- throughput with 1, 8 and 32 concurrent clients for a fixed bounded duration.
All servers run in the same invocation, one after the other, so ratios (ours / baseline) compare
like with like on a shared, noisy machine. The load generator (httpx, asyncio) runs on the same
2 cores as the server, which caps the throughput it can show. Writes
benchmarks/results/serve_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

TEXTS = [
    "wake me up at 6:30 am tomorrow for the gym",
    "set a pasta timer for 12 minutes",
    "will it rain in paris this weekend",
    "play bohemian rhapsody by queen",
    "dim the living room lights to 20 percent",
    "how much time is left on the eggs",
    "turn off the porch light",
    "what's the temperature in tokyo",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def start(cmd: list[str], port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
    url = f"http://127.0.0.1:{port}/parse"
    times = []
    with httpx.Client() as client:
        for i in range(requests + 20):
            t0 = time.perf_counter()
            r = client.post(url, json={"text": TEXTS[i % len(TEXTS)]})
            elapsed = (time.perf_counter() - t0) * 1000
            r.raise_for_status()
            if i >= 20:  # warm-up
                times.append(elapsed)
    return {
        "p50_ms": round(statistics.median(times), 3),
        "p95_ms": round(percentile(times, 95), 3),
        "p99_ms": round(percentile(times, 99), 3),
        "requests": len(times),
    }


async def concurrent(port: int, clients: int, seconds: float) -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/parse"
    done = 0
    failed = 0
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker(k: int) -> None:
            nonlocal done, failed
            i = k
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                r = await client.post(url, json={"text": TEXTS[i % len(TEXTS)]})
                latencies.append((time.perf_counter() - t0) * 1000)
                if (
                    r.status_code == 200
                    and r.json().get("text", TEXTS[i % len(TEXTS)]) == TEXTS[i % len(TEXTS)]
                ):
                    done += 1
                else:
                    failed += 1
                i += clients

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
        f"{name:14} p50 {result['single']['p50_ms']:.2f} ms  "
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
    ap.add_argument("--out", default="benchmarks/results/serve_latency.json")
    args = ap.parse_args()
    here = Path(__file__).parent
    servers = {
        "nlu torch": [
            sys.executable,
            "-m",
            "nlu.cli",
            "serve",
            args.torch_model,
            "--backend",
            "torch",
            "--port",
            "8811",
        ],
        "nlu onnx-int8": [
            sys.executable,
            "-m",
            "nlu.cli",
            "serve",
            args.onnx_model,
            "--backend",
            "onnx",
            "--port",
            "8812",
        ],
        "baseline": [sys.executable, str(here / "baseline_server.py"), "--port", "8813"],
    }
    ports = {"nlu torch": 8811, "nlu onnx-int8": 8812, "baseline": 8813}
    results = {
        name: measure(name, cmd, ports[name], args.requests, args.seconds)
        for name, cmd in servers.items()
    }
    base = results["baseline"]
    ratios = {}
    for name in ("nlu torch", "nlu onnx-int8"):
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
