"""Character spans <-> tokens <-> BIO tags: the single place where this mapping happens.

Training (labels), evaluation (gold and predicted tag sequences for seqeval) and serving
(predicted tags back to character spans) all go through these functions, so there is no
train/serve skew.

Words are the tokenizer's own pre-tokenized words (`word_ids()` of a fast tokenizer); BERT-style
tokenizers split on whitespace and punctuation, so "7:30am," is the words "7", ":", "30am", ",".
Only the first sub-token of each word carries a label; every other position is ignored (-100).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from nlu.schema import Span

IGNORE_INDEX = -100

# Any fast (Rust-backed) transformers tokenizer: offsets and word ids need one.
Tokenizer = PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Encoding:
    """One tokenized text with the word structure needed to derive and decode tags."""

    input_ids: list[int]
    # Character range [start, end) of each word in the original text.
    words: list[tuple[int, int]]
    # Index into input_ids of the first sub-token of each word.
    word_starts: list[int]
    # True when the text was longer than max_length tokens; the tail was not seen by the model.
    truncated: bool


def check_tokenizer(tokenizer: Tokenizer) -> None:
    if not tokenizer.is_fast:
        raise ValueError(
            f"{type(tokenizer).__name__} is a slow tokenizer; nlu needs a fast (Rust) tokenizer "
            "for character offsets. Pick an encoder that ships tokenizer.json."
        )


def encode(tokenizer: Tokenizer, texts: Sequence[str], max_length: int) -> list[Encoding]:
    """Tokenize texts; truncation is reported per text rather than silently applied."""
    if not texts:  # the fast tokenizer fails on an empty batch rather than returning one
        return []
    batch = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
        return_overflowing_tokens=True,
        add_special_tokens=True,
    )
    sample_of_row = batch["overflow_to_sample_mapping"]
    out: list[Encoding | None] = [None] * len(texts)
    rows_per_sample = [0] * len(texts)
    for row, sample in enumerate(sample_of_row):
        rows_per_sample[sample] += 1
        if out[sample] is not None:
            continue  # overflow rows: we only keep the first window
        offsets = batch["offset_mapping"][row]
        words: list[tuple[int, int]] = []
        starts: list[int] = []
        last_word: int | None = None
        for position, word in enumerate(batch.word_ids(row)):
            if word is None:
                continue
            start, end = offsets[position]
            if word != last_word:
                words.append((start, end))
                starts.append(position)
                last_word = word
            else:
                words[-1] = (words[-1][0], max(words[-1][1], end))
        out[sample] = Encoding(
            input_ids=list(batch["input_ids"][row]),
            words=words,
            word_starts=starts,
            truncated=False,
        )
    encodings = []
    for sample, enc in enumerate(out):
        assert enc is not None
        if rows_per_sample[sample] > 1:
            enc = Encoding(enc.input_ids, enc.words, enc.word_starts, truncated=True)
        encodings.append(enc)
    return encodings


@dataclass(frozen=True)
class TagResult:
    tags: list[str]
    # Spans whose boundaries cut through a word (the whole word is tagged) or that cover no
    # word at all (e.g. cut off by truncation). Reported, never silently ignored.
    misaligned: list[Span]
    lost: list[Span]


def spans_to_tags(words: Sequence[tuple[int, int]], spans: Sequence[Span]) -> TagResult:
    """BIO tag per word: a word belongs to a span when their character ranges overlap."""
    tags = ["O"] * len(words)
    misaligned: list[Span] = []
    lost: list[Span] = []
    for span in sorted(spans):
        covered = [
            i
            for i, (start, end) in enumerate(words)
            if start < span.end and end > span.start and tags[i] == "O"
        ]
        if not covered:
            lost.append(span)
            continue
        first, last = words[covered[0]], words[covered[-1]]
        if (
            first[0] != span.start
            or last[1] != span.end
            or covered != list(range(covered[0], covered[-1] + 1))
        ):
            misaligned.append(span)
        for n, i in enumerate(covered):
            tags[i] = ("B-" if n == 0 else "I-") + span.slot
    return TagResult(tags=tags, misaligned=misaligned, lost=lost)


def tags_to_spans(
    words: Sequence[tuple[int, int]], tags: Sequence[str]
) -> list[tuple[Span, list[int]]]:
    """Spans (character offsets) from a BIO tag per word, with the word indices of each span.

    Expects a valid IOB2 sequence (what constrained decoding produces); a stray I- tag starts
    a new span, as seqeval's lenient reading would.
    """
    spans: list[tuple[Span, list[int]]] = []
    current: tuple[str, list[int]] | None = None

    def close() -> None:
        if current is not None:
            slot, members = current
            spans.append((Span(words[members[0]][0], words[members[-1]][1], slot), members))

    for i, tag in enumerate(tags):
        if tag == "O":
            close()
            current = None
        elif tag.startswith("I-") and current is not None and current[0] == tag[2:]:
            current[1].append(i)
        else:
            close()
            current = (tag[2:], [i])
    close()
    return spans


def pad_id(tokenizer: Tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def token_labels(encoding: Encoding, tags: Sequence[str], tag_ids: dict[str, int]) -> list[int]:
    """Per-token label ids: the word's tag on its first sub-token, IGNORE_INDEX elsewhere."""
    labels = [IGNORE_INDEX] * len(encoding.input_ids)
    for position, tag in zip(encoding.word_starts, tags, strict=True):
        labels[position] = tag_ids[tag]
    return labels
