"""Evaluation reports: per-intent and per-slot tables and the worst errors."""

from __future__ import annotations

from nlu.schema import Example, Span
from tests.helpers import said


def test_evaluation_reports_per_intent_per_slot_and_worst_errors() -> None:
    from transformers import AutoTokenizer

    from nlu.evaluation.metrics import score
    from nlu.evaluation.report import format_table, prediction_row
    from nlu.model.encoders import resolve_encoder

    gold = [
        Example("alarm at 7", "alarm", "set", (Span(9, 10, "time"),)),
        Example("timer at 7", "timer", "start", (Span(9, 10, "time"),)),
        Example("alarm at 8", "alarm", "set", (Span(9, 10, "time"),)),
        Example("stop the timer", "timer", "stop"),
    ]
    predicted = [
        said("alarm at 7", "alarm", "set", 0.99, ("time", 9, 10)),
        said("timer at 7", "timer", "start", 0.6),  # slot missed
        said("alarm at 8", "alarm", "cancel", 0.97, ("time", 9, 10)),  # wrong intent
        said("stop the timer", "timer", "stop", 0.9),
    ]
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder("default"))
    metrics = score(gold, predicted, tokenizer=tokenizer)
    # The same slot name in two skills is two rows, not one merged score.
    assert metrics["per_slot_type"]["alarm/time"]["recall"] == 1.0
    assert metrics["per_slot_type"]["timer/time"]["recall"] == 0.0
    assert metrics["per_intent"]["alarm/set"] == {
        "n": 2,
        "precision": 100.0,
        "recall": 50.0,
        "f1": 66.67,
    }
    worst = metrics["worst_errors"]
    assert [w["text"] for w in worst] == ["alarm at 8", "timer at 7"]  # surest first
    assert worst[0]["predicted"] == "alarm/cancel time='8'" and worst[1]["wrong"] == "slots"
    table = format_table(metrics)
    assert "| alarm/time | 2 |" in table and "## Worst errors" in table
    row = prediction_row(gold[1], predicted[1])
    assert (row["correct"], row["intent_correct"], row["slots_correct"]) == (False, True, False)
    assert row["gold"]["slots"][0]["value"] == "7"
