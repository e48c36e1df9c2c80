"""The server against the compute floor, all in one run (issue: serving close to the floor).

    python benchmarks/serve_floor.py runs/demo/int8 [--seconds 8] [--rev REV]
        [--variant NAME="SERVE ARGS" ...] [--rounds N]

Before/after in one run: `--rev` serves the code of a git revision beside this checkout,
`--variant` adds servers with other `nlu serve` flags, `--rounds` interleaves them N times
(medians reported).

In the same invocation, on the same utterances:
- floor, in-process: `Parser.parse` of one utterance (p50), a raw ONNX Runtime call on one
  pre-tokenised utterance (p50), and raw ONNX Runtime batches of 8, 16 and 32 (utterances/s);
- the real `nlu serve` process on loopback, driven by `wrk` (one thread, keep-alive, a Lua
  script cycling the utterances) when it is installed (Debian package `wrk`; this script installs
  nothing), else by the minimal asyncio client of serve_latency.py: 1, 8 and 32 connections,
  p50/p99 and utterances/s, and the server's own micro-batch sizes (`nlu_batch_size` from
  /metrics) under each load.
Every serving figure is printed as a ratio to the floor measured here. Writes
benchmarks/results/serve_floor.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from latency_common import UTTERANCES
from serve_latency import concurrent, start

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LUA = """
local bodies = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", "/parse", {["Content-Type"] = "application/json"},
                    bodies[(i %% #bodies) + 1])
end
"""


def floor(model: str, calls: int) -> dict[str, float]:
    import numpy as np
    import onnxruntime as ort

    from nlu.inference.parser import Parser

    parser = Parser.from_pretrained(model, backend="onnx")
    session = ort.InferenceSession(
        str(Path(model) / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    tokenizer = parser.tokenizer

    def feed(texts: list[str]) -> dict[str, Any]:
        batch = tokenizer(texts, return_tensors="np", padding=True)
        return {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask")}

    singles = [feed([t]) for t in UTTERANCES]
    for i in range(20):
        parser.parse(UTTERANCES[i % len(UTTERANCES)])
        session.run(None, singles[i % len(singles)])
    parse_ms, raw_ms = [], []
    for i in range(calls):
        t0 = time.perf_counter()
        parser.parse(UTTERANCES[i % len(UTTERANCES)])
        parse_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        session.run(None, singles[i % len(singles)])
        raw_ms.append((time.perf_counter() - t0) * 1000)
    rates = {}
    # Smaller batches too: how much a fuller micro-batch could gain at all.
    for size, seconds in ((8, 2.0), (16, 2.0), (32, 3.0)):
        batch = feed([UTTERANCES[i % len(UTTERANCES)] for i in range(size)])
        session.run(None, batch)
        rounds, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            session.run(None, batch)
            rounds += 1
        rates[size] = round(size * rounds / (time.perf_counter() - t0), 1)
    # The same 32 utterances in the passes the server's length groups make (fewer padded
    # tokens, more passes: what PASS_COST_TOKENS weighs).
    from nlu.inference.parser import length_groups

    texts = [UTTERANCES[i % len(UTTERANCES)] for i in range(32)]
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    groups = [feed([texts[i] for i in rows]) for rows in length_groups(lengths)]
    rounds, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 3.0:
        for batch in groups:
            session.run(None, batch)
        rounds += 1
    grouped = round(32 * rounds / (time.perf_counter() - t0), 1)
    return {
        "parse_p50_ms": round(statistics.median(parse_ms), 3),
        "raw_ort_single_p50_ms": round(statistics.median(raw_ms), 3),
        "raw_ort_batch8_utt_per_s": rates[8],
        "raw_ort_batch16_utt_per_s": rates[16],
        "raw_ort_batch32_utt_per_s": rates[32],
        "raw_ort_batch32_length_groups_utt_per_s": grouped,
        "length_groups_of_32": len(groups),
    }


def batch_histogram(port: int) -> dict[str, Any]:
    """Cumulative sum, count and per-bucket counts (texts per pass <= le) of the server's
    nlu_batch_size histogram."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: dict[str, Any] = {}
    for name in ("sum", "count"):
        m = re.search(rf"^nlu_batch_size_{name} (\S+)$", text, re.M)
        out[name] = float(m.group(1)) if m else 0.0
    bucket = r'^nlu_batch_size_bucket\{le="([^"]+)"\} (\S+)$'
    out["buckets"] = {le: float(n) for le, n in re.findall(bucket, text, re.M)}
    return out


def wrk(port: int, clients: int, seconds: float, script: Path) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{clients}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/parse",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            raise RuntimeError(f"wrk printed no {label} latency:\n{out}")
        scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
        return round(float(m.group(1)) * scale, 3)

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "clients": clients,
        "utterances_per_s": round(rps, 1),
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def server_code(rev: str, into: Path) -> Path:
    """The repository at git revision `rev`, unpacked into `into` (its nlu/serve link included),
    so a server from before a change runs beside the current one in the same run."""
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", rev], capture_output=True, check=True
    ).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def measure(
    name: str, cmd: list[str], port: int, seconds: float, script: Path, cwd: Path | None
) -> list[dict[str, Any]]:
    """One server start, then 1, 8 and 32 clients, with its micro-batch sizes under each."""
    env = {**os.environ, "PYTHONPATH": str(cwd)} if cwd else None
    proc = start(cmd, port, cwd=cwd, env=env)
    loads = []
    try:
        for clients in (1, 8, 32):
            before = batch_histogram(port)
            if shutil.which("wrk"):
                row: dict[str, Any] = wrk(port, clients, seconds, script)
            else:
                row = asyncio.run(concurrent(port, clients, seconds))
            after = batch_histogram(port)
            batches = after["count"] - before["count"]
            row["mean_batch_size"] = round((after["sum"] - before["sum"]) / max(batches, 1), 2)
            row["batch_sizes"] = {
                k: round(after["buckets"].get(k, 0) - before["buckets"].get(k, 0))
                for k in after["buckets"]
            }
            loads.append(row)
            print(
                f"{name}: {clients:2d} clients: {row['utterances_per_s']:.0f} utt/s, "
                f"p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, "
                f"mean batch {row['mean_batch_size']}",
                flush=True,
            )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return loads


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("model", nargs="?", default="runs/demo/int8")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--port", type=int, default=8821)
    ap.add_argument(
        "--server-args", default="", help="extra `nlu serve` arguments, e.g. '--threads 1'"
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=ARGS",
        help="another server in the same run with these extra `nlu serve` arguments "
        "(repeatable), e.g. --variant spin='--spin'",
    )
    ap.add_argument(
        "--rev",
        help="also serve with the code of this git revision (e.g. HEAD before a change): "
        "before/after in one run",
    )
    ap.add_argument(
        "--rounds", type=int, default=1, help="interleaved rounds over the servers (medians)"
    )
    ap.add_argument("--out", default="benchmarks/results/serve_floor.json")
    args = ap.parse_args()

    base = floor(args.model, args.calls)
    print(
        f"floor: parse p50 {base['parse_p50_ms']:.2f} ms, raw ORT single p50 "
        f"{base['raw_ort_single_p50_ms']:.2f} ms, raw ORT batch-8/16/32 "
        f"{base['raw_ort_batch8_utt_per_s']:.0f}/{base['raw_ort_batch16_utt_per_s']:.0f}/"
        f"{base['raw_ort_batch32_utt_per_s']:.0f} utt/s; batch-32 in its "
        f"{base['length_groups_of_32']} length groups "
        f"{base['raw_ort_batch32_length_groups_utt_per_s']:.0f} utt/s",
        flush=True,
    )
    model = str(Path(args.model).resolve())
    serve = [sys.executable, "-m", "nlu.cli", "serve", model, "--port", str(args.port)]
    servers: list[tuple[str, list[str], Path | None]] = [
        ("server", serve + args.server_args.split(), None)
    ]
    for variant in args.variant:
        name, _, extra = variant.partition("=")
        servers.append((name, serve + args.server_args.split() + extra.split(), None))
    tool = "wrk" if shutil.which("wrk") else "asyncio client (wrk not installed)"
    results: dict[str, list[list[dict[str, Any]]]] = {name: [] for name, _, _ in servers}
    with tempfile.TemporaryDirectory() as tmp:
        if args.rev:
            code = server_code(args.rev, Path(tmp) / "rev")
            # Options the old code may not know are left out: same model, same port.
            servers.insert(0, (args.rev, serve, code))
            results = {args.rev: [], **results}
        script = Path(tmp) / "post.lua"
        bodies = ", ".join(json.dumps(json.dumps({"text": t})) for t in UTTERANCES)
        script.write_text(LUA % bodies)
        for _ in range(args.rounds):
            for name, cmd, cwd in servers:
                results[name].append(measure(name, cmd, args.port, args.seconds, script, cwd))

    summary = {}
    for name, runs in results.items():
        loads = [
            {
                key: statistics.median(run[i][key] for run in runs)
                for key in ("clients", "utterances_per_s", "p50_ms", "p99_ms", "mean_batch_size")
            }
            for i in range(len(runs[0]))
        ]
        single, busy = loads[0], loads[-1]
        ratios = {
            "http_p50_minus_parse_p50_ms": round(single["p50_ms"] - base["parse_p50_ms"], 3),
            "throughput_32_over_raw_batch32": round(
                busy["utterances_per_s"] / base["raw_ort_batch32_utt_per_s"], 3
            ),
            "p99_over_p50_at_32": round(busy["p99_ms"] / busy["p50_ms"], 2),
            # The same floor with the padding the server's length groups save: what is left is
            # the server's own overhead.
            "throughput_32_over_raw_length_groups": round(
                busy["utterances_per_s"] / base["raw_ort_batch32_length_groups_utt_per_s"], 3
            ),
        }
        summary[name] = {"median_loads": loads, "ratios": ratios, "runs": runs}
        print(
            f"{name} (median of {len(runs)}): HTTP p50 - parse p50 "
            f"{ratios['http_p50_minus_parse_p50_ms']:+.2f} ms (target <= 1.0); 32 clients / "
            f"raw batch-32 {ratios['throughput_32_over_raw_batch32']:.2f} (target >= 0.9); "
            f"p99/p50 at 32 {ratios['p99_over_p50_at_32']:.1f} (target <= 3); 32 clients / raw "
            f"length groups {ratios['throughput_32_over_raw_length_groups']:.2f}"
        )
    result = {
        "model": args.model,
        "tool": tool,
        "server_args": args.server_args,
        "floor": base,
        "servers": summary,
        "cpu_count": os.cpu_count(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
