"""The file formats examples are read from and written to: JSONL (text + character spans),
JointBERT / Slot-Gated folders (BIO tags per whitespace token), and `datasets.Dataset`
(columns text, skill, intent, slots)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nlu.data.corpora import (
    jsonl_rows,
)
from nlu.data.skills import (
    MARKUP,
    parse_annotated,
)
from nlu.schema import DataError, Example, Span, raise_collected

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)


# -- JSONL ----------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[Example]:
    examples = []
    problems: list[str] = []  # every bad line, not only the first
    split: list[str] = []  # spans that cut a word: warned about once per file
    for number, row in jsonl_rows(path, problems):
        try:
            example = _jsonl_example(row, path, number)
        except DataError as err:
            problems.append(str(err))
            continue
        for span in example.slots:
            if split_word(example.text, span):
                split.append(
                    f"{path}:{number}: span {span.start}:{span.end} ({span.slot}) "
                    f"{example.value(span)!r} cuts a word of {example.text!r}"
                )
        examples.append(example)
    raise_collected(problems)
    if not examples:
        raise DataError(f"{path}: no examples")
    if split:
        more = f" (and {len(split) - 3} more)" if len(split) > 3 else ""
        logger.warning(
            "%s%s; a slot's offsets should cover whole words (end is exclusive)",
            "; ".join(split[:3]),
            more,
        )
    return examples


def _jsonl_example(row: Any, path: Path, number: int) -> Example:
    text = row.get("text")
    if "slots" not in row and isinstance(text, str) and (MARKUP.search(text) or "](" in text):
        # `[value](slot)` markup instead of offsets, as in tests.yaml.
        try:
            text, spans = parse_annotated(row["text"])
        except DataError as err:
            raise DataError(f"{path}:{number}: {err}") from err
        row = {**row, "text": text, "slots": [s.to_dict() for s in spans]}
    # `"skill": null` (intent null or absent) marks an out-of-scope example.
    out_of_scope = "skill" in row and row["skill"] is None
    needed = ("text",) if out_of_scope else ("text", "skill", "intent")
    missing = [k for k in needed if not isinstance(row.get(k), str)]
    if missing:
        raise DataError(
            f"{path}:{number}: missing or non-string field(s): {', '.join(missing)} "
            '(an out-of-scope example has "skill": null)'
        )
    if out_of_scope and (row.get("intent") is not None or row.get("slots")):
        raise DataError(
            f'{path}:{number}: an out-of-scope example ("skill": null) has no intent and no slots'
        )
    unknown = set(row) - {"text", "skill", "intent", "slots", "id"}
    if unknown:
        raise DataError(f"{path}:{number}: unknown field(s) {sorted(unknown)}")
    slots = row.get("slots", [])
    if not isinstance(slots, list) or not all(
        isinstance(s, dict)
        and all(_integer(s.get(k)) for k in ("start", "end"))
        and isinstance(s.get("slot"), str)
        for s in slots
    ):
        raise DataError(
            f'{path}:{number}: slots must be a list of {{"start": int, "end": int, "slot": str}}'
        )
    try:
        return Example.from_dict({**row, "slots": slots})
    except DataError as err:
        raise DataError(f"{path}:{number}: {err}") from err


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # true is not offset 1


def split_word(text: str, span: Span) -> bool:
    """Whether a span starts or ends inside a word (usually offsets off by one)."""
    inside = str.isalnum
    starts_inside = span.start > 0 and inside(text[span.start - 1]) and inside(text[span.start])
    ends_inside = span.end < len(text) and inside(text[span.end - 1]) and inside(text[span.end])
    return starts_inside or ends_inside


def write_jsonl(path: Path, examples: Iterable[Example]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for ex in examples:
            handle.write(json.dumps(ex.to_dict(), ensure_ascii=False) + "\n")


# -- JointBERT / Slot-Gated ---------------------------------------------------------------------


def bio_to_example(
    tokens: Sequence[str], tags: Sequence[str], *, skill: str, intent: str
) -> Example:
    """Whitespace tokens + BIO tags -> text joined by single spaces + character spans.

    An I- tag that does not continue a span of the same type starts a new span (the lenient
    reading conlleval and seqeval's default mode use).
    """
    text = " ".join(tokens)
    spans: list[Span] = []
    position = 0
    open_slot: str | None = None
    start = end = 0
    for token, tag in zip(tokens, tags, strict=True):
        t_start, t_end = position, position + len(token)
        position = t_end + 1
        continues = tag.startswith("I-") and open_slot == tag[2:]
        if open_slot is not None and not continues:
            spans.append(Span(start, end, open_slot))
            open_slot = None
        if tag == "O":
            continue
        if continues:
            end = t_end
        else:
            open_slot, start, end = tag[2:], t_start, t_end
    if open_slot is not None:
        spans.append(Span(start, end, open_slot))
    return Example(text, skill, intent, tuple(spans))


def read_jointbert(directory: Path, split: str, *, skill: str | None = None) -> list[Example]:
    folder = directory / split
    if split == "dev" and not folder.is_dir() and (directory / "valid").is_dir():
        folder = directory / "valid"
    paths = {name: folder / name for name in ("seq.in", "seq.out", "label")}
    for p in paths.values():
        if not p.is_file():
            raise DataError(
                f"{p}: missing; a JointBERT split folder holds seq.in, seq.out and label"
            )
    texts, tags, labels = (p.read_text(encoding="utf-8").splitlines() for p in paths.values())
    if not len(texts) == len(tags) == len(labels):
        raise DataError(
            f"{folder}: seq.in has {len(texts)} lines, seq.out {len(tags)}, label {len(labels)}; "
            "they must match line for line"
        )
    skill = skill or directory.name
    examples = []
    for number, (line, tag_line, label) in enumerate(
        zip(texts, tags, labels, strict=True), start=1
    ):
        # Split on any whitespace: SNIPS lines carry leading, trailing and double spaces.
        tokens, bio = line.split(), tag_line.split()
        if len(tokens) != len(bio):
            raise DataError(
                f"{paths['seq.out']}:{number}: {len(bio)} tags for {len(tokens)} tokens in {line!r}"
            )
        bad = [t for t in bio if t != "O" and not (t[:2] in ("B-", "I-") and len(t) > 2)]
        if bad:
            raise DataError(f"{paths['seq.out']}:{number}: invalid BIO tag(s) {bad}")
        if not label.strip():
            raise DataError(f"{paths['label']}:{number}: empty intent label")
        examples.append(bio_to_example(tokens, bio, skill=skill, intent=label.strip()))
    return examples


# -- datasets ------------------------------------------------------------------------------------


def dataset_features() -> datasets.Features:
    import datasets

    return datasets.Features(
        {
            "text": datasets.Value("string"),
            "skill": datasets.Value("string"),
            "intent": datasets.Value("string"),
            "slots": datasets.List(
                {
                    "start": datasets.Value("int32"),
                    "end": datasets.Value("int32"),
                    "slot": datasets.Value("string"),
                }
            ),
        }
    )


def to_dataset(examples: Sequence[Example]) -> datasets.Dataset:
    import datasets

    features = dataset_features()
    return datasets.Dataset.from_list([ex.to_dict() for ex in examples], features=features)


def from_dataset(dataset: datasets.Dataset) -> list[Example]:
    return [Example.from_dict(row) for row in dataset]
