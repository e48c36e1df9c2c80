"""Logits -> structured results. Shared by evaluation, `nlu predict` and the server.

The model (`nlu.model`) returns three named arrays per batch: router logits over skills, intent
logits for all skills concatenated, slot logits for all skills' tags concatenated.
`nlu.labels.LabelIndex` knows which slice belongs to which skill; `decode` turns one row into
the `ParseResult` a user sees.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime

import numpy as np

from nlu.alignment import Encoding, tags_to_spans
from nlu.labels import LabelIndex
from nlu.resolve import resolve
from nlu.result import ParseResult, Scored, SkillChoice, SlotValue

NEG_INF = -1e9


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=axis, keepdims=True)
    return out


def bio_constraints(tags: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Additive transition and start scores that forbid invalid IOB2 (I-x only after B-x/I-x).

    Cached per tag set: built once per skill, not once per parsed text."""
    return _constraints(tuple(tags))


@functools.cache
def _constraints(tags: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
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
    oos_score: float | None = None,
    in_scope: bool = True,
    router_temperature: float = 1.0,
    intent_temperature: float = 1.0,
    reference_time: datetime | None = None,
) -> ParseResult:
    """One row of model output -> its ParseResult.

    router_logits [S], intent_logits [total intents], slot_logits [tokens, total tags].
    `skill` forces the skill instead of taking the router's choice. Temperatures (fitted on dev,
    see `nlu.ood`) make the confidences calibrated; 1.0 leaves the softmax as it is.
    """
    router_probs = softmax(router_logits / router_temperature)
    k = chosen_skill(router_logits, index, skill)
    labels = index.skills[k]
    depth = max(1, top_k)
    skills = [
        Scored(index.names[int(i)], round(float(router_probs[i]), 4))
        for i in np.argsort(-router_probs, kind="stable")[:depth]
    ]

    intent_probs = softmax(intent_logits[index.intent_slices[k]] / intent_temperature)
    ranking = np.argsort(-intent_probs, kind="stable")[:depth]
    intents = [Scored(labels.intents[int(i)], round(float(intent_probs[i]), 4)) for i in ranking]
    score = None if oos_score is None else round(float(oos_score), 4)
    if not in_scope:
        return ParseResult(
            text=text,
            skill=None,
            intent=None,
            intents=intents,
            slots=[],
            truncated=encoding.truncated,
            in_scope=False,
            oos_score=score,
            skills=skills,
        )

    word_logits = slot_logits[encoding.word_starts][:, index.tag_slices[k]]
    log_probs = np.log(softmax(word_logits) + 1e-12)
    tags = labels.tags
    path = viterbi(log_probs, *bio_constraints(tags))
    slots = []
    for span, members in tags_to_spans(encoding.words, [tags[t] for t in path]):
        confidence = float(np.exp(np.mean([log_probs[w, path[w]] for w in members])))
        value = text[span.start : span.end]
        catalog = index.catalogs.get((labels.name, span.slot))
        resolution = resolve(value, catalog, reference=reference_time) if catalog else None
        slots.append(
            SlotValue(
                slot=span.slot,
                value=value,
                start=span.start,
                end=span.end,
                confidence=round(confidence, 4),
                resolved=resolution.value if resolution else None,
                resolution=resolution.status if resolution else None,
            )
        )
    return ParseResult(
        text=text,
        skill=SkillChoice(
            name=labels.name,
            confidence=round(float(router_probs[k]), 4),
            forced=skill is not None,
        ),
        intent=intents[0],
        intents=intents,
        slots=slots,
        truncated=encoding.truncated,
        in_scope=True,
        oos_score=score,
        skills=skills,
    )
