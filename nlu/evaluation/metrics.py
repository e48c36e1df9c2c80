"""Metrics: router accuracy, intent accuracy, entity-level slot P/R/F1 (seqeval), exact match,
out-of-scope and calibration scores, from gold examples and the parser's typed results.

Slot F1 is seqeval's strict IOB2 entity-level score (`mode="strict", scheme=IOB2`), never a
token-level F1. Gold and predicted spans are turned into tags over the same words with the one
alignment function (`nlu.model.alignment.spans_to_tags`) used in training.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2

from nlu.model.alignment import Tokenizer, encode, spans_to_tags
from nlu.model.ood import auroc, expected_calibration_error, fpr_at_95, reliability_bins
from nlu.result import ParseResult
from nlu.schema import Example, Span

logger = logging.getLogger(__name__)

SEQEVAL_MODE = "strict IOB2 (seqeval mode='strict', scheme=IOB2), entity level"


def pct(x: float) -> float:
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
    rows, lost = _scored_rows(examples, predictions, tokenizer)
    rejected = [(ex.in_scope, pred) for ex, pred in zip(examples, predictions, strict=True)]
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
        {"gold_intent": OUT_OF_SCOPE, "pred_intent": frame(pred)}
        for in_scope, pred in rejected
        if not in_scope
    ]
    return {
        "slot_metric": SEQEVAL_MODE,
        "overall": headline_scores(rows) if rows else None,
        "per_skill": {skill: headline_scores(subset) for skill, subset in sorted(by_skill.items())},
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


def headline_scores(subset: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline scores of a set of scored rows."""
    gold = [r["gold_tags"] for r in subset]
    pred = [r["pred_tags"] for r in subset]
    kwargs: dict[str, Any] = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    has_spans = any(t != "O" for seq in gold + pred for t in seq)
    n = len(subset)
    return {
        "n": n,
        "router_accuracy": pct(sum(r["router"] for r in subset) / n),
        "intent_accuracy": pct(sum(r["intent"] for r in subset) / n),
        "slot_precision": pct(precision_score(gold, pred, **kwargs)) if has_spans else 100.0,
        "slot_recall": pct(recall_score(gold, pred, **kwargs)) if has_spans else 100.0,
        "slot_f1": pct(f1_score(gold, pred, **kwargs)) if has_spans else 100.0,
        "exact_match": pct(sum(r["exact"] for r in subset) / n),
    }


def _scored_rows(
    examples: Sequence[Example], predictions: Sequence[ParseResult], tokenizer: Tokenizer
) -> tuple[list[dict[str, Any]], int]:
    """Each in-scope example against its prediction (tags over the same words, the verdicts),
    and how many gold spans cover no token."""
    # Score over the full text (no truncation) so gold spans past the model's window still count
    # as missed rather than vanishing from the denominator.
    full = getattr(tokenizer, "model_max_length", 512)
    encodings = encode(tokenizer, [ex.text for ex in examples], min(int(full), 4096))
    rows: list[dict[str, Any]] = []
    lost = 0
    for ex, pred, enc in zip(examples, predictions, encodings, strict=True):
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
                "pred_intent": frame(pred),
                "example": ex,
                "pred": pred,
            }
        )
    if lost:
        logger.warning(
            "%d gold spans cover no token (e.g. only characters the tokenizer drops)", lost
        )
    return rows, lost


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
            "precision": pct(p),
            "recall": pct(r),
            "f1": pct(2 * p * r / (p + r) if p + r else 0.0),
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


def frame(pred: ParseResult) -> str:
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
        "recall": pct(caught / n_oos) if n_oos else None,
        # Undefined without out-of-scope rows (every rejection is wrong, but there is nothing
        # to find): n/a, not 0.
        "precision": pct(caught / sum(said_oos)) if any(said_oos) and n_oos else None,
        "in_scope_rejected": pct(
            sum(s and not g for g, s in zip(gold_oos, said_oos, strict=True)) / n_in
        )
        if n_in
        else None,
    }
    scores_in = [p.oos_score for in_scope, p in rows if in_scope and p.oos_score is not None]
    scores_oos = [p.oos_score for in_scope, p in rows if not in_scope and p.oos_score is not None]
    if scores_in and scores_oos:
        out["auroc"] = round(auroc(scores_in, scores_oos), 4)
        out["fpr_at_95"] = pct(fpr_at_95(scores_in, scores_oos))
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
        "router_ece": pct(expected_calibration_error(router_conf, router_ok)),
        "intent_ece": pct(expected_calibration_error(intent_conf, intent_ok)),
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
