"""Logits -> structured results. Shared by evaluation, `nlu predict` and the server.

The model (`nlu.model`) returns three named arrays per batch: router logits over skills, intent
logits for all skills concatenated, slot logits for all skills' tags concatenated. `LabelIndex`
knows which slice belongs to which skill; `decode` turns one row into the result a user sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from nlu.alignment import Encoding, tags_to_spans
from nlu.schema import SkillLabels

NEG_INF = -1e9


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=axis, keepdims=True)
    return out


def bio_constraints(tags: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Additive transition and start scores that forbid invalid IOB2 (I-x only after B-x/I-x)."""
    n = len(tags)
    transition = np.zeros((n, n), dtype=np.float32)
    start = np.zeros(n, dtype=np.float32)
    for j, tag in enumerate(tags):
        if tag.startswith("I-"):
            start[j] = NEG_INF
            for i, prev in enumerate(tags):
                if prev[2:] != tag[2:] or prev == "O":
                    transition[i, j] = NEG_INF
    return transition, start


def viterbi(scores: np.ndarray, transition: np.ndarray, start: np.ndarray) -> list[int]:
    """Best tag path for per-word scores [W, T] under the transition constraints."""
    if len(scores) == 0:
        return []
    best = start + scores[0]
    back = np.zeros(scores.shape, dtype=np.int64)
    for w in range(1, len(scores)):
        candidates = best[:, None] + transition  # [prev, next]
        back[w] = candidates.argmax(axis=0)
        best = candidates.max(axis=0) + scores[w]
    path = [int(best.argmax())]
    for w in range(len(scores) - 1, 0, -1):
        path.append(int(back[w, path[-1]]))
    return path[::-1]


@dataclass
class LabelIndex:
    """Where each skill's intents and tags sit in the concatenated logits."""

    skills: list[SkillLabels]

    @cached_property
    def names(self) -> list[str]:
        return [s.name for s in self.skills]

    @cached_property
    def position(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    @cached_property
    def intent_slices(self) -> list[slice]:
        return _slices([len(s.intents) for s in self.skills])

    @cached_property
    def tag_slices(self) -> list[slice]:
        return _slices([len(s.tags) for s in self.skills])

    @cached_property
    def constraints(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [bio_constraints(s.tags) for s in self.skills]

    @property
    def num_intents(self) -> int:
        return sum(len(s.intents) for s in self.skills)

    @property
    def num_tags(self) -> int:
        return sum(len(s.tags) for s in self.skills)


def _slices(sizes: Sequence[int]) -> list[slice]:
    out, offset = [], 0
    for size in sizes:
        out.append(slice(offset, offset + size))
        offset += size
    return out


def chosen_skill(router_logits: np.ndarray, index: LabelIndex, skill: str | None) -> int:
    """The skill a row is decoded as: the forced one, else the router's best."""
    return index.position[skill] if skill is not None else int(router_logits.argmax())


def decode(
    *,
    text: str,
    encoding: Encoding,
    router_logits: np.ndarray,
    intent_logits: np.ndarray,
    slot_logits: np.ndarray,
    index: LabelIndex,
    skill: str | None = None,
    top_k: int = 5,
) -> dict[str, Any]:
    """One row of model output -> {skill, intent, intents (top-k), slots, truncated}.

    router_logits [S], intent_logits [total intents], slot_logits [tokens, total tags].
    `skill` forces the skill instead of taking the router's choice.
    """
    router_probs = softmax(router_logits)
    k = chosen_skill(router_logits, index, skill)
    labels = index.skills[k]

    intent_probs = softmax(intent_logits[index.intent_slices[k]])
    ranking = np.argsort(-intent_probs, kind="stable")[: max(1, top_k)]

    word_logits = slot_logits[encoding.word_starts][:, index.tag_slices[k]]
    log_probs = np.log(softmax(word_logits) + 1e-12)
    transition, start = index.constraints[k]
    path = viterbi(log_probs, transition, start)
    tags = labels.tags
    slots = []
    for span, members in tags_to_spans(encoding.words, [tags[t] for t in path]):
        confidence = float(np.exp(np.mean([log_probs[w, path[w]] for w in members])))
        slots.append(
            {
                "slot": span.slot,
                "value": text[span.start : span.end],
                "start": span.start,
                "end": span.end,
                "confidence": round(confidence, 4),
            }
        )
    return {
        "text": text,
        "skill": {
            "name": labels.name,
            "confidence": round(float(router_probs[k]), 4),
            "forced": skill is not None,
        },
        "intent": {
            "name": labels.intents[int(ranking[0])],
            "confidence": round(float(intent_probs[ranking[0]]), 4),
        },
        "intents": [
            {"name": labels.intents[int(i)], "confidence": round(float(intent_probs[i]), 4)}
            for i in ranking
        ],
        "slots": slots,
        "truncated": encoding.truncated,
    }
