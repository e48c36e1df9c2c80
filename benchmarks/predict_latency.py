"""Single-utterance latency of `Parser.parse` in-process, against the bare encoder forward.

    python benchmarks/predict_latency.py runs/demo/model [--calls 200]
    python benchmarks/predict_latency.py runs/demo/int8 --backend onnx   # the int8 export

When the model has an out-of-scope detector, the same run also times the same parser with the
detector switched off: the ratio is what rejection adds to a parse. It also times the parser
without slot value resolution, and with resolution's cache emptied before every call.

The baseline, measured in the same run on the same utterances, is one eager forward pass of the
encoder alone (tokenizer + AutoModel, no heads, no decoding): the ratio shows what routing,
heads, constrained decoding and result building cost on top of the transformer itself.
Prints a table and writes benchmarks/results/predict_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from latency_common import UTTERANCES, percentile


def time_calls(fn, calls: int) -> list[float]:  # type: ignore[no-untyped-def]
    for i in range(10):  # warm-up
        fn(UTTERANCES[i % len(UTTERANCES)])
    out = []
    for i in range(calls):
        text = UTTERANCES[i % len(UTTERANCES)]
        start = time.perf_counter()
        fn(text)
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("model", nargs="?", default="runs/demo/model")
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    ap.add_argument("--out", default="benchmarks/results/predict_latency.json")
    ap.add_argument(
        "--resolver-rev",
        help="also time the parser with the slot resolver of this commit (before nlu/resolve/)",
    )
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from nlu.inference.parser import Parser
    from nlu.model.joint import JointModel

    parser = Parser.from_pretrained(args.model, backend=args.backend)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if args.backend == "torch":
        encoder = JointModel.load(args.model)[0].encoder
    else:
        import onnxruntime as ort

        session = ort.InferenceSession(
            str(Path(args.model) / "model.onnx"), providers=["CPUExecutionProvider"]
        )

    @torch.inference_mode()
    def bare(text: str) -> None:
        if args.backend == "torch":
            batch = tokenizer([text], return_tensors="pt")
            encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        else:  # the whole graph: ONNX Runtime has no encoder-only session
            batch = tokenizer([text], return_tensors="np")
            session.run(
                None, {k: batch[k].astype("int64") for k in ("input_ids", "attention_mask")}
            )

    def ours(text: str) -> None:
        parser.parse([text])

    import dataclasses

    from nlu.resolve.kinds import _interpret

    def variant(**changes: Any) -> Parser:
        """The same loaded parser with some of its parts changed."""
        parts = {
            "forward": parser.forward,
            "skills": parser.skills,
            "tokenizer": parser.tokenizer,
            "max_length": parser.max_length,
            "backend": parser.backend,
            "adapters": parser.adapters,
            "ood": parser.ood,
        }
        return Parser(**{**parts, **changes})

    detector = parser.ood
    plain = variant(ood=None)

    def without_rejection(text: str) -> None:
        plain.parse([text])

    # Slot value resolution (nlu/resolve/): the same parser with no value lists or kinds, and
    # with the built-in-kind cache emptied before every call (every value new to the process).
    unresolved = variant(
        skills=[dataclasses.replace(s, slot_values={}, slot_kinds={}) for s in parser.skills]
    )

    def without_resolution(text: str) -> None:
        unresolved.parse([text])

    def cold_resolution(text: str) -> None:
        _interpret.cache_clear()
        parser.parse([text])

    if args.resolver_rev:
        from slot_values import old_module

        from nlu.inference import decode
        from nlu.resolve import Resolution

        old = old_module(args.resolver_rev)
        ours_resolve = decode.resolve

    def old_resolve(value: str, catalog: Any, *, reference: Any = None) -> Any:
        # Called as it was (a datetime); its result in today's shape (no grain, candidates).
        got = old.resolve(value, catalog, reference=reference.moment if reference else None)
        return Resolution(got.value, got.status)

    def old_resolution(text: str) -> None:
        decode.resolve = old_resolve  # type: ignore[assignment]  # --resolver-rev in place of ours
        try:
            parser.parse([text])
        finally:
            decode.resolve = ours_resolve

    # Interleave them so machine noise hits all alike.
    ours_ms: list[float] = []
    bare_ms: list[float] = []
    plain_ms: list[float] = []
    unresolved_ms: list[float] = []
    cold_ms: list[float] = []
    old_ms: list[float] = []
    for _ in range(4):
        ours_ms += time_calls(ours, args.calls // 4)
        bare_ms += time_calls(bare, args.calls // 4)
        unresolved_ms += time_calls(without_resolution, args.calls // 4)
        cold_ms += time_calls(cold_resolution, args.calls // 4)
        if args.resolver_rev:
            old_ms += time_calls(old_resolution, args.calls // 4)
        if detector is not None:
            plain_ms += time_calls(without_rejection, args.calls // 4)
    rows = {}
    named = [("nlu parse (in-process)", ours_ms), ("baseline: bare forward", bare_ms)]
    named.append(("nlu parse without slot resolution", unresolved_ms))
    named.append(("nlu parse, resolution cache cold", cold_ms))
    if detector is not None:
        named.append((f"nlu parse without {detector.method} rejection", plain_ms))
    if args.resolver_rev:
        named.append((f"nlu parse, resolver of {args.resolver_rev}", old_ms))
    for name, values in named:
        rows[name] = {
            "p50_ms": round(statistics.median(values), 3),
            "p95_ms": round(percentile(values, 95), 3),
            "mean_ms": round(statistics.fmean(values), 3),
            "calls": len(values),
        }
    ratio = rows[named[0][0]]["p50_ms"] / rows[named[1][0]]["p50_ms"]
    result = {
        "model": args.model,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "latency": rows,
        "p50_ratio_ours_over_baseline": round(ratio, 3),
    }
    resolution = rows[named[0][0]]["p50_ms"] / rows[named[2][0]]["p50_ms"]
    cold = rows[named[3][0]]["p50_ms"] / rows[named[2][0]]["p50_ms"]
    result["p50_ratio_with_over_without_resolution"] = round(resolution, 3)
    result["p50_ratio_cold_resolution_over_without"] = round(cold, 3)
    if detector is not None:
        added = rows[named[0][0]]["p50_ms"] / rows[named[4][0]]["p50_ms"]
        result["p50_ratio_with_over_without_rejection"] = round(added, 3)
    if args.resolver_rev:
        before = rows[named[0][0]]["p50_ms"] / rows[named[-1][0]]["p50_ms"]
        result["p50_ratio_ours_over_old_resolver"] = round(before, 3)
        print(f"p50 ratio (ours / resolver of {args.resolver_rev}): {before:.3f}")
    print(f"{'':32} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8}")
    for name, r in rows.items():
        print(f"{name:32} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f} {r['mean_ms']:8.2f}")
    print(f"p50 ratio (ours / bare forward): {ratio:.2f}")
    print(f"p50 ratio (with / without slot resolution): {resolution:.3f} (cold cache {cold:.3f})")
    if detector is not None:
        print(f"p50 ratio (with / without out-of-scope rejection): {added:.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
