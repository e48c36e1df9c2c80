"""Where a served request's CPU time goes (issue: serving close to the floor).

    python benchmarks/serve_profile.py runs/demo/int8 [--rev REV] [--clients 1] [--seconds 15]

Starts `nlu serve` on loopback (this checkout, and with `--rev` also the code of that git
revision, one after the other), drives it with `wrk` (required here), and samples it with
py-spy (`pip install py-spy`; neither is a dependency of the project), then sorts every
sample by the innermost frame it recognises: ONNX Runtime, tokenisation, decoding (ours), the
server's own code (guard, route, batcher), request validation (pydantic), FastAPI/Starlette,
uvicorn's HTTP protocol, JSON, metrics, and the event loop itself. Only busy samples count
(py-spy leaves idle threads out). Prints shares of all samples and per request (samples ÷
requests, at py-spy's rate), and writes benchmarks/results/serve_profile.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from latency_common import UTTERANCES
from serve_floor import LUA, server_code, wrk
from serve_latency import start

# (category, substrings of a frame); the first category matched from the innermost frame out.
CATEGORIES = [
    ("onnxruntime", ("onnxruntime",)),
    ("tokenisation", ("tokenizers", "transformers/tokenization", "nlu/alignment.py")),
    ("decode (ours)", ("nlu/decode.py", "nlu/resolve.py", "nlu/ood.py", "nlu/predict.py")),
    ("metrics", ("prometheus_client",)),
    ("validation (pydantic)", ("pydantic", "nlu/serve/schemas.py", "nlu/text.py")),
    ("json", ("orjson", "json/")),
    ("server code (ours)", ("nlu/serve/",)),
    ("fastapi/starlette", ("fastapi/", "starlette/")),
    ("uvicorn http", ("uvicorn/protocols", "httptools")),
    # The inference thread handing its result back to the event loop (this includes waiting for
    # the GIL, which py-spy counts as busy).
    ("thread hand-off", ("concurrent/futures/_base.py", "asyncio/futures.py")),
    # uvloop's loop runs in C (socket reads and writes, HTTP parsing callbacks): Python sees one
    # frame for all of it.
    ("event loop (C)", ("asyncio/", "uvloop", "uvicorn/server.py", "uvicorn/_compat.py")),
]
IDLE = "concurrent/futures/thread.py"  # the inference thread's worker waiting for work


def categorise(stack: str) -> str:
    frames = stack.split(";")
    if IDLE in frames[-1]:
        return "idle (worker waiting)"
    for frame in reversed(frames):
        for name, needles in CATEGORIES:
            if any(n in frame for n in needles):
                return name
    return "other"


def profile(
    name: str, cmd: list[str], port: int, args: argparse.Namespace, cwd: Path | None
) -> dict[str, Any]:
    import os

    env = {**os.environ, "PYTHONPATH": str(cwd)} if cwd else None
    proc = start(cmd, port, cwd=cwd, env=env)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "post.lua"
            bodies = ", ".join(json.dumps(json.dumps({"text": t})) for t in UTTERANCES)
            script.write_text(LUA % bodies)
            wrk(port, args.clients, 2, script)  # warm up
            raw = Path(tmp) / "samples.txt"
            spy = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(proc.pid),
                    "--format",
                    "raw",
                    "--rate",
                    str(args.rate),
                    "--duration",
                    str(round(args.seconds) + 2),
                    "--output",
                    str(raw),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1)
            load = wrk(port, args.clients, args.seconds, script)
            spy.wait(timeout=args.seconds + 60)
            counts: Counter[str] = Counter()
            for line in raw.read_text().splitlines():
                stack, _, n = line.rpartition(" ")
                if n.isdigit():
                    counts[categorise(stack)] += int(n)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    counts.pop("idle (worker waiting)", None)
    total = sum(counts.values())
    requests = load["utterances_per_s"] * (args.seconds + 2)  # py-spy ran ~2 s longer
    per_request_ms = {k: round(v / args.rate / requests * 1000, 3) for k, v in counts.items()}
    print(f"{name}: {load['utterances_per_s']:.0f} utt/s, p50 {load['p50_ms']:.2f} ms")
    for key, samples in counts.most_common():
        print(f"  {key:24s} {100 * samples / total:5.1f} %  {per_request_ms[key]:.3f} ms/request")
    return {
        "load": load,
        "samples": dict(counts),
        "share_percent": {k: round(100 * v / total, 1) for k, v in counts.items()},
        "busy_ms_per_request": per_request_ms,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("model", nargs="?", default="runs/demo/int8")
    ap.add_argument("--rev", help="also profile the server code of this git revision")
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--port", type=int, default=8822)
    ap.add_argument("--out", default="benchmarks/results/serve_profile.json")
    args = ap.parse_args()
    for tool in ("wrk", "py-spy"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed: this script needs it (see the docstring)")
    model = str(Path(args.model).resolve())
    cmd = [sys.executable, "-m", "nlu.cli", "serve", model, "--port", str(args.port)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.rev:
            code = server_code(args.rev, Path(tmp) / "rev")
            results[args.rev] = profile(args.rev, cmd, args.port, args, code)
        results["this checkout"] = profile("this checkout", cmd, args.port, args, None)
    out = {"model": args.model, "clients": args.clients, "rate": args.rate, "servers": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
