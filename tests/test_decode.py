"""Constrained decoding only ever produces valid IOB2, and beats greedy where greedy is invalid."""

from __future__ import annotations

import numpy as np

from nlu.decode import bio_constraints, viterbi


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
