"""Hard vs cross-stitch vs sluice sharing (issue 17), at an equal budget in epochs.

    python benchmarks/sharing_ablation.py --seeds 3 [--epochs 2] [--limit N]

Settings:
(a) massive: MASSIVE en-US, its 18 scenarios as skills, in 3 groups of 6 (alphabetical);
(b) atis+snips: ATIS and SNIPS as two skills of one model, one group each.
Soft modes get one column per group (`sharing_groups`); hard sharing ignores the groups.
Per run: intent accuracy, slot F1 and exact match per group on the test split (selection on
dev), parameters, training time, and single-utterance latency of the int8 ONNX export (median
of 200 test utterances). Times and latency are reported as ratios to hard sharing of the same
seed (same process, same machine, run back to back); `--retime` measures the cached exports'
latencies again with the modes interleaved, and `--time-seeds` keeps seeds that were trained
while other jobs shared the machine out of the training-time ratio. `--limit` subsamples every
train split (smoke runs; say so when reporting). Every run is cached in
OUT/<setting>/<mode>/<seed>.json, so a killed ablation resumes. Writes
benchmarks/results/sharing_ablation.{json,md}.
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

from common import write_results

MODES = ("hard", "cross_stitch", "sluice")
DATA = {
    "massive": ["../shared/data/massive_en_us/en-US.jsonl"],
    "atis+snips": ["../shared/data/atis", "../shared/data/snips"],
}


def groups_of(setting: str, skills: list[str]) -> list[list[str]]:
    if setting == "massive":
        ordered = sorted(skills)
        size = math.ceil(len(ordered) / 3)
        return [ordered[i : i + size] for i in range(0, len(ordered), size)]
    return [[s] for s in sorted(skills)]


def load(setting: str, split: str, limit: int | None, seed: int) -> list[Any]:
    from nlu.data.loaders import load_split

    examples = [e for path in DATA[setting] for e in load_split(path, split).examples]
    if limit and split == "train":
        examples = random.Random(seed).sample(examples, min(limit, len(examples)))
    return examples


def latency_ms(model_dir: Path, out: Path, texts: list[str]) -> float:
    from nlu.inference.parser import Parser
    from nlu.model.export import export_onnx

    export_onnx(model_dir=model_dir, out_dir=out, quantize="int8")
    parser = Parser.from_pretrained(out)
    for text in texts[:20]:
        parser.parse(text)
    times = []
    for text in texts:
        started = time.perf_counter()
        parser.parse(text)
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 3)


def retime(setting: str, seed: int, args: argparse.Namespace) -> None:
    """Measure the int8 latency of every cached mode of (setting, seed) again, interleaved in
    one process, and store it in the cached records: latencies measured run by run, minutes
    apart, compare badly on a shared machine."""
    from nlu.inference.parser import Parser

    base = Path(args.out) / setting
    modes = [m for m in MODES if (base / m / f"{seed}.json").is_file()]
    parsers = {m: Parser.from_pretrained(base / m / str(seed) / "int8") for m in modes}
    test = load(setting, "test", None, seed)
    texts = random.Random(0).sample([e.text for e in test], min(200, len(test)))
    times: dict[str, list[float]] = {m: [] for m in modes}
    for text in texts[:20]:
        for parser in parsers.values():
            parser.parse(text)
    for text in texts:
        for mode, parser in parsers.items():
            started = time.perf_counter()
            parser.parse(text)
            times[mode].append((time.perf_counter() - started) * 1000)
    for mode in modes:
        cached = base / mode / f"{seed}.json"
        record = json.loads(cached.read_text())
        record["latency_int8_ms"] = round(statistics.median(times[mode]), 3)
        record["latency_interleaved"] = True
        cached.write_text(json.dumps(record, indent=2) + "\n")
        print(f"{setting} seed {seed} {mode}: int8 p50 {record['latency_int8_ms']} ms")


def run(setting: str, mode: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from nlu.config import TrainConfig, replace
    from nlu.data.formats import write_jsonl
    from nlu.evaluation.metrics import score
    from nlu.inference.parser import Parser
    from nlu.model.joint import JointModel
    from nlu.training.train import train

    out = Path(args.out) / setting / mode / str(seed)
    cached = out.with_suffix(".json")
    if cached.is_file():
        return dict(json.loads(cached.read_text()))
    train_examples = load(setting, "train", args.limit, seed)
    dev = load(setting, "dev", None, seed)
    test = load(setting, "test", None, seed)
    skills = sorted({e.skill for e in train_examples if e.skill})
    groups = groups_of(setting, skills)
    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(data_dir / "train.jsonl", train_examples)
    write_jsonl(data_dir / "dev.jsonl", dev)
    cfg = replace(
        TrainConfig(),
        data=[str(data_dir / "train.jsonl")],
        dev_data=[str(data_dir / "dev.jsonl")],
        epochs=args.epochs,
        seed=seed,
        sampling="proportional",
        oos_method="none",
        output_dir=str(out / "run"),
        overwrite=True,
        sharing=mode,
        sharing_groups=["+".join(g) for g in groups],
    )
    started = time.perf_counter()
    result = train(cfg)
    seconds = time.perf_counter() - started
    model, _ = JointModel.load(result.model_dir)
    parser = Parser.from_pretrained(result.model_dir)
    predictions = parser.parse([e.text for e in test])
    by_group = {}
    for group in groups:
        rows = [(e, p) for e, p in zip(test, predictions, strict=True) if e.skill in group]
        metrics = score([e for e, _ in rows], [p for _, p in rows], tokenizer=parser.tokenizer)
        by_group["+".join(group) if len(group) < 3 else f"{group[0]}..{group[-1]}"] = {
            k: metrics["overall"][k]
            for k in ("intent_accuracy", "slot_f1", "exact_match", "router_accuracy", "n")
        }
    texts = random.Random(0).sample([e.text for e in test], min(200, len(test)))
    record = {
        "setting": setting,
        "mode": mode,
        "seed": seed,
        "groups": by_group,
        "overall_exact_match": score(test, predictions, tokenizer=parser.tokenizer)["overall"][
            "exact_match"
        ],
        "parameters_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "train_seconds": round(seconds, 1),
        "latency_int8_ms": latency_ms(result.model_dir, out / "int8", texts),
        "best_epoch": result.best_epoch,
    }
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(record, indent=2) + "\n")
    return record


def mean_stderr(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return (
        f"{statistics.fmean(values):.2f} ± {statistics.stdev(values) / math.sqrt(len(values)):.2f}"
    )


def table(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.epochs} epochs, seeds {args.seeds}, all-MiniLM-L6-v2, batch 32"
        + (f", train splits subsampled to {args.limit}" if args.limit else "")
        + "; mean ± standard error over seeds; ratios to hard sharing of the same seed"
        + (
            f" (training time: seeds {args.time_seeds})"
            if args.time_seeds != list(range(args.seeds))
            else ""
        )
        + ".",
        "",
    ]
    for setting in DATA:
        mine = [r for r in runs if r["setting"] == setting]
        if not mine:
            continue
        groups = list(mine[0]["groups"])
        lines += [
            f"### {setting}",
            "",
            "Per group: exact match / intent accuracy / slot F1.",
            "",
            "| mode | "
            + " | ".join(groups)
            + " | overall EM | parameters (M) | train time ÷ hard | int8 latency ÷ hard |",
            "|---|" + "---|" * (len(groups) + 4),
        ]
        hard = {r["seed"]: r for r in mine if r["mode"] == "hard"}
        for mode in MODES:
            rows = [r for r in mine if r["mode"] == mode]
            if not rows:
                continue
            cells = [
                " / ".join(
                    mean_stderr([r["groups"][g][key] for r in rows])
                    for key in ("exact_match", "intent_accuracy", "slot_f1")
                )
                for g in groups
            ]
            cells.append(mean_stderr([r["overall_exact_match"] for r in rows]))
            cells.append(f"{rows[0]['parameters_millions']:.1f}")
            for key in ("train_seconds", "latency_int8_ms"):
                ratios = [
                    r[key] / hard[r["seed"]][key]
                    for r in rows
                    if r["seed"] in hard
                    and (r["seed"] in args.time_seeds or key == "latency_int8_ms")
                ]
                cells.append(mean_stderr(ratios) if ratios else "–")
            lines.append(f"| {mode} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--limit", type=int, help="subsample each train split (smoke runs)")
    ap.add_argument("--settings", default=",".join(DATA))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--out", default="runs/sharing_ablation")
    ap.add_argument(
        "--retime",
        action="store_true",
        help="re-measure the int8 latency of the cached runs, modes interleaved, then report",
    )
    ap.add_argument(
        "--time-seeds",
        type=lambda v: [int(x) for x in v.split(",")],
        help="seeds whose training times enter the ratio (default: all); leave out seeds "
        "trained while other jobs shared the machine (latencies: see --retime)",
    )
    ap.add_argument("--results", default="benchmarks/results/sharing_ablation")
    args = ap.parse_args()
    if args.time_seeds is None:
        args.time_seeds = list(range(args.seeds))
    if args.retime:
        for seed in range(args.seeds):
            for setting in args.settings.split(","):
                retime(setting, seed, args)
    runs = [
        run(setting, mode, seed, args)
        for seed in range(args.seeds)
        for setting in args.settings.split(",")
        for mode in args.modes.split(",")
    ]
    text = table(runs, args)
    print(text)
    write_results(args.results, text, runs)


if __name__ == "__main__":
    main()
