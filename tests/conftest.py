"""Shared fixtures: a tiny randomly initialised encoder, a tiny skill, and models trained on
them once per session (helpers that are not fixtures: tests/helpers.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers import FIXTURES

if TYPE_CHECKING:
    pass

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 2-layer, 64-wide BERT with the default encoder's real tokenizer (offline)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from nlu.model.encoders import resolve_encoder

    path = tmp_path_factory.mktemp("tiny_encoder")
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder("default"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_skill() -> Path:
    return FIXTURES / "skills"


@pytest.fixture(scope="session")
def make_config(tiny_encoder: str, tiny_skill: Path) -> Callable[..., Any]:
    """A training config that overfits the tiny skill in a few seconds; override any field."""
    from nlu.config import TrainConfig, replace

    def make(output_dir: Path, **changes: Any) -> TrainConfig:
        cfg = replace(
            TrainConfig(),
            data=[str(tiny_skill)],
            encoder=tiny_encoder,
            samples_per_template=10,
            dev_fraction=0.2,
            epochs=30,
            batch_size=8,
            learning_rate=1e-3,
            head_learning_rate=3e-3,
            warmup_ratio=0.0,
            output_dir=str(output_dir),
            seed=0,
            # Most tests check other things than rejection; tests/test_out_of_scope.py turns
            # the detector on.
            oos_method="none",
        )
        return replace(cfg, **changes)

    return make


@pytest.fixture(scope="session")
def trained(make_config: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny skill, overfitted (shared by the training, transfer and server tests)."""
    from nlu.training.train import train

    return train(make_config(tmp_path_factory.mktemp("run")))


@pytest.fixture(scope="session")
def extended(trained: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained tiny model with a second skill (timer) added by `nlu add-skill`."""
    from nlu.training.add_skill import add_skill

    out = tmp_path_factory.mktemp("extended")
    result = add_skill(
        model_dir=trained.model_dir, skill_data=[str(FIXTURES / "timer.jsonl")], out_dir=out
    )
    assert result.new_skills == ["timer"]
    assert result.replay_examples > 0  # found through the model's training_config.yaml
    assert result.model_dir == out / "model"  # a run folder, as `nlu train` writes
    return result.model_dir
