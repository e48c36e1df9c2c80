"""Examples -> model inputs: token ids and label ids (featurize), and padded named batches.

One padding function serves training batches (torch, with -100 for ignored label positions)
and parsing batches (numpy, for either backend), so both see the same inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from nlu.labels import LabelIndex
from nlu.model.alignment import (
    IGNORE_INDEX,
    Encoding,
    Tokenizer,
    encode,
    spans_to_tags,
    token_labels,
)
from nlu.schema import Example

if TYPE_CHECKING:
    import datasets
    import torch

logger = logging.getLogger(__name__)

LABELS = ("skill_ids", "intent_labels", "slot_labels")


def pad(rows: Sequence[Sequence[int]], value: int) -> np.ndarray:
    """[len(rows), longest] int64, right-padded with `value` (dynamic padding)."""
    out = np.full((len(rows), max(len(r) for r in rows)), value, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def model_inputs(ids: Sequence[Sequence[int]], pad_id: int) -> dict[str, np.ndarray]:
    """input_ids and attention_mask for token id rows of any lengths."""
    return {"input_ids": pad(ids, pad_id), "attention_mask": pad([[1] * len(r) for r in ids], 0)}


def encodings_inputs(encodings: Sequence[Encoding], pad_id: int) -> dict[str, np.ndarray]:
    return model_inputs([e.input_ids for e in encodings], pad_id)


def collate(rows: Sequence[dict[str, Any]], *, pad_id: int) -> dict[str, torch.Tensor]:
    """Featurized rows -> a named training batch; padded label positions are -100."""
    import torch

    batch = model_inputs([r["input_ids"] for r in rows], pad_id)
    batch["slot_labels"] = pad([r["slot_labels"] for r in rows], IGNORE_INDEX)
    batch["skill_ids"] = np.array([r["skill_ids"] for r in rows], dtype=np.int64)
    batch["intent_labels"] = np.array([r["intent_labels"] for r in rows], dtype=np.int64)
    return {k: torch.from_numpy(v) for k, v in batch.items()}


def featurize(
    examples: Sequence[Example], *, tokenizer: Tokenizer, index: LabelIndex, max_length: int
) -> datasets.Dataset:
    """Examples -> a datasets.Dataset of input ids and label ids (-100 where ignored).

    Spans that cut through a word, cover no token, or texts cut by max_length are logged with
    examples, never silently dropped."""
    from nlu.data.formats import to_dataset

    problems: dict[str, list[str]] = {"misaligned": [], "lost": [], "truncated": []}

    def convert(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"input_ids": [], **{k: [] for k in LABELS}}
        for row, enc in enumerate(encode(tokenizer, batch["text"], max_length)):
            ex = Example.from_dict({k: batch[k][row] for k in ("text", "skill", "intent", "slots")})
            tags = spans_to_tags(enc.words, ex.slots)
            for kind, spans in (("misaligned", tags.misaligned), ("lost", tags.lost)):
                problems[kind] += [f"{ex.text!r} [{s.start}:{s.end}] {s.slot}" for s in spans]
            if enc.truncated:
                problems["truncated"].append(repr(ex.text))
            out["input_ids"].append(enc.input_ids)
            if ex.skill is None or ex.intent is None:  # out of scope: no skill, intent or slot
                out["skill_ids"].append(IGNORE_INDEX)
                out["intent_labels"].append(IGNORE_INDEX)
                out["slot_labels"].append([IGNORE_INDEX] * len(enc.input_ids))
                continue
            out["skill_ids"].append(index.position[ex.skill])
            out["intent_labels"].append(index.intent_ids[ex.skill][ex.intent])
            out["slot_labels"].append(token_labels(enc, tags.tags, index.tag_ids[ex.skill]))
        return out

    dataset = to_dataset(examples)
    features = dataset.map(
        convert, batched=True, remove_columns=dataset.column_names, load_from_cache_file=False
    )
    for kind, items in problems.items():
        if items:
            logger.warning(
                "%d training spans/texts %s (max_length=%d); first: %s",
                len(items),
                {
                    "misaligned": "cut through a word (the whole word is tagged)",
                    "lost": "cover no token and are NOT learned",
                    "truncated": "are longer than max_length and were truncated",
                }[kind],
                max_length,
                items[:3],
            )
    return features
