"""Train the real default encoder briefly on the shipped skills; check the hand-written tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from nlu.config import TrainConfig
from nlu.evaluate import evaluate
from nlu.train import train

SKILLS = Path(__file__).parents[1] / "skills"


@pytest.mark.slow
def test_default_encoder_generalises_to_hand_written_tests(tmp_path: Path) -> None:
    cfg = TrainConfig(
        data=[str(SKILLS)],
        encoder="default",
        samples_per_template=10,
        epochs=2,
        output_dir=str(tmp_path),
        seed=0,
    )
    result = train(**dataclasses.asdict(cfg))
    metrics = evaluate(model_dir=result.model_dir, data=[SKILLS], split="test")["overall"]
    assert metrics["n"] >= 150
    # Chance is 1/19 intents; these utterances were never produced by the templates.
    assert metrics["router_accuracy"] >= 90.0, metrics
    assert metrics["intent_accuracy"] >= 85.0, metrics
    assert metrics["slot_f1"] >= 75.0, metrics
    assert metrics["exact_match"] >= 60.0, metrics
