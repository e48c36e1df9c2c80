"""`nlu benchmark`: train on train, select on dev, score test once per seed; mean ± stderr.

The protocol is fixed here so that every reported number is produced the same way: model
selection uses the dev split only (exact match), and the test split is evaluated once per seed
with the selected model. Slot scores are seqeval's strict IOB2 entity-level F1.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import math
import platform
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nlu.config import TrainConfig, flat, load, replace
from nlu.evaluation.evaluate import evaluate
from nlu.evaluation.metrics import SEQEVAL_MODE
from nlu.training.train import train

logger = logging.getLogger(__name__)

# Shipped inside the package (nlu/presets/NAME.yaml), so `nlu benchmark` works on a wheel install.
PRESETS = "presets"
PROTOCOL = "train on train, select the epoch with the best dev exact match, test once per seed"
METRICS = ("intent_accuracy", "slot_f1", "exact_match", "router_accuracy")


def mean_stderr(values: Sequence[float]) -> dict[str, float]:
    mean = statistics.fmean(values)
    stderr = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return {"mean": round(mean, 2), "stderr": round(stderr, 2), "n": len(values)}


def benchmark_config(
    name: str, overrides: Sequence[str], *, flags: Mapping[str, Any] | None = None
) -> TrainConfig:
    """The preset nlu/presets/<name>.yaml if there is one, then key=value overrides, then the
    command line's flags."""
    preset = importlib.resources.files("nlu") / PRESETS / f"{name}.yaml"
    with importlib.resources.as_file(preset) as path:
        return load(TrainConfig, path if path.is_file() else None, list(overrides), flags=flags)


def _run_seed(
    name: str, data: str, seed: int, seeds: int, config: TrainConfig, out: Path
) -> dict[str, Any]:
    """Train with one seed, select on dev, score the test split once."""
    run_dir = out / f"seed_{seed}"
    cfg = replace(config, data=[data], seed=seed, output_dir=str(run_dir))
    logger.info("%s seed %d/%d: training", name, seed + 1, seeds)
    started = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - started
    metrics = evaluate(
        model_dir=result.model_dir, data=[data], split="test", out_dir=run_dir / "test"
    )
    logger.info("%s seed %d test: %s", name, seed, json.dumps(metrics["overall"]))
    return {
        "seed": seed,
        "test": metrics["overall"],
        "out_of_scope": metrics.get("out_of_scope"),
        "with_rejection": metrics.get("with_rejection"),
        "out_of_scope_by_method": out_of_scope_by_method(result.model_dir, data),
        "calibration": {
            "test_after": {k: v for k, v in metrics["calibration"].items() if "ece" in k},
            "test_before": metrics.get("calibration_uncalibrated"),
            "dev": (result.out_of_scope or {}).get("calibration"),
        },
        "dev": result.best_dev,
        "best_epoch": result.best_epoch,
        "train_seconds": result.train_seconds,
        "wall_seconds": round(wall, 1),
        "examples_per_second": result.examples_per_second,
        "unseen_test_labels": metrics["unseen_labels"],
    }


def benchmark(
    *,
    name: str,
    data: str,
    seeds: int,
    config: TrainConfig,
    output_dir: str | Path,
) -> dict[str, Any]:
    from nlu.data.loaders import FORMATS, detect_format, has_own_split
    from nlu.schema import DataError

    if not has_own_split(data, "test"):
        raise DataError(
            f"{data}: {FORMATS[detect_format(data)]} has no test split of its own, so the "
            "benchmark would score its own training data. Put the splits in one folder as "
            "train.jsonl, dev.jsonl and test.jsonl and pass the folder"
        )
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = [_run_seed(name, data, seed, seeds, config, out) for seed in range(seeds)]
    summary = {m: mean_stderr([r["test"][m] for r in runs]) for m in METRICS}
    by_method = None
    if all(r["out_of_scope_by_method"] for r in runs):
        by_method = {
            method: {
                key: mean_stderr([r["out_of_scope_by_method"][method][key] for r in runs])
                for key in runs[0]["out_of_scope_by_method"][method]
            }
            for method in runs[0]["out_of_scope_by_method"]
        }
    report = {
        "benchmark": name,
        "data": data,
        "seeds": seeds,
        "protocol": PROTOCOL,
        "slot_metric": SEQEVAL_MODE,
        "config": _reported(config),
        "test": summary,
        "out_of_scope_by_method": by_method,
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


def out_of_scope_by_method(model_dir: Path, data: str) -> dict[str, dict[str, float]] | None:
    """Every scoring method on the test split of `data`, each at its own threshold chosen on dev
    (saved by `nlu.training.calibrate`): in-scope accuracy (a rejected in-scope text is an error),
    out-of-scope recall, AUROC and FPR@95, all in %. None without out-of-scope test rows."""
    import numpy as np

    from nlu.data.loaders import load_split
    from nlu.inference.parser import torch_forward
    from nlu.model import modeldir, ood
    from nlu.model.joint import JointModel
    from nlu.training.calibrate import model_outputs

    detector = modeldir.read_ood(model_dir)
    test = load_split(data, "test").examples
    inside = [e for e in test if e.in_scope]
    outside = [e for e in test if not e.in_scope]
    if detector is None or not outside or detector.means is None:
        return None
    model, folder = JointModel.load(model_dir)
    forward, index = torch_forward(model), model.index
    out_in = model_outputs(
        forward, folder.tokenizer, [e.text for e in inside], folder.meta.max_length
    )
    out_oos = model_outputs(
        forward, folder.tokenizer, [e.text for e in outside], folder.meta.max_length
    )
    skill_ok = out_in.router.argmax(-1) == np.array(
        [index.position[e.skill] for e in inside if e.skill]
    )
    intent_ok = np.array(
        [
            index.skills[k].intents[int(out_in.intents[row, index.intent_slices[k]].argmax())]
            == e.intent
            for row, (k, e) in enumerate(zip(out_in.router.argmax(-1), inside, strict=True))
        ]
    )
    correct = skill_ok & intent_ok
    table = {}
    for method, row in detector.report["methods"].items():
        kwargs: dict[str, Any] = {
            "temperature": detector.router_temperature,
            "means": detector.means,
            "precision": detector.precision,
        }
        s_in = ood.score(method, out_in.router, out_in.pooled, **kwargs)
        s_oos = ood.score(method, out_oos.router, out_oos.pooled, **kwargs)
        threshold = row["threshold"]
        table[method] = {
            "in_scope_accuracy": round(100 * float((correct & (s_in <= threshold)).mean()), 2),
            "oos_recall": round(100 * float((s_oos > threshold).mean()), 2),
            "auroc": round(100 * ood.auroc(s_in, s_oos), 2),
            "fpr_at_95": round(100 * ood.fpr_at_95(s_in, s_oos), 2),
        }
    return table


def _reported(config: TrainConfig) -> dict[str, Any]:
    """The config keys that describe the protocol's training (flat), without per-run ones."""
    per_run = ("data", "output_dir", "resume", "seed")
    return {k: v for k, v in flat(config).items() if k not in per_run}


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
    rejection = [r["with_rejection"] for r in report["runs"] if r.get("with_rejection")]
    if rejection:
        lost = [r["in_scope_rejected"] for r in rejection]
        on = [r["overall"]["intent_accuracy"] for r in rejection if r["overall"]]
        lines += [
            "",
            "Closed-set scores (the test split has no out-of-scope rows; nothing rejected). With "
            f"the out-of-scope detector on, {sum(lost) / len(lost):.2f} % of in-scope test texts "
            f"are rejected and intent accuracy is {sum(on) / max(len(on), 1):.2f} (seed mean).",
        ]
    by_method = report.get("out_of_scope_by_method")
    if by_method:
        lines += [
            "",
            "Out of scope, per scoring method (threshold chosen on dev for "
            f"{100 * report['config'].get('target_recall', 0.98):g} % in-scope recall; %):",
            "",
            "| method | in-scope accuracy | out-of-scope recall | AUROC | FPR@95 |",
            "|---|---|---|---|---|",
        ]
        for method, m in by_method.items():
            lines.append(
                f"| {method} | {cell(m['in_scope_accuracy'])} | {cell(m['oos_recall'])} "
                f"| {cell(m['auroc'])} | {cell(m['fpr_at_95'])} |"
            )
    unseen = report["runs"][0]["unseen_test_labels"]
    if any(unseen.values()):
        lines += [
            "",
            f"Test labels never seen in training (scored as errors): {json.dumps(unseen)}",
        ]
    return "\n".join(lines)
