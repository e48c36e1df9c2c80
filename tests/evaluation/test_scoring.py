"""`score` on hand-made predictions: what counts as right, and the conventions at the edges."""

from __future__ import annotations

from typing import Any

import pytest

from nlu.evaluation.metrics import score
from nlu.result import ParseResult, Scored, SkillChoice, SlotValue
from nlu.schema import Example, Span


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    from nlu.model.encoders import resolve_encoder

    return AutoTokenizer.from_pretrained(resolve_encoder("default"))


def predicted(text: str, skill: str, intent: str, *slots: tuple[str, int, int]) -> ParseResult:
    values = [SlotValue(name, text[a:b], a, b, 1.0) for name, a, b in slots]
    return ParseResult(
        text,
        SkillChoice(skill, 1.0, False),
        Scored(intent, 1.0),
        [Scored(intent, 1.0)],
        values,
        False,
    )


TEXT = "wake me at 7 am"
GOLD = Example(TEXT, "alarm", "set", (Span(11, 15, "time"),))


def test_a_perfect_prediction_scores_100(tokenizer: Any) -> None:
    m = score([GOLD], [predicted(TEXT, "alarm", "set", ("time", 11, 15))], tokenizer=tokenizer)
    assert m["overall"]["exact_match"] == 100.0 and m["overall"]["slot_f1"] == 100.0


def test_the_wrong_skill_loses_the_intent_even_with_the_same_intent_name(tokenizer: Any) -> None:
    m = score([GOLD], [predicted(TEXT, "timer", "set", ("time", 11, 15))], tokenizer=tokenizer)
    overall = m["overall"]
    assert (overall["router_accuracy"], overall["intent_accuracy"], overall["exact_match"]) == (
        0.0,
        0.0,
        0.0,
    )
    assert overall["slot_f1"] == 100.0  # spans are scored on their own
    assert m["confusion"]["labels"] == ["alarm/set", "timer/set"]


def test_a_partial_span_is_a_miss_entity_level(tokenizer: Any) -> None:
    # "7" alone instead of "7 am": strict entity-level F1 counts it wrong, not half right.
    m = score([GOLD], [predicted(TEXT, "alarm", "set", ("time", 11, 12))], tokenizer=tokenizer)
    assert m["overall"]["slot_f1"] == 0.0 and m["overall"]["exact_match"] == 0.0


def test_a_gold_span_on_no_token_is_counted_and_never_an_exact_match(tokenizer: Any) -> None:
    text = "set it \u200b now"  # a zero-width space: the tokenizer drops it
    gold = Example(text, "alarm", "set", (Span(7, 8, "time"),))
    m = score([gold], [predicted(text, "alarm", "set")], tokenizer=tokenizer)
    assert m["gold_spans_not_on_tokens"] == 1
    assert m["overall"]["exact_match"] == 0.0


def test_no_slots_anywhere_scores_slot_f1_100_and_per_skill(tokenizer: Any) -> None:
    examples = [Example("stop", "music", "stop"), Example("hello", "chat", "greet")]
    preds = [predicted("stop", "music", "stop"), predicted("hello", "chat", "bye")]
    m = score(examples, preds, tokenizer=tokenizer)
    assert m["overall"]["slot_f1"] == 100.0
    assert m["per_skill"]["music"]["exact_match"] == 100.0
    assert m["per_skill"]["chat"]["intent_accuracy"] == 0.0
    assert m["overall"]["intent_accuracy"] == 50.0


def test_mismatched_lengths_are_an_error(tokenizer: Any) -> None:
    with pytest.raises(ValueError, match="1 examples but 0 predictions"):
        score([GOLD], [], tokenizer=tokenizer)
