"""Logits -> structured results. Shared by evaluation, `nlu predict` and the server.

The model (`nlu.model.joint`) returns three named arrays per batch: router logits over skills,
intent logits for all skills concatenated, slot logits for all skills' tags concatenated.
`nlu.labels.LabelIndex` knows which slice belongs to which skill; `decode` turns one row into
the `ParseResult` a user sees.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime

import numpy as np

from nlu.labels import LabelIndex, SkillLabels
from nlu.model.alignment import Encoding, tags_to_spans
from nlu.resolve import Reference, make_reference, resolve
from nlu.result import ParseOptions, ParseResult, Scored, SkillChoice, SlotValue

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
    return viterbi_batch(scores[None], [len(scores)], transition, start)[0]


def viterbi_batch(
    scores: np.ndarray, lengths: Sequence[int], transition: np.ndarray, start: np.ndarray
) -> list[list[int]]:
    """`viterbi` for rows of one tag set at once: scores [R, W, T], row r's words the first
    lengths[r]. One set of array operations per word position for the whole batch (not per
    text); every row's arithmetic is exactly that of decoding it alone."""
    rows = len(lengths)
    width = max(lengths, default=0)
    if width == 0:
        return [[] for _ in range(rows)]
    best = start + scores[:, 0]  # [R, T]
    back = np.zeros((rows, width, scores.shape[2]), dtype=np.int64)
    ends = np.asarray(lengths)
    for w in range(1, width):
        candidates = best[:, :, None] + transition  # [R, prev, next]
        back[:, w] = candidates.argmax(axis=1)
        stepped = candidates.max(axis=1) + scores[:, w]
        # Rows already past their last word keep their final scores.
        best = np.where((ends > w)[:, None], stepped, best)
    paths: list[list[int]] = []
    for r, length in enumerate(lengths):
        if length == 0:
            paths.append([])
            continue
        path = [int(best[r].argmax())]
        for w in range(length - 1, 0, -1):
            path.append(int(back[r, w, path[-1]]))
        paths.append(path[::-1])
    return paths


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
    """One row of model output -> its ParseResult (`decode_batch` of a batch of one).

    router_logits [S], intent_logits [total intents], slot_logits [tokens, total tags].
    `skill` forces the skill instead of taking the router's choice.
    """
    return decode_batch(
        texts=[text],
        encodings=[encoding],
        router_logits=router_logits[None],
        intent_logits=intent_logits[None],
        slot_logits=slot_logits[None],
        index=index,
        options=[ParseOptions(skill=skill, top_k=top_k, reference_time=reference_time)],
        oos_scores=[oos_score],
        in_scope=[in_scope],
        router_temperature=router_temperature,
        intent_temperature=intent_temperature,
    )[0]


def decode_batch(
    *,
    texts: Sequence[str],
    encodings: Sequence[Encoding],
    router_logits: np.ndarray,
    intent_logits: np.ndarray,
    slot_logits: np.ndarray,
    index: LabelIndex,
    options: Sequence[ParseOptions],
    oos_scores: Sequence[float | None],
    in_scope: Sequence[bool],
    router_temperature: float = 1.0,
    intent_temperature: float = 1.0,
) -> list[ParseResult]:
    """A batch of model output -> one ParseResult per row.

    router_logits [B, S], intent_logits [B, total intents], slot_logits [B, tokens, total tags].
    Each row's `options` may force a skill (`skill`), set `top_k` and the `reference_time` of
    relative dates. Temperatures (fitted on dev, see `nlu.model.ood`) make the confidences
    calibrated; 1.0 leaves the softmax as it is. The array work runs once per batch and skill
    (the server decodes whole micro-batches); the per-row arithmetic is exactly that of a batch
    of one, so decoding never makes a text's result depend on its batch-mates (the logits of an
    int8 model can: its activations are quantised per batch).
    """
    router_probs = softmax(router_logits / router_temperature)
    skill_ranking = np.argsort(-router_probs, axis=-1, kind="stable")
    chosen = [
        chosen_skill(router_logits[row], index, opts.skill) for row, opts in enumerate(options)
    ]
    intent_probs, intent_ranking, slot_paths = _decode_per_skill(
        chosen, encodings, intent_logits, slot_logits, index, in_scope, intent_temperature
    )
    results = []
    for row, (text, encoding, opts) in enumerate(zip(texts, encodings, options, strict=True)):
        k = chosen[row]
        labels = index.skills[k]
        depth = max(1, opts.top_k)
        skills = [
            Scored(index.names[int(i)], round(float(router_probs[row, i]), 4))
            for i in skill_ranking[row, :depth]
        ]
        intents = [
            Scored(labels.intents[int(i)], round(float(intent_probs[row][i]), 4))
            for i in intent_ranking[row][:depth]
        ]
        oos_score = oos_scores[row]
        skill, slots = None, []
        if in_scope[row]:
            skill = SkillChoice(
                name=labels.name,
                confidence=round(float(router_probs[row, k]), 4),
                forced=opts.skill is not None,
            )
            log_probs, path = slot_paths[row]
            slots = slot_values(text, encoding, log_probs, path, labels, index, opts)
        results.append(
            ParseResult(
                text=text,
                skill=skill,
                intent=intents[0] if in_scope[row] else None,
                intents=intents,
                slots=slots,
                truncated=encoding.truncated,
                in_scope=bool(in_scope[row]),
                oos_score=None if oos_score is None else round(float(oos_score), 4),
                skills=skills,
            )
        )
    return results


def _decode_per_skill(
    chosen: Sequence[int],
    encodings: Sequence[Encoding],
    intent_logits: np.ndarray,
    slot_logits: np.ndarray,
    index: LabelIndex,
    in_scope: Sequence[bool],
    intent_temperature: float,
) -> tuple[list[np.ndarray], list[np.ndarray], dict[int, tuple[np.ndarray, list[int]]]]:
    """The array work, once per chosen skill: each row's intent probabilities and ranking, and
    for in-scope rows the slot log-probabilities per word and the constrained Viterbi path."""
    intent_probs: list[np.ndarray] = [np.empty(0)] * len(chosen)
    intent_ranking: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(chosen)
    slot_paths: dict[int, tuple[np.ndarray, list[int]]] = {}
    for k in sorted(set(chosen)):
        rows = [row for row, c in enumerate(chosen) if c == k]
        probs = softmax(intent_logits[rows][:, index.intent_slices[k]] / intent_temperature)
        ranking = np.argsort(-probs, axis=-1, kind="stable")
        for i, row in enumerate(rows):
            intent_probs[row], intent_ranking[row] = probs[i], ranking[i]
        tagged = [row for row in rows if in_scope[row]]
        if not tagged:
            continue
        lengths = [len(encodings[row].word_starts) for row in tagged]
        starts = np.zeros((len(tagged), max(max(lengths), 1)), dtype=np.int64)
        for i, row in enumerate(tagged):
            starts[i, : lengths[i]] = encodings[row].word_starts
        word_logits = slot_logits[np.asarray(tagged)[:, None], starts][..., index.tag_slices[k]]
        log_probs = np.log(softmax(word_logits) + 1e-12)
        paths = viterbi_batch(log_probs, lengths, *bio_constraints(index.skills[k].tags))
        for i, row in enumerate(tagged):
            slot_paths[row] = (log_probs[i, : lengths[i]], paths[i])
    return intent_probs, intent_ranking, slot_paths


def slot_values(
    text: str,
    encoding: Encoding,
    log_probs: np.ndarray,
    path: list[int],
    labels: SkillLabels,
    index: LabelIndex,
    options: ParseOptions,
) -> list[SlotValue]:
    """The spans of a tag path as slot values, each with its confidence (the geometric mean of
    its words' tag probabilities) and its resolved value."""
    slots = []
    tags = labels.tags
    reference: Reference | None = None  # one "now" for all of a text's slots, made when needed
    for span, members in tags_to_spans(encoding.words, [tags[t] for t in path]):
        word_scores = log_probs[members, [path[w] for w in members]]
        # np.mean's own arithmetic (a float32 sum, then / n) without its per-call overhead.
        confidence = float(np.exp(np.add.reduce(word_scores) / len(members)))
        value = text[span.start : span.end]
        catalog = index.catalogs.get((labels.name, span.slot))
        resolution = None
        if catalog is not None:
            if catalog.kind and reference is None:
                reference = make_reference(options.reference_time, options.timezone, options.locale)
            resolution = resolve(value, catalog, reference=reference)
        slots.append(
            SlotValue(
                slot=span.slot,
                value=value,
                start=span.start,
                end=span.end,
                confidence=round(confidence, 4),
                resolved=resolution.value if resolution else None,
                resolution=resolution.status if resolution else None,
                grain=resolution.grain if resolution else None,
                candidates=list(resolution.candidates)
                if resolution and resolution.candidates
                else None,
            )
        )
    return slots
