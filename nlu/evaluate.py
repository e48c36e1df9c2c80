"""Metrics: router accuracy, intent accuracy, entity-level slot P/R/F1 (seqeval), exact match.

Slot F1 is seqeval's strict IOB2 entity-level score (`mode="strict", scheme=IOB2`), never a
token-level F1. Gold and predicted spans are turned into tags over the same words with the one
alignment function (`nlu.alignment.spans_to_tags`) used in training.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2

from nlu import modeldir
from nlu.alignment import Tokenizer, encode, spans_to_tags
from nlu.config import ConfigError, parse_config
from nlu.ood import auroc, expected_calibration_error, fpr_at_95, reliability_bins
from nlu.result import ParseResult
from nlu.schema import Example, Span

if TYPE_CHECKING:
    from nlu.predict import Parser

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
    rejected: list[tuple[bool, ParseResult]] = []  # (gold in scope, prediction) per row
    lost = 0
    for ex, pred, enc in zip(examples, predictions, encodings, strict=True):
        rejected.append((ex.in_scope, pred))
        if not ex.in_scope:
            continue  # out-of-scope gold: scored by `out_of_scope` below
        gold = spans_to_tags(enc.words, ex.slots)
        lost += len(gold.lost)
        guess = spans_to_tags(enc.words, [Span(s.start, s.end, s.slot) for s in pred.slots])
        # A wrongly rejected in-scope text is wrong on every count.
        skill_ok = pred.skill is not None and pred.skill.name == ex.skill
        intent_ok = skill_ok and pred.intent is not None and pred.intent.name == ex.intent
        slots_ok = skill_ok and gold.tags == guess.tags and not gold.lost
        rows.append(
            {
                "skill": ex.skill,
                "gold_tags": gold.tags,
                "pred_tags": guess.tags,
                # Per-slot scores keyed by skill: a skill's "time" is not another skill's.
                "gold_keyed": _keyed(gold.tags, ex.skill),
                "pred_keyed": _keyed(guess.tags, pred.skill.name if pred.skill else None),
                "router": skill_ok,
                "intent": intent_ok,
                "slots": slots_ok,
                "exact": intent_ok and slots_ok,
                "gold_intent": f"{ex.skill}/{ex.intent}",
                "pred_intent": _frame(pred),
                "example": ex,
                "pred": pred,
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
    gold_tags, pred_tags = [r["gold_keyed"] for r in rows], [r["pred_keyed"] for r in rows]
    any_span = any(t != "O" for seq in gold_tags + pred_tags for t in seq)
    per_slot = (
        classification_report(
            gold_tags, pred_tags, mode="strict", scheme=IOB2, output_dict=True, zero_division=0
        )
        if any_span
        else {}
    )
    confusion_rows = rows + [
        {"gold_intent": OUT_OF_SCOPE, "pred_intent": _frame(pred)}
        for in_scope, pred in rejected
        if not in_scope
    ]
    return {
        "slot_metric": SEQEVAL_MODE,
        "overall": block(rows) if rows else None,
        "per_skill": {skill: block(subset) for skill, subset in sorted(by_skill.items())},
        "out_of_scope": out_of_scope_metrics(rejected),
        "calibration": calibration_metrics(examples, predictions),
        "per_slot_type": {
            k: {m: round(float(v), 4) for m, v in vals.items()}
            for k, vals in per_slot.items()
            if "avg" not in k
        },
        "per_intent": _per_intent(confusion_rows),
        "gold_spans_not_on_tokens": lost,
        "confusion": _confusion(confusion_rows),
        "worst_errors": _worst_errors(rows),
    }


def _keyed(tags: Sequence[str], skill: str | None) -> list[str]:
    return [t if t == "O" else f"{t[:2]}{skill}/{t[2:]}" for t in tags]


def _per_intent(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per gold skill/intent (and out_of_scope): support, precision, recall, F1 (%)."""
    gold = Counter(r["gold_intent"] for r in rows)
    said = Counter(r["pred_intent"] for r in rows)
    right = Counter(r["gold_intent"] for r in rows if r["gold_intent"] == r["pred_intent"])
    out = {}
    for label in sorted(gold):
        p = right[label] / said[label] if said[label] else 0.0
        r = right[label] / gold[label]
        out[label] = {
            "n": gold[label],
            "precision": _pct(p),
            "recall": _pct(r),
            "f1": _pct(2 * p * r / (p + r) if p + r else 0.0),
        }
    return out


WORST_ERRORS = 25


def _worst_errors(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The wrong frames the model was surest of: gold and predicted skill/intent and slots."""
    wrong = [r for r in rows if not r["exact"]]
    wrong.sort(key=lambda r: -(r["pred"].intent.confidence if r["pred"].intent else 0.0))
    return [
        {
            "text": r["example"].text,
            "gold": f"{r['gold_intent']} {_slot_text(r['example'])}".strip(),
            "predicted": f"{r['pred_intent']} {_pred_slot_text(r['pred'])}".strip(),
            "confidence": r["pred"].intent.confidence if r["pred"].intent else None,
            "wrong": "intent" if not r["intent"] else "slots",
        }
        for r in wrong[:WORST_ERRORS]
    ]


def _slot_text(example: Example) -> str:
    return " ".join(f"{s.slot}={example.value(s)!r}" for s in example.slots)


def _pred_slot_text(pred: ParseResult) -> str:
    return " ".join(f"{s.slot}={s.value!r}" for s in pred.slots)


OUT_OF_SCOPE = "out_of_scope"


def _frame(pred: ParseResult) -> str:
    if pred.skill is None or pred.intent is None:
        return OUT_OF_SCOPE
    return f"{pred.skill.name}/{pred.intent.name}"


def out_of_scope_metrics(rows: Sequence[tuple[bool, ParseResult]]) -> dict[str, Any] | None:
    """Rejection quality when the data has out-of-scope rows or the model rejects anything:
    in-scope texts wrongly rejected, out-of-scope recall and precision, and (with scores) AUROC
    and the share of out-of-scope texts accepted at 95 % in-scope recall (FPR@95)."""
    gold_oos = [not in_scope for in_scope, _ in rows]
    said_oos = [not pred.in_scope for _, pred in rows]
    if not any(gold_oos) and not any(said_oos):
        return None
    n_oos, n_in = sum(gold_oos), len(rows) - sum(gold_oos)
    caught = sum(g and s for g, s in zip(gold_oos, said_oos, strict=True))
    out: dict[str, Any] = {
        "n_out_of_scope": n_oos,
        "n_in_scope": n_in,
        "recall": _pct(caught / n_oos) if n_oos else None,
        "precision": _pct(caught / sum(said_oos)) if any(said_oos) else None,
        "in_scope_rejected": _pct(
            sum(s and not g for g, s in zip(gold_oos, said_oos, strict=True)) / n_in
        )
        if n_in
        else None,
    }
    scores_in = [p.oos_score for in_scope, p in rows if in_scope and p.oos_score is not None]
    scores_oos = [p.oos_score for in_scope, p in rows if not in_scope and p.oos_score is not None]
    if scores_in and scores_oos:
        out["auroc"] = round(auroc(scores_in, scores_oos), 4)
        out["fpr_at_95"] = _pct(fpr_at_95(scores_in, scores_oos))
    return out


def calibration_metrics(
    examples: Sequence[Example], predictions: Sequence[ParseResult]
) -> dict[str, Any]:
    """ECE (15 bins) of the router's and the intent head's top confidence on in-scope rows."""
    router_conf: list[float] = []
    router_ok: list[bool] = []
    intent_conf: list[float] = []
    intent_ok: list[bool] = []
    for ex, pred in zip(examples, predictions, strict=True):
        if not ex.in_scope or not pred.skills or not pred.intents:
            continue
        top = pred.skills[0]
        router_conf.append(top.confidence)
        router_ok.append(top.name == ex.skill)
        if top.name == ex.skill:  # the intent head's confidence, given the right skill
            intent_conf.append(pred.intents[0].confidence)
            intent_ok.append(pred.intents[0].name == ex.intent)
    if not router_conf:
        return {}
    return {
        "router_ece": _pct(expected_calibration_error(router_conf, router_ok)),
        "intent_ece": _pct(expected_calibration_error(intent_conf, intent_ok)),
        "router_bins": reliability_bins(router_conf, router_ok),
        "intent_bins": reliability_bins(intent_conf, intent_ok),
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
    body = []
    if metrics["overall"] is not None:
        body.append(["overall (in scope)", *(metrics["overall"][c] for c in columns)])
    body += [[skill, *(m[c] for c in columns)] for skill, m in metrics["per_skill"].items()]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in body]
    lines.append(f"\nSlot scores: {metrics['slot_metric']}.")
    oos = metrics.get("out_of_scope")
    if oos:
        lines.append(
            "\nOut of scope: "
            + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in oos.items() if v is not None)
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
                f"| {label} | {int(m['support'])} | {_pct(m['precision'])} | {_pct(m['recall'])} "
                f"| {_pct(m['f1-score'])} |"
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
    intent_ok = _frame(pred) == gold_frame
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


PROGRESS_FROM = 1000  # utterances: a progress bar on longer evaluations


def parse_with_progress(
    parser: Parser, texts: Sequence[str], *, batch_size: int
) -> list[ParseResult]:
    from tqdm.auto import tqdm

    results: list[ParseResult] = []
    chunk = batch_size * 8
    with tqdm(
        total=len(texts), desc="evaluating", unit="utt", disable=len(texts) < PROGRESS_FROM
    ) as bar:
        for start in range(0, len(texts), chunk):
            results += parser.parse(list(texts[start : start + chunk]), batch_size=batch_size)
            bar.update(min(chunk, len(texts) - start))
    return results


def write_sharing(model_dir: Path, out: Path) -> Path | None:
    """A softly shared model's learned mixing weights: sharing.json and a heat map per layer
    (sharing.png). None for hard sharing or a folder without PyTorch weights."""
    from nlu.sharing import mixing_report

    meta = modeldir.read_meta(model_dir)
    weights = model_dir / modeldir.WEIGHTS_FILE
    if meta.sharing is None or not weights.is_file():
        return None
    report = mixing_report(meta.sharing, weights)
    (out / "sharing.json").write_text(json.dumps(report, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = report["mixing"]
    units = report["units"]
    fig, axes = plt.subplots(1, len(layers), figsize=(2.6 * len(layers) + 1, 3), squeeze=False)
    for layer, (ax, matrix) in enumerate(zip(axes[0], layers, strict=True)):
        image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
        ax.set_title(f"after layer {layer + 1}", fontsize=8)
        ax.set_xticks(range(len(units)), units, rotation=90, fontsize=6)
        ax.set_yticks(range(len(units)), units if layer == 0 else [], fontsize=6)
    fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label="reads from (column) → weight")
    fig.suptitle(f"{report['mode']} mixing (rows read from columns)", fontsize=9)
    fig.savefig(out / "sharing.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out / "sharing.png"


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

    model_dir = modeldir.locate(model_dir)
    parser = Parser.from_pretrained(model_dir, backend=backend)
    examples: list[Example] = []
    for source in data:
        examples += load_split(source, split, **_template_options(Path(model_dir))).examples
    unseen = unseen_labels(parser.skills, examples)
    if any(unseen.values()):
        logger.warning("labels absent from the model (they count as errors): %s", unseen)
    texts = [ex.text for ex in examples]
    predictions = parse_with_progress(parser, texts, batch_size=batch_size)
    metrics = score(examples, predictions, tokenizer=parser.tokenizer)
    if parser.ood is not None:
        # The same model with plain softmax confidences: what temperature scaling changed.
        metrics["out_of_scope_detector"] = parser.ood.to_json()
        calibrated = parser.ood
        raw = predictions
        if (calibrated.router_temperature, calibrated.intent_temperature) != (1.0, 1.0):
            # A second pass only when temperatures changed the confidences.
            parser.ood = dataclasses.replace(
                calibrated, router_temperature=1.0, intent_temperature=1.0
            )
            try:
                raw = parser.parse(texts, batch_size=batch_size)
            finally:
                parser.ood = calibrated
        metrics["calibration_uncalibrated"] = {
            k: v for k, v in calibration_metrics(examples, raw).items() if k.endswith("_ece")
        }
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
        if metrics["calibration"]:
            plot_reliability(metrics["calibration"], out / "reliability.png")
        sharing = write_sharing(Path(model_dir), out)
        if sharing:
            logger.info("learned sharing weights: %s", sharing)
        with (out / "predictions.jsonl").open("w", encoding="utf-8") as handle:
            for ex, pred in zip(examples, predictions, strict=True):
                handle.write(json.dumps(prediction_row(ex, pred), ensure_ascii=False) + "\n")
    return metrics
