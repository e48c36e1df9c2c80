"""Reports of an evaluation: the metrics table, the reliability diagram, the confusion
matrix, and one predictions.jsonl row per example."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nlu.evaluation.metrics import OUT_OF_SCOPE, frame, pct
from nlu.result import ParseResult
from nlu.schema import Example


def format_table(metrics: dict[str, Any]) -> str:
    columns = [
        "n",
        "router_accuracy",
        "intent_accuracy",
        "slot_precision",
        "slot_recall",
        "slot_f1",
        "exact_match",
    ]
    heads = ["skill", "n", "router acc", "intent acc", "slot P", "slot R", "slot F1", "exact match"]
    body = []
    if metrics["overall"] is not None:
        body.append(["overall (in scope)", *(metrics["overall"][c] for c in columns)])
    body += [[skill, *(m[c] for c in columns)] for skill, m in metrics["per_skill"].items()]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in body]
    lines.append(f"\nSlot scores: {metrics['slot_metric']}.")
    rejection = metrics.get("with_rejection")
    if rejection:
        on = rejection["overall"] or {}
        lines.append(
            f"\nHeadline: {metrics['headline']}. With the out-of-scope detector on, "
            f"{rejection['in_scope_rejected']} % of these in-scope texts are rejected: intent acc "
            f"{on.get('intent_accuracy')}, slot F1 {on.get('slot_f1')}, exact match "
            f"{on.get('exact_match')}."
        )
    oos = metrics.get("out_of_scope")
    if oos:
        lines.append(
            "\nOut of scope: "
            + ", ".join(
                f"{k.replace('_', ' ')} {'n/a' if v is None else v}" for k, v in oos.items()
            )
            + " (recall: out-of-scope texts rejected; in scope rejected: in-scope texts "
            "wrongly rejected, counted as errors above)."
        )
    calibration = metrics.get("calibration")
    if calibration:
        parts = [
            f"router ECE {calibration['router_ece']}",
            f"intent ECE {calibration['intent_ece']}",
        ]
        raw = metrics.get("calibration_uncalibrated")
        if raw:
            parts.append(
                f"before temperature scaling: router {raw['router_ece']}, intent "
                f"{raw['intent_ece']}"
            )
        lines.append("\nCalibration (15-bin ECE, %): " + "; ".join(parts) + ".")
    per_intent = metrics.get("per_intent") or {}
    if per_intent:
        lines += ["\n## Per intent (gold skill/intent)\n", "| intent | n | P | R | F1 |"]
        lines.append("|---|---|---|---|---|")
        for label, m in sorted(per_intent.items(), key=lambda kv: (kv[1]["f1"], kv[0])):
            lines.append(f"| {label} | {m['n']} | {m['precision']} | {m['recall']} | {m['f1']} |")
    per_slot = metrics.get("per_slot_type") or {}
    if per_slot:
        lines += ["\n## Per slot (skill/slot, strict entity level)\n", "| slot | n | P | R | F1 |"]
        lines.append("|---|---|---|---|---|")
        for label, m in sorted(per_slot.items(), key=lambda kv: (kv[1]["f1-score"], kv[0])):
            lines.append(
                f"| {label} | {int(m['support'])} | {pct(m['precision'])} | {pct(m['recall'])} "
                f"| {pct(m['f1-score'])} |"
            )
    worst = metrics.get("worst_errors") or []
    if worst:
        lines += [
            f"\n## Worst errors (the {len(worst)} wrong frames the model was surest of)\n",
            "| text | gold | predicted | confidence |",
            "|---|---|---|---|",
        ]
        for e in worst:
            cells = (e["text"], e["gold"], e["predicted"], e["confidence"])
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def plot_reliability(calibration: dict[str, Any], path: Path) -> None:
    """Reliability diagram: accuracy against confidence per bin, router and intent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
    for ax, key, title in ((axes[0], "router", "Router"), (axes[1], "intent", "Intent")):
        bins = calibration[f"{key}_bins"]
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
        ax.bar(
            [(b["low"] + b["high"]) / 2 for b in bins],
            [b["accuracy"] for b in bins],
            width=[b["high"] - b["low"] for b in bins],
            edgecolor="black",
            alpha=0.7,
        )
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="C1")
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel="confidence",
            ylabel="accuracy",
            title=f"{title} (ECE {calibration[f'{key}_ece']} %)",
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion(confusion: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, matrix = confusion["labels"], confusion["matrix"]
    size = max(6.0, 0.35 * len(labels) + 3)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted (skill/intent)")
    ax.set_ylabel("gold (skill/intent)")
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            if value:
                ax.text(j, i, str(value), ha="center", va="center", fontsize=6)
    ax.set_title("Intent confusion")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def prediction_row(example: Example, pred: ParseResult) -> dict[str, Any]:
    """One line of predictions.jsonl: gold (with each slot's text), prediction, and verdicts
    (spans compared by character offsets)."""
    gold_frame = f"{example.skill}/{example.intent}" if example.in_scope else OUT_OF_SCOPE
    gold_spans = {(s.start, s.end, s.slot) for s in example.slots}
    pred_spans = {(s.start, s.end, s.slot) for s in pred.slots}
    intent_ok = frame(pred) == gold_frame
    slots_ok = gold_spans == pred_spans
    gold = example.to_dict()
    gold["slots"] = [{**s.to_dict(), "value": example.value(s)} for s in example.slots]
    return {
        "correct": intent_ok and slots_ok,
        "intent_correct": intent_ok,
        "slots_correct": slots_ok,
        "gold": gold,
        "pred": pred.to_dict(),
    }
