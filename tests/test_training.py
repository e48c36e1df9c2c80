"""Overfit a tiny skill with a tiny encoder; save -> load and batch vs single agree."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from nlu.alignment import encode
from nlu.config import TrainConfig
from nlu.data.loaders import load_split
from nlu.evaluate import evaluate, score
from nlu.model import JointModel, ModelDirError
from nlu.predict import Parser, UnknownSkillError, pad_batch
from nlu.train import TrainResult, train


def test_overfits_tiny_skill_to_100_percent(trained: TrainResult, tiny_skill: Path) -> None:
    parser = Parser.from_pretrained(trained.model_dir)
    examples = load_split(
        tiny_skill, "train", samples_per_template=10, dev_fraction=0.2, seed=0
    ).examples
    predictions = parser.parse([e.text for e in examples])
    metrics = score(examples, predictions, tokenizer=parser.tokenizer)["overall"]
    assert metrics["exact_match"] == 100.0, metrics
    assert metrics["intent_accuracy"] == 100.0 and metrics["slot_f1"] == 100.0
    # Decoded slots point at the right characters of the original text.
    (result,) = parser.parse(["set the living room lights to warm white"])
    assert result["intent"]["name"] == "set_color"
    assert [(s["slot"], s["value"]) for s in result["slots"]] == [
        ("room", "living room"),
        ("color", "warm white"),
    ]
    first = result["slots"][0]
    assert result["text"][first["start"] : first["end"]] == "living room"


def test_model_dir_is_self_contained(trained: TrainResult) -> None:
    meta = json.loads((trained.model_dir / "nlu.json").read_text())
    (skill,) = meta["skills"]
    assert skill["intents"] == ["set_color", "turn_off", "turn_on"]
    assert skill["slot_types"] == ["color", "room"]
    assert (trained.model_dir / "training_config.yaml").is_file()
    assert (trained.model_dir / "tokenizer.json").is_file()
    assert trained.best_dev is not None and trained.best_dev["n"] > 0


def test_save_load_gives_identical_outputs(trained: TrainResult, tmp_path: Path) -> None:
    texts = ["turn on the kitchen lights", "make the hall blue", "switch the bedroom light off"]
    parser = Parser.from_pretrained(trained.model_dir)
    model, tokenizer, max_length = JointModel.from_pretrained(trained.model_dir)
    model.save_pretrained(tmp_path / "copy", tokenizer=tokenizer, max_length=max_length)
    again = Parser.from_pretrained(tmp_path / "copy")
    batch = pad_batch(encode(parser.tokenizer, texts, parser.max_length), 0)
    a, b = parser.forward(batch), again.forward(batch)
    np.testing.assert_array_equal(a.slots, b.slots)
    np.testing.assert_array_equal(a.intents, b.intents)
    assert parser.parse(texts) == again.parse(texts)


def test_batched_and_single_predictions_agree(trained: TrainResult) -> None:
    parser = Parser.from_pretrained(trained.model_dir)
    texts = [
        "lights on",
        "set the living room lights to warm white please right now",
        "turn off the hall lights",
    ]
    batched = parser.parse(texts, batch_size=8)
    single = [parser.parse([t])[0] for t in texts]
    for b, s in zip(batched, single, strict=True):
        assert b["intent"]["name"] == s["intent"]["name"]
        assert [(x["slot"], x["start"], x["end"]) for x in b["slots"]] == [
            (x["slot"], x["start"], x["end"]) for x in s["slots"]
        ]
        assert b["intent"]["confidence"] == pytest.approx(s["intent"]["confidence"], abs=1e-3)


def test_forced_skill_and_top_k(trained: TrainResult) -> None:
    parser = Parser.from_pretrained(trained.model_dir)
    (result,) = parser.parse(["turn on the kitchen lights"], skill="lights", top_k=2)
    assert result["skill"] == {
        "name": "lights",
        "confidence": result["skill"]["confidence"],
        "forced": True,
    }
    assert len(result["intents"]) == 2
    assert sum(i["confidence"] for i in result["intents"]) <= 1.0001
    with pytest.raises(
        UnknownSkillError, match="unknown skill 'weather'; this model knows: lights"
    ):
        parser.parse(["hi"], skill="weather")


def test_evaluate_writes_reports(trained: TrainResult, tiny_skill: Path, tmp_path: Path) -> None:
    metrics = evaluate(
        model_dir=trained.model_dir, data=[tiny_skill], split="test", out_dir=tmp_path
    )
    assert metrics["overall"]["n"] == 3
    assert set(metrics["per_skill"]) == {"lights"}
    assert "strict" in metrics["slot_metric"]
    for name in ("metrics.json", "metrics.md", "confusion.png", "predictions.jsonl"):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "metrics.json").read_text())["overall"] == metrics["overall"]


def test_resume_continues_from_checkpoint(
    make_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    first = train(**dataclasses.asdict(make_config(tmp_path, epochs=2)))
    assert [h["epoch"] for h in first.history] == [1, 2]
    resumed = train(**dataclasses.asdict(make_config(tmp_path, epochs=3, resume="latest")))
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.history[:2] == first.history
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_003"]


def test_missing_or_incomplete_model_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match="does not exist"):
        JointModel.from_pretrained(tmp_path / "nothing")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(
        ModelDirError, match=r"incomplete: missing nlu.json, tokenizer.json, model.safetensors"
    ):
        JointModel.from_pretrained(tmp_path)


def test_each_example_is_scored_only_against_its_own_skill(tiny_encoder: str) -> None:
    from torch.nn import functional as F
    from transformers import AutoModel

    from nlu.schema import SkillLabels

    torch.manual_seed(0)
    model = JointModel(
        encoder=AutoModel.from_pretrained(tiny_encoder),
        skills=[SkillLabels("a", ["x", "y"], []), SkillLabels("b", ["x", "y", "z"], ["s"])],
        dropout=0.0,
    )
    batch = {
        "input_ids": torch.tensor([[101, 2000, 102], [101, 2001, 102]]),
        "attention_mask": torch.ones(2, 3, dtype=torch.long),
        "skill_ids": torch.tensor([0, 1]),
        "intent_labels": torch.tensor([1, 2]),
        "slot_labels": torch.tensor([[-100, 0, -100], [-100, 1, -100]]),
    }
    out = model(**batch)
    assert out.intent_logits.shape == (2, 5) and out.slot_logits.shape == (2, 3, 1 + 3)
    intent = (
        F.cross_entropy(out.intent_logits[0:1, 0:2], torch.tensor([1]))
        + F.cross_entropy(out.intent_logits[1:2, 2:5], torch.tensor([2]))
    ) / 2
    slot = (
        F.cross_entropy(out.slot_logits[0:1, 1, 0:1], torch.tensor([0]))
        + F.cross_entropy(out.slot_logits[1:2, 1, 1:4], torch.tensor([1]))
    ) / 2
    router = F.cross_entropy(out.router_logits, batch["skill_ids"])
    assert out.intent_loss.item() == pytest.approx(intent.item(), rel=1e-5)
    assert out.slot_loss.item() == pytest.approx(slot.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx((router + intent + slot).item(), rel=1e-5)
