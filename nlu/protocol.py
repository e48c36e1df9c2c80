"""`nlu benchmark`: train on train, select on dev, score test once per seed; mean ± stderr.

The protocol is fixed here so that every reported number is produced the same way: model
selection uses the dev split only (exact match), and the test split is evaluated once per seed
with the selected model. Slot scores are seqeval's strict IOB2 entity-level F1.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import logging
import math
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nlu.config import TrainConfig, load_config, replace
from nlu.evaluate import SEQEVAL_MODE, evaluate
from nlu.train import train

logger = logging.getLogger(__name__)

# Shipped inside the package (nlu/presets/NAME.yaml), so `nlu benchmark` works on a wheel install.
PRESETS = "presets"
PROTOCOL = "train on train, select the epoch with the best dev exact match, test once per seed"
METRICS = ("intent_accuracy", "slot_f1", "exact_match", "router_accuracy")


def mean_stderr(values: Sequence[float]) -> dict[str, float]:
    mean = statistics.fmean(values)
    stderr = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return {"mean": round(mean, 2), "stderr": round(stderr, 2), "n": len(values)}


def benchmark_config(name: str, overrides: Sequence[str]) -> TrainConfig:
    """The preset nlu/presets/<name>.yaml if there is one, then key=value overrides."""
    preset = importlib.resources.files("nlu") / PRESETS / f"{name}.yaml"
    with importlib.resources.as_file(preset) as path:
        return load_config(path if path.is_file() else None, list(overrides))


def benchmark(
    *,
    name: str,
    data: str,
    seeds: int,
    config: TrainConfig,
    output_dir: str | Path,
) -> dict[str, Any]:
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in range(seeds):
        run_dir = out / f"seed_{seed}"
        cfg = replace(config, data=[data], seed=seed, output_dir=str(run_dir))
        logger.info("%s seed %d/%d: training", name, seed + 1, seeds)
        started = time.perf_counter()
        result = train(cfg)
        wall = time.perf_counter() - started
        metrics = evaluate(
            model_dir=result.model_dir, data=[data], split="test", out_dir=run_dir / "test"
        )
        runs.append(
            {
                "seed": seed,
                "test": metrics["overall"],
                "dev": result.best_dev,
                "best_epoch": result.best_epoch,
                "train_seconds": result.train_seconds,
                "wall_seconds": round(wall, 1),
                "examples_per_second": result.examples_per_second,
                "unseen_test_labels": metrics["unseen_labels"],
            }
        )
        logger.info("%s seed %d test: %s", name, seed, json.dumps(metrics["overall"]))
    summary = {m: mean_stderr([r["test"][m] for r in runs]) for m in METRICS}
    report = {
        "benchmark": name,
        "data": data,
        "seeds": seeds,
        "protocol": PROTOCOL,
        "slot_metric": SEQEVAL_MODE,
        "config": _reported(config),
        "test": summary,
        "dev": {m: mean_stderr([r["dev"][m] for r in runs if r["dev"]]) for m in METRICS}
        if all(r["dev"] for r in runs)
        else None,
        "train_seconds": mean_stderr([r["train_seconds"] for r in runs]),
        "examples_per_second": mean_stderr([r["examples_per_second"] for r in runs]),
        "runs": runs,
        "machine": {"platform": platform.platform(), "processor": platform.machine()},
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(format_report(report) + "\n")
    return report


def _reported(config: TrainConfig) -> dict[str, Any]:
    """The config keys that describe the protocol's training (flat), without per-run ones."""
    flat = {
        k: v
        for group in dataclasses.asdict(config).values()
        if isinstance(group, dict)
        for k, v in group.items()
    }
    return {k: v for k, v in flat.items() if k not in ("data", "output_dir", "resume")}


def format_report(report: dict[str, Any]) -> str:
    def cell(stat: dict[str, float]) -> str:
        return f"{stat['mean']:.2f} ± {stat['stderr']:.2f}"

    t = report["test"]
    lines = [
        f"## {report['benchmark']} ({report['seeds']} seeds, test split)",
        "",
        "| intent acc | slot F1 | exact match | router acc | train time (s) | train ex/s |",
        "|---|---|---|---|---|---|",
        f"| {cell(t['intent_accuracy'])} | {cell(t['slot_f1'])} | {cell(t['exact_match'])} "
        f"| {cell(t['router_accuracy'])} | {cell(report['train_seconds'])} "
        f"| {cell(report['examples_per_second'])} |",
        "",
        f"Mean ± standard error over seeds. Slot F1: {report['slot_metric']}. "
        f"Protocol: {report['protocol']}.",
        "",
        "Config: " + ", ".join(f"{k}={v}" for k, v in report["config"].items()),
    ]
    unseen = report["runs"][0]["unseen_test_labels"]
    if any(unseen.values()):
        lines += [
            "",
            f"Test labels never seen in training (scored as errors): {json.dumps(unseen)}",
        ]
    return "\n".join(lines)
