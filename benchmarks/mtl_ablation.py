"""Which skill sampling and loss weighting to ship: an ablation on a skill mix of unequal sizes.

    python benchmarks/mtl_ablation.py --seeds 3

The five demo skills, with their template-expanded training data subsampled to very unequal
sizes (default 600 / 250 / 100 / 40 / 15 examples: a long tail, as when a team adds skills
over time). Model selection on each skill's held-out template dev split (subsampled the same
way); scores on the skills' hand-written test files, which no template produced. Reports
per-skill exact match and the macro average over skills (every skill counts the same, which is
what the small skills' users feel), plus the micro average over all test utterances.

Every configuration trains the same number of steps (epochs × len(train) / batch). Writes
benchmarks/results/mtl_ablation.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from pathlib import Path
from typing import Any

CONFIGS: dict[str, dict[str, Any]] = {
    "proportional + static": {"sampling": "proportional", "loss_weighting": "static"},
    "temperature T=2 + static": {"sampling": "temperature", "loss_weighting": "static"},
    "uniform + static": {"sampling": "uniform", "loss_weighting": "static"},
    "annealed + static": {"sampling": "annealed", "loss_weighting": "static"},
    "proportional + uncertainty": {"sampling": "proportional", "loss_weighting": "uncertainty"},
    "proportional + dwa": {"sampling": "proportional", "loss_weighting": "dwa", "dwa_period": 10},
    "temperature T=2 + uncertainty": {
        "sampling": "temperature",
        "loss_weighting": "uncertainty",
    },
}
SIZES = {"alarm": 600, "music": 250, "weather": 100, "smart_home": 40, "timer": 15}


def mean_stderr(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    stderr = statistics.stdev(values) / math.sqrt(len(values))
    return f"{statistics.fmean(values):.2f} ± {stderr:.2f}"


def make_data(out: Path, seed: int) -> tuple[Path, Path, list[Any]]:
    from nlu.data.formats import write_jsonl
    from nlu.data.loaders import load_split

    train: list[Any] = []
    dev: list[Any] = []
    rng = random.Random(seed)
    for skill, size in SIZES.items():
        folder = f"skills/{skill}"
        pool = load_split(folder, "train").examples
        train += rng.sample(pool, min(size, len(pool)))
        held = load_split(folder, "dev").examples
        dev += rng.sample(held, min(max(5, size // 5), len(held)))
    test = [e for skill in SIZES for e in load_split(f"skills/{skill}", "test").examples]
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "dev.jsonl", dev)
    return out / "train.jsonl", out / "dev.jsonl", test


def run(name: str, changes: dict[str, Any], seed: int, epochs: int, out: Path) -> dict[str, Any]:
    from nlu.config import TrainConfig, replace
    from nlu.evaluation.metrics import score
    from nlu.inference.parser import Parser
    from nlu.training.train import train

    train_path, dev_path, test = make_data(out / f"data_{seed}", seed)
    cfg = replace(
        TrainConfig(),
        data=[str(train_path)],
        dev_data=[str(dev_path)],
        epochs=epochs,
        seed=seed,
        output_dir=str(out / name.replace(" ", "_").replace("+", "").replace("=", "") / str(seed)),
        **changes,
    )
    started = time.perf_counter()
    result = train(cfg)
    parser = Parser.from_pretrained(result.model_dir)
    metrics = score(test, parser.parse([e.text for e in test]), tokenizer=parser.tokenizer)
    per_skill = metrics["per_skill"]
    last = result.history[-1]
    return {
        "config": name,
        "seed": seed,
        "per_skill_exact": {k: per_skill[k]["exact_match"] for k in SIZES},
        "per_skill_intent": {k: per_skill[k]["intent_accuracy"] for k in SIZES},
        "per_skill_slot_f1": {k: per_skill[k]["slot_f1"] for k in SIZES},
        "macro_exact": round(statistics.fmean(per_skill[k]["exact_match"] for k in SIZES), 2),
        "macro_intent": round(statistics.fmean(per_skill[k]["intent_accuracy"] for k in SIZES), 2),
        "macro_slot_f1": round(statistics.fmean(per_skill[k]["slot_f1"] for k in SIZES), 2),
        "micro_exact": metrics["overall"]["exact_match"],
        "router": metrics["overall"]["router_accuracy"],
        "final_loss_weights": last.get("loss_weights"),
        "final_skill_probabilities": last.get("skill_probabilities"),
        "seconds": round(time.perf_counter() - started, 1),
    }


def table(runs: list[dict[str, Any]], seeds: int) -> str:
    lines = [
        f"Skill sizes (train examples): {SIZES}; {seeds} seed(s); mean ± standard error.",
        "",
        "| config | "
        + " | ".join(f"{k} EM" for k in SIZES)
        + " | macro EM | macro intent | macro slot F1 | micro EM | router |",
        "|---|" + "---|" * (len(SIZES) + 5),
    ]
    for name in CONFIGS:
        rows = [r for r in runs if r["config"] == name]
        if not rows:
            continue
        cells = [mean_stderr([r["per_skill_exact"][k] for r in rows]) for k in SIZES]
        cells += [
            mean_stderr([r[m] for r in rows])
            for m in ("macro_exact", "macro_intent", "macro_slot_f1", "micro_exact", "router")
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--only", help="comma-separated config names")
    ap.add_argument("--out", default="runs/mtl_ablation")
    ap.add_argument("--results", default="benchmarks/results/mtl_ablation")
    args = ap.parse_args()
    out = Path(args.out)
    cache = out / "runs.jsonl"
    done = [json.loads(line) for line in cache.read_text().splitlines()] if cache.is_file() else []
    names = args.only.split(",") if args.only else list(CONFIGS)
    for seed in range(args.seeds):
        for name in names:
            if any(r["config"] == name and r["seed"] == seed for r in done):
                continue
            result = run(name, CONFIGS[name], seed, args.epochs, out)
            done.append(result)
            with cache.open("a") as handle:
                handle.write(json.dumps(result) + "\n")
            print(f"{name} seed {seed}: macro EM {result['macro_exact']}", flush=True)
    text = table(done, args.seeds)
    print(text)
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.with_suffix(".json").write_text(json.dumps({"sizes": SIZES, "runs": done}, indent=2))
    results.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
