"""Character spans <-> word BIO tags <-> spans must round-trip on awkward text."""

from __future__ import annotations

import pytest

from nlu.model.alignment import IGNORE_INDEX, encode, spans_to_tags, tags_to_spans, token_labels
from nlu.model.encoders import resolve_encoder
from nlu.schema import DataError, Example, Span


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_encoder("default"))


def spans_of(text: str, *parts: tuple[str, str]) -> tuple[Span, ...]:
    out, cursor = [], 0
    for value, slot in parts:
        start = text.index(value, cursor)
        out.append(Span(start, start + len(value), slot))
        cursor = start + len(value)
    return tuple(out)


TRICKY = [
    ("wake me at 7:30am, please!", [("7:30am", "time")]),
    ("play   the    beatles  now", [("the    beatles", "artist")]),
    (
        "weather in São Paulo on día de los muertos",
        [("São Paulo", "city"), ("día de los muertos", "date")],
    ),
    ("set the thermostat to 21°C", [("21°C", "temperature")]),
    (
        "play électro-swing by Caravan Palace",
        [("électro-swing", "genre"), ("Caravan Palace", "artist")],
    ),
    ("remind me 😀 at noon", [("noon", "time")]),
    ("call o'connor-smith at 555-0199", [("o'connor-smith", "contact"), ("555-0199", "number")]),
    ("unbelievablyverylongwordpiece test", [("unbelievablyverylongwordpiece", "thing")]),
    ("北京 weather tomorrow", [("北京", "city"), ("tomorrow", "date")]),
    ("  leading and trailing  ", [("leading", "a"), ("trailing", "b")]),
    ("back-to-back spans", [("back", "a"), ("to", "b"), ("back", "c")]),
]


@pytest.mark.parametrize(("text", "parts"), TRICKY)
def test_spans_round_trip_through_bio(tokenizer, text: str, parts: list[tuple[str, str]]) -> None:  # type: ignore[no-untyped-def]
    spans = spans_of(text, *parts)
    (enc,) = encode(tokenizer, [text], max_length=64)
    result = spans_to_tags(enc.words, spans)
    assert result.misaligned == [] and result.lost == []
    # Valid IOB2 by construction.
    for prev, tag in zip(["O", *result.tags], result.tags, strict=False):
        if tag.startswith("I-"):
            assert prev[2:] == tag[2:]
    decoded = [span for span, _ in tags_to_spans(enc.words, result.tags)]
    assert decoded == list(spans)
    assert [text[s.start : s.end] for s in decoded] == [v for v, _ in parts]


def test_sub_tokens_after_the_first_are_ignored(tokenizer) -> None:  # type: ignore[no-untyped-def]
    text = "play unbelievablyverylongwordpiece"
    (enc,) = encode(tokenizer, [text], max_length=64)
    tags = spans_to_tags(enc.words, spans_of(text, ("unbelievablyverylongwordpiece", "x"))).tags
    labels = token_labels(enc, tags, {"O": 0, "B-x": 1, "I-x": 2})
    assert labels[0] == IGNORE_INDEX and labels[-1] == IGNORE_INDEX  # [CLS], [SEP]
    assert labels[1:3] == [0, 1]
    assert len(enc.input_ids) > 4  # the long word really is split into several pieces
    assert set(labels[3:]) == {IGNORE_INDEX}


def test_span_cutting_through_a_word_is_reported(tokenizer) -> None:  # type: ignore[no-untyped-def]
    text = "turn on the lamplight"
    (enc,) = encode(tokenizer, [text], max_length=64)
    result = spans_to_tags(enc.words, [Span(12, 16, "device")])  # "lamp" inside "lamplight"
    assert result.misaligned == [Span(12, 16, "device")]
    assert result.tags[-1] == "B-device"


def test_truncation_is_flagged_and_spans_past_it_are_lost(tokenizer) -> None:  # type: ignore[no-untyped-def]
    text = "one two three four five six seven eight nine ten"
    short, full = encode(tokenizer, [text, "one two"], max_length=6)
    assert short.truncated and not full.truncated
    assert len(short.input_ids) == 6
    result = spans_to_tags(short.words, spans_of(text, ("ten", "n")))
    assert result.lost == [Span(45, 48, "n")]


def test_example_rejects_bad_spans() -> None:
    with pytest.raises(DataError, match="outside the text"):
        Example("hello", "s", "i", (Span(0, 9, "x"),))
    with pytest.raises(DataError, match="overlap"):
        Example("hello world", "s", "i", (Span(0, 5, "a"), Span(3, 8, "b")))
    with pytest.raises(DataError, match="whitespace"):
        Example("hello world", "s", "i", (Span(0, 6, "a"),))


def test_an_empty_batch_encodes_to_nothing(tokenizer) -> None:  # type: ignore[no-untyped-def]
    # Distillation encodes "the gold texts no teacher answered", which is often none at all.
    assert encode(tokenizer, [], 16) == []
    assert len(encode(tokenizer, ["turn on the light"], 16)) == 1
