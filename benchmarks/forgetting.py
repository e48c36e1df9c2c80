"""Forgetting: fine-tune a trained model on one skill, per mode, and score every skill.

    python benchmarks/forgetting.py [--skill music] [--base runs/demo/model]

The base is the five-skill demo model (trained with configs/demo.yaml if --base is missing).
Each mode continues training it on new data for one skill only (that skill's templates
expanded with another seed: fillings the base never saw), for the same epochs, then every skill
is scored on its hand-written test file. Reports, per mode, the change against the base for the
fine-tuned skill and for each other skill (exact match; router, intent, slot F1 averaged over
the other skills). `lora` is the per-skill adapter (applied to that skill only at parse time),
`lora_merged` the same adapter merged into the shared encoder. Writes
benchmarks/results/forgetting.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

MODES = ["full", "top_layers", "heads", "lora_merged", "lora"]
SKILLS = ["alarm", "music", "smart_home", "timer", "weather"]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--skill", default="music", choices=SKILLS)
    ap.add_argument("--base", default="runs/demo/model")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", default="runs/forgetting")
    ap.add_argument("--results", default="benchmarks/results/forgetting")
    args = ap.parse_args()

    from nlu.config import load_config
    from nlu.evaluation.evaluate import evaluate
    from nlu.training.train import train

    out = Path(args.out)
    base = Path(args.base)
    if not (base / "model.safetensors").is_file():
        cfg = load_config("configs/demo.yaml", [f"output_dir={out / 'base'}"])
        base = train(cfg).model_dir

    def scores(model: Path) -> dict[str, Any]:
        metrics = evaluate(model_dir=model, data=["skills"], split="test")
        return dict(metrics["per_skill"])

    from nlu.data.loaders import load_split
    from nlu.inference.parser import Parser

    tuned_texts = [e.text for e in load_split(f"skills/{args.skill}", "test").examples]

    def latency_ms(model: Path) -> float:
        """p50 of one-text parses of the tuned skill's test texts (the adapter's extra pass)."""
        parser = Parser.from_pretrained(model, backend="torch")
        parser.parse(tuned_texts[:5])  # warm-up
        times = []
        for text in tuned_texts * 3:
            started = time.perf_counter()
            parser.parse([text])
            times.append(1000 * (time.perf_counter() - started))
        return round(statistics.median(times), 2)

    before = scores(base)
    base_latency = latency_ms(base)
    rows: dict[str, Any] = {}
    for mode in MODES:
        cfg = load_config(
            "configs/demo.yaml",
            [
                f"output_dir={out / mode}",
                f"init_from={base}",
                f"finetune={mode}",
                f"data=skills/{args.skill}",
                f"epochs={args.epochs}",
                "seed=1",  # other template fillings than the base saw
            ],
        )
        started = time.perf_counter()
        result = train(cfg)
        after = scores(result.model_dir)
        others = [s for s in SKILLS if s != args.skill]

        def delta(skill: str, key: str, after: dict[str, Any] = after) -> float:
            return round(after[skill][key] - before[skill][key], 2)

        rows[mode] = {
            "seconds": round(time.perf_counter() - started, 1),
            "tuned_skill_exact_delta": delta(args.skill, "exact_match"),
            "tuned_skill_exact": after[args.skill]["exact_match"],
            "others_exact_delta": {s: delta(s, "exact_match") for s in others},
            "others_mean_deltas": {
                key: round(statistics.fmean(delta(s, key) for s in others), 2)
                for key in ("router_accuracy", "intent_accuracy", "slot_f1", "exact_match")
            },
            "latency_p50_ms": latency_ms(result.model_dir),
            "after": after,
        }
        print(mode, json.dumps(rows[mode]["others_mean_deltas"]), flush=True)

    others = [s for s in SKILLS if s != args.skill]
    lines = [
        f"Fine-tuned on: {args.skill} (new template fillings, {args.epochs} epochs); base "
        f"{args.skill} exact match {before[args.skill]['exact_match']}. Deltas in points "
        "against the base model, hand-written test files.",
        "",
        f"| mode | {args.skill} EM (Δ) | "
        + " | ".join(f"{s} EM Δ" for s in others)
        + f" | others: router Δ | intent Δ | slot F1 Δ | EM Δ | {args.skill} parse p50 (× base) |",
        "|---|---|" + "---|" * (len(others) + 5),
    ]
    for mode, r in rows.items():
        m = r["others_mean_deltas"]
        lines.append(
            f"| {mode} | {r['tuned_skill_exact']} ({r['tuned_skill_exact_delta']:+}) | "
            + " | ".join(f"{r['others_exact_delta'][s]:+}" for s in others)
            + f" | {m['router_accuracy']:+} | {m['intent_accuracy']:+} | {m['slot_f1']:+} |"
            f" {m['exact_match']:+} | {r['latency_p50_ms']} ms"
            f" ({r['latency_p50_ms'] / base_latency:.2f}×) |"
        )
    lines.append(
        f"\nBase model parse p50 for {args.skill} texts: {base_latency} ms (eager PyTorch)."
    )
    text = "\n".join(lines)
    print(text)
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "skill": args.skill,
        "base": str(base),
        "before": before,
        "base_latency_p50_ms": base_latency,
        "modes": rows,
    }
    results.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    results.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
