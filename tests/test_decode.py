"""Constrained decoding only ever produces valid IOB2, and beats greedy where greedy is invalid."""

from __future__ import annotations

from typing import Any

import numpy as np

from nlu.alignment import Encoding
from nlu.decode import bio_constraints, decode, softmax, viterbi
from nlu.labels import LabelIndex, SkillLabels
from nlu.result import Scored, SkillChoice


def is_valid_iob2(tags: list[str]) -> bool:
    prev = "O"
    for tag in tags:
        if tag.startswith("I-") and prev[2:] != tag[2:]:
            return False
        prev = tag
    return True


TAGS = ["O", "B-a", "I-a", "B-b", "I-b"]


def test_viterbi_never_emits_invalid_bio_on_random_scores() -> None:
    rng = np.random.default_rng(0)
    transition, start = bio_constraints(TAGS)
    greedy_invalid = 0
    for _ in range(500):
        scores = rng.normal(size=(rng.integers(1, 12), len(TAGS))).astype(np.float32) * 3
        path = [TAGS[i] for i in viterbi(scores, transition, start)]
        assert is_valid_iob2(path)
        greedy_invalid += not is_valid_iob2([TAGS[i] for i in scores.argmax(1)])
    assert greedy_invalid > 100  # the constraint is doing real work on these inputs


def test_viterbi_is_exact_best_valid_path() -> None:
    rng = np.random.default_rng(1)
    transition, start = bio_constraints(TAGS)
    import itertools

    for _ in range(50):
        scores = rng.normal(size=(4, len(TAGS))).astype(np.float32)
        best = max(
            (
                p
                for p in itertools.product(range(len(TAGS)), repeat=4)
                if is_valid_iob2([TAGS[i] for i in p])
            ),
            key=lambda p: sum(scores[w, t] for w, t in enumerate(p)),
        )
        assert viterbi(scores, transition, start) == list(best)


def test_i_after_o_becomes_b_or_o() -> None:
    transition, start = bio_constraints(TAGS)
    scores = np.log(np.array([[0.9, 0.05, 0.0, 0.05, 0.0], [0.1, 0.3, 0.6, 0.0, 0.0]]) + 1e-9)
    assert [TAGS[i] for i in viterbi(scores, transition, start)] == ["O", "B-a"]


def _two_skills() -> LabelIndex:
    return LabelIndex.of(
        [
            SkillLabels("alarm", ["cancel", "set", "snooze"], ["time"]),
            SkillLabels("music", ["play", "stop"], ["artist", "song"]),
        ]
    )


def _decode(router: list[float], intents: list[float], skill: str | None, top_k: int) -> Any:
    index = _two_skills()
    text = "play abba now"
    encoding = Encoding(
        input_ids=[101, 1, 2, 3, 102],
        words=[(0, 4), (5, 9), (10, 13)],
        word_starts=[1, 2, 3],
        truncated=False,
    )
    # Tags side by side: alarm O B-time I-time | music O B-artist I-artist B-song I-song.
    slots = np.zeros((5, 3 + 5), dtype=np.float32)
    slots[:, 0] = slots[:, 3] = 5.0  # O everywhere...
    slots[2, 4] = 10.0  # ...but "abba" is B-artist for music
    slots[2, 1] = 10.0  # ...and B-time for alarm
    return decode(
        text=text,
        encoding=encoding,
        router_logits=np.array(router, dtype=np.float32),
        intent_logits=np.array(intents, dtype=np.float32),
        slot_logits=slots,
        index=index,
        skill=skill,
        top_k=top_k,
    )


def test_decode_ranks_the_routed_skills_intents_and_maps_slots_to_text() -> None:
    result = _decode([0.0, 2.0], [9.0, 9.0, 9.0, 1.0, 3.0], skill=None, top_k=5)
    router = softmax(np.array([0.0, 2.0]))
    music = softmax(np.array([1.0, 3.0]))
    assert result.skill == SkillChoice("music", round(float(router[1]), 4), forced=False)
    # Only music's intents are ranked (alarm's larger logits are another skill's), best first.
    assert [i.name for i in result.intents] == ["stop", "play"]
    assert result.intent == Scored("stop", round(float(music[1]), 4))
    assert [(s.slot, s.value, s.start, s.end) for s in result.slots] == [("artist", "abba", 5, 9)]


def test_forcing_a_skill_keeps_the_routers_probability_of_it_and_top_k() -> None:
    result = _decode([0.0, 2.0], [1.0, 4.0, 2.0, 1.0, 3.0], skill="alarm", top_k=2)
    router = softmax(np.array([0.0, 2.0]))
    assert result.skill == SkillChoice("alarm", round(float(router[0]), 4), forced=True)
    assert [i.name for i in result.intents] == ["set", "snooze"]  # top 2 of alarm's 3
    assert [(s.slot, s.value) for s in result.slots] == [("time", "abba")]


def test_equal_intent_scores_keep_label_order() -> None:
    result = _decode([0.0, 2.0], [0.0, 0.0, 0.0, 2.0, 2.0], skill=None, top_k=1)
    assert [i.name for i in result.intents] == ["play"] and result.intent.name == "play"
