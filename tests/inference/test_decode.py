"""Constrained decoding only ever produces valid IOB2, and beats greedy where greedy is invalid."""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np

from nlu.inference.decode import (
    bio_constraints,
    decode,
    decode_batch,
    softmax,
    viterbi,
    viterbi_batch,
)
from nlu.inference.parser import length_groups
from nlu.labels import LabelIndex, SkillLabels
from nlu.model.alignment import Encoding
from nlu.result import ParseOptions, Scored, SkillChoice


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


def test_batched_viterbi_gives_each_row_its_own_best_path() -> None:
    rng = np.random.default_rng(2)
    transition, start = bio_constraints(TAGS)
    lengths = [3, 0, 7, 1, 7]
    scores = rng.normal(size=(len(lengths), 7, len(TAGS))).astype(np.float32) * 3
    paths = viterbi_batch(scores, lengths, transition, start)
    assert paths == [viterbi(scores[r, :n], transition, start) for r, n in enumerate(lengths)]
    assert [len(p) for p in paths] == lengths


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


def test_a_batch_decodes_each_row_exactly_as_alone() -> None:
    """Rows of different lengths, skills, options and scopes decoded together give, byte for
    byte, what each gives alone (the server decodes whole micro-batches)."""
    index = _two_skills()
    rng = np.random.default_rng(3)
    texts = ["play abba now", "wake me at seven tomorrow please", "stop", "snooze it"]
    encodings = []
    for text in texts:
        words, at = [], 0
        for word in text.split():
            at = text.index(word, at)
            words.append((at, at + len(word)))
            at += len(word)
        encodings.append(
            Encoding(
                input_ids=[101, *range(1, len(words) + 1), 102],
                words=words,
                word_starts=list(range(1, len(words) + 1)),
                truncated=False,
            )
        )
    width = max(len(e.input_ids) for e in encodings)
    router = rng.normal(size=(len(texts), 2)).astype(np.float32) * 2
    intents = rng.normal(size=(len(texts), 5)).astype(np.float32) * 2
    slots = rng.normal(size=(len(texts), width, 8)).astype(np.float32) * 3
    options = [
        ParseOptions(),
        ParseOptions(skill="music", top_k=1),
        ParseOptions(top_k=3),
        ParseOptions(skill="alarm"),
    ]
    oos = [0.1, 0.9, 0.7, None]
    in_scope = [True, True, False, True]
    batch = decode_batch(
        texts=texts,
        encodings=encodings,
        router_logits=router,
        intent_logits=intents,
        slot_logits=slots,
        index=index,
        options=options,
        oos_scores=oos,
        in_scope=in_scope,
        router_temperature=1.3,
        intent_temperature=0.7,
    )
    alone = [
        decode(
            text=texts[r],
            encoding=encodings[r],
            router_logits=router[r],
            intent_logits=intents[r],
            slot_logits=slots[r, : len(encodings[r].input_ids)],
            index=index,
            skill=options[r].skill,
            top_k=options[r].top_k,
            oos_score=oos[r],
            in_scope=in_scope[r],
            router_temperature=1.3,
            intent_temperature=0.7,
        )
        for r in range(len(texts))
    ]
    assert [json.dumps(r.to_dict()) for r in batch] == [json.dumps(r.to_dict()) for r in alone]
    assert batch[2].in_scope is False and batch[2].slots == []
    assert sum(len(r.slots) for r in batch) >= 2  # the random slot scores do tag some words


def test_length_groups_cover_every_row_once_at_the_least_padded_cost() -> None:
    rng = np.random.default_rng(4)

    def cost(groups: list[list[int]], lengths: list[int], pass_cost: int) -> int:
        return sum(len(g) * max(lengths[i] for i in g) + pass_cost for g in groups)

    for _ in range(200):
        lengths = [int(n) for n in rng.integers(3, 40, size=rng.integers(1, 9))]
        pass_cost = int(rng.integers(0, 60))
        groups = length_groups(lengths, pass_cost)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        # Best of every split of the rows sorted by length into consecutive passes.
        ordered = sorted(range(len(lengths)), key=lengths.__getitem__)
        best = min(
            cost(
                [ordered[a:b] for a, b in itertools.pairwise([0, *cuts, len(ordered)])],
                lengths,
                pass_cost,
            )
            for r in range(len(ordered))
            for cuts in itertools.combinations(range(1, len(ordered)), r)
        )
        assert cost(groups, lengths, pass_cost) == best
    assert length_groups([12] * 32) == [list(range(32))]  # like lengths: one pass
    assert len(length_groups([5] * 16 + [60] * 16)) == 2  # far apart: two
    assert length_groups([]) == []
