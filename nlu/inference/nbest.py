"""One result from an ASR n-best list: the hypotheses of one utterance, each parsed, vote for
their frames.

Each hypothesis i has an ASR confidence a_i (normalised over the list; all zero: equal) and a
parse with skill confidence s_i and intent confidence t_i. Hypothesis i gives the mass
a_i · s_i · t_i to its frame (skill, intent), or a_i to "out of scope" when it was rejected.
The frame with the most mass wins; the result is the parse of the hypothesis that gave it the
most (so `text` and slot offsets refer to that hypothesis, whose index is `hypothesis`), with
confidences replaced by shares of the total mass: `skill.confidence` the skill's share,
`intent.confidence` the frame's, and `skills` / `intents` ranked by those shares. A
recognition error in the top hypothesis that breaks its parse is outvoted by the others that
agree; a single hypothesis gives exactly its own parse (with `hypothesis` 0).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence

from nlu.result import ParseResult, Scored, SkillChoice

Frame = tuple[str | None, str | None]


def combine(results: Sequence[ParseResult], asr: Sequence[float], *, top_k: int) -> ParseResult:
    if not results or len(results) != len(asr):
        raise ValueError(f"{len(results)} parses for {len(asr)} ASR confidences")
    if any(a < 0 for a in asr):
        raise ValueError("ASR confidences must be >= 0")
    total_asr = sum(asr)
    weights = [a / total_asr for a in asr] if total_asr > 0 else [1 / len(asr)] * len(asr)
    frames: dict[Frame, float] = defaultdict(float)
    skills: dict[str, float] = defaultdict(float)
    best: dict[Frame, tuple[float, int]] = {}
    for i, (result, weight) in enumerate(zip(results, weights, strict=True)):
        frame, mass = _vote(result, weight)
        frames[frame] += mass
        if frame[0] is not None:
            skills[frame[0]] += mass
        if frame not in best or mass > best[frame][0]:
            best[frame] = (mass, i)
    total = sum(frames.values()) or 1.0
    winner = max(frames, key=lambda f: (frames[f], -best[f][1]))
    chosen = best[winner][1]
    result = dataclasses.replace(results[chosen], hypothesis=chosen)
    ranked_skills = [
        Scored(name, round(mass / total, 4))
        for name, mass in sorted(skills.items(), key=lambda kv: -kv[1])[: max(1, top_k)]
    ]
    result = dataclasses.replace(result, skills=ranked_skills or result.skills)
    if winner[0] is None or result.skill is None or result.intent is None:
        return result
    intents = sorted(
        ((f[1], m) for f, m in frames.items() if f[0] == winner[0] and f[1] is not None),
        key=lambda kv: -kv[1],
    )
    return dataclasses.replace(
        result,
        skill=SkillChoice(winner[0], round(skills[winner[0]] / total, 4), result.skill.forced),
        intent=Scored(winner[1] or "", round(frames[winner] / total, 4)),
        intents=[Scored(name or "", round(m / total, 4)) for name, m in intents[: max(1, top_k)]],
    )


def _vote(result: ParseResult, weight: float) -> tuple[Frame, float]:
    if not result.in_scope or result.skill is None or result.intent is None:
        return (None, None), weight
    return (
        (result.skill.name, result.intent.name),
        weight * result.skill.confidence * result.intent.confidence,
    )
