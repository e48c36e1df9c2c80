"""Metrics: router accuracy, intent accuracy, entity-level slot P/R/F1 (seqeval), exact match.

Slot F1 is seqeval's strict IOB2 entity-level score (`mode="strict", scheme=IOB2`), never a
token-level F1. Gold and predicted spans are turned into tags over the same words with the one
alignment function (`nlu.alignment.spans_to_tags`) used in training.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2

from nlu import modeldir
from nlu.alignment import Tokenizer, encode, spans_to_tags
from nlu.config import ConfigError, parse_config
from nlu.result import ParseResult
from nlu.schema import Example, Span

logger = logging.getLogger(__name__)

SEQEVAL_MODE = "strict IOB2 (seqeval mode='strict', scheme=IOB2), entity level"


def _pct(x: float) -> float:
    return round(100.0 * float(x), 2)


def score(
    examples: Sequence[Example],
    predictions: Sequence[ParseResult],
    *,
    tokenizer: Tokenizer,
) -> dict[str, Any]:
    """Overall and per-skill metrics for predictions (as `decode` returns them) against gold.

    A prediction with the wrong skill gets neither its intent nor its exact match; a gold span
    that covers no token (the tokenizer drops its characters) can never be matched, so its
    example is never an exact match; a skill without any slots scores slot P/R/F1 100."""
    if len(examples) != len(predictions):
        raise ValueError(f"{len(examples)} examples but {len(predictions)} predictions")
    if not examples:
        raise ValueError("nothing to score: no examples")
    # Score over the full text (no truncation) so gold spans past the model's window still count
    # as missed rather than vanishing from the denominator.
    full = getattr(tokenizer, "model_max_length", 512)
    encodings = encode(tokenizer, [ex.text for ex in examples], min(int(full), 4096))
    rows: list[dict[str, Any]] = []
    lost = 0
    for ex, pred, enc in zip(examples, predictions, encodings, strict=True):
        gold = spans_to_tags(enc.words, ex.slots)
        lost += len(gold.lost)
        guess = spans_to_tags(enc.words, [Span(s.start, s.end, s.slot) for s in pred.slots])
        skill_ok = pred.skill.name == ex.skill
        intent_ok = skill_ok and pred.intent.name == ex.intent
        rows.append(
            {
                "skill": ex.skill,
                "gold_tags": gold.tags,
                "pred_tags": guess.tags,
                "router": skill_ok,
                "intent": intent_ok,
                "exact": intent_ok and gold.tags == guess.tags and not gold.lost,
                "gold_intent": f"{ex.skill}/{ex.intent}",
                "pred_intent": f"{pred.skill.name}/{pred.intent.name}",
            }
        )
    if lost:
        logger.warning(
            "%d gold spans cover no token (e.g. only characters the tokenizer drops)", lost
        )

    def block(subset: list[dict[str, Any]]) -> dict[str, Any]:
        gold = [r["gold_tags"] for r in subset]
        pred = [r["pred_tags"] for r in subset]
        kwargs: dict[str, Any] = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
        has_spans = any(t != "O" for seq in gold + pred for t in seq)
        n = len(subset)
        return {
            "n": n,
            "router_accuracy": _pct(sum(r["router"] for r in subset) / n),
            "intent_accuracy": _pct(sum(r["intent"] for r in subset) / n),
            "slot_precision": _pct(precision_score(gold, pred, **kwargs)) if has_spans else 100.0,
            "slot_recall": _pct(recall_score(gold, pred, **kwargs)) if has_spans else 100.0,
            "slot_f1": _pct(f1_score(gold, pred, **kwargs)) if has_spans else 100.0,
            "exact_match": _pct(sum(r["exact"] for r in subset) / n),
        }

    by_skill: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_skill[r["skill"]].append(r)
    gold_tags, pred_tags = [r["gold_tags"] for r in rows], [r["pred_tags"] for r in rows]
    any_span = any(t != "O" for seq in gold_tags + pred_tags for t in seq)
    per_slot = (
        classification_report(
            gold_tags, pred_tags, mode="strict", scheme=IOB2, output_dict=True, zero_division=0
        )
        if any_span
        else {}
    )
    return {
        "slot_metric": SEQEVAL_MODE,
        "overall": block(rows),
        "per_skill": {skill: block(subset) for skill, subset in sorted(by_skill.items())},
        "per_slot_type": {
            k: {m: round(float(v), 4) for m, v in vals.items()}
            for k, vals in per_slot.items()
            if "avg" not in k
        },
        "gold_spans_not_on_tokens": lost,
        "confusion": _confusion(rows),
    }


def _confusion(rows: list[dict[str, Any]]) -> dict[str, Any]:
    labels = sorted({r["gold_intent"] for r in rows} | {r["pred_intent"] for r in rows})
    pos = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for r in rows:
        matrix[pos[r["gold_intent"]]][pos[r["pred_intent"]]] += 1
    return {"labels": labels, "matrix": matrix}


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
    body = [["overall", *(metrics["overall"][c] for c in columns)]]
    body += [[skill, *(m[c] for c in columns)] for skill, m in metrics["per_skill"].items()]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in body]
    lines.append(f"\nSlot scores: {metrics['slot_metric']}.")
    return "\n".join(lines)


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


def _template_options(model_dir: Path) -> dict[str, Any]:
    """Expand skill templates exactly as training did, so a skill's train/dev split matches."""
    saved = modeldir.read_training_config(model_dir)
    if saved is None:
        return {}
    try:
        cfg = parse_config(saved, source=str(model_dir / modeldir.TRAINING_CONFIG_FILE))
    except ConfigError as err:
        logger.warning("cannot read the training config (%s); default template options", err)
        return {}
    return {
        "samples_per_template": cfg.data.samples_per_template,
        "dev_fraction": cfg.data.dev_fraction,
        "seed": cfg.seed,
    }


def evaluate(
    *,
    model_dir: str | Path,
    data: Sequence[str | Path],
    split: str = "test",
    out_dir: str | Path | None = None,
    batch_size: int = 64,
    backend: str = "auto",
) -> dict[str, Any]:
    """`nlu evaluate`: load a model, predict a split of each data source, score, write reports."""
    from nlu.data.loaders import load_split, unseen_labels
    from nlu.predict import Parser

    parser = Parser.from_pretrained(model_dir, backend=backend)
    examples: list[Example] = []
    for source in data:
        examples += load_split(source, split, **_template_options(Path(model_dir))).examples
    unseen = unseen_labels(parser.skills, examples)
    if any(unseen.values()):
        logger.warning("labels absent from the model (they count as errors): %s", unseen)
    predictions = parser.parse([ex.text for ex in examples], batch_size=batch_size)
    metrics = score(examples, predictions, tokenizer=parser.tokenizer)
    metrics["unseen_labels"] = unseen
    metrics["split"] = split
    metrics["data"] = [str(d) for d in data]
    metrics["model"] = str(model_dir)
    metrics["backend"] = parser.backend
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (out / "metrics.md").write_text(format_table(metrics) + "\n")
        plot_confusion(metrics["confusion"], out / "confusion.png")
        with (out / "predictions.jsonl").open("w", encoding="utf-8") as handle:
            for ex, pred in zip(examples, predictions, strict=True):
                handle.write(
                    json.dumps({"gold": ex.to_dict(), "pred": pred.to_dict()}, ensure_ascii=False)
                    + "\n"
                )
    return metrics
