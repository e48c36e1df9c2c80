"""Overfit a tiny skill with a tiny encoder; save -> load and batch vs single agree."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import nlu
from nlu.config import TrainConfig
from nlu.data.loaders import load_split
from nlu.evaluation.evaluate import evaluate
from nlu.evaluation.metrics import score
from nlu.inference.decode import softmax
from nlu.inference.parser import Parser, UnknownSkillError
from nlu.model import modeldir
from nlu.model.alignment import encode
from nlu.model.features import encodings_inputs
from nlu.model.joint import JointModel
from nlu.model.modeldir import ModelDirError
from nlu.training.engine import TrainResult
from nlu.training.mtl import LossWeighting
from nlu.training.train import train


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
    assert result.intent.name == "set_color"
    assert [(s.slot, s.value) for s in result.slots] == [
        ("room", "living room"),
        ("color", "warm white"),
    ]
    first = result.slots[0]
    assert result.text[first.start : first.end] == "living room"


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
    model, folder = JointModel.load(trained.model_dir)
    modeldir.save(
        tmp_path / "copy",
        model.to_folder(
            tokenizer=folder.tokenizer, max_length=folder.meta.max_length, training_config=None
        ),
    )
    again = nlu.load(tmp_path / "copy")
    batch = encodings_inputs(encode(parser.tokenizer, texts, parser.max_length), 0)
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
        assert b.intent.name == s.intent.name
        assert [(x.slot, x.start, x.end) for x in b.slots] == [
            (x.slot, x.start, x.end) for x in s.slots
        ]
        assert b.intent.confidence == pytest.approx(s.intent.confidence, abs=1e-3)


def test_forced_skill_and_top_k(trained: TrainResult) -> None:
    parser = Parser.from_pretrained(trained.model_dir)
    text = "turn on the kitchen lights"
    (result,) = parser.parse([text], skill="lights", top_k=2)
    (routed,) = parser.parse([text], top_k=2)
    assert (result.skill.name, result.skill.forced, routed.skill.forced) == ("lights", True, False)
    # Forcing keeps the router's own probability of the forced skill as its confidence.
    logits = parser.forward(encodings_inputs(encode(parser.tokenizer, [text], 64), 0))
    router = softmax(logits.router[0])
    assert result.skill.confidence == pytest.approx(float(router[0]), abs=1e-4)
    assert len(result.intents) == 2
    assert result.intents[0] == result.intent
    assert result.intents[0].confidence >= result.intents[1].confidence
    assert sum(i.confidence for i in result.intents) <= 1.0001
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
    first = train(make_config(tmp_path, epochs=2))
    assert [h["epoch"] for h in first.history] == [1, 2]
    resumed = train(make_config(tmp_path, epochs=3, resume="latest"))
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.history[:2] == first.history
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_003"]


def test_an_interrupted_run_resumes_to_the_same_weights(
    make_config: Callable[..., TrainConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Data order, RNG, optimiser and DWA state all continue: killed after epoch 1 and resumed
    equals uninterrupted, weights included."""
    from safetensors.torch import load_file

    import nlu.training.engine as recipe

    def config(out: Path, **extra: object) -> TrainConfig:
        return make_config(
            out, epochs=3, loss_weighting="dwa", dwa_period=2, sampling="uniform", **extra
        )

    whole = train(config(tmp_path / "whole"))
    real_save = recipe.save_checkpoint

    def killed_after_first(*args: object, **kwargs: object) -> None:
        real_save(*args, **kwargs)  # type: ignore[arg-type]
        raise KeyboardInterrupt

    monkeypatch.setattr(recipe, "save_checkpoint", killed_after_first)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path / "cut"))
    monkeypatch.setattr(recipe, "save_checkpoint", real_save)
    resumed = train(config(tmp_path / "cut", resume="latest"))

    def comparable(history: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

    assert comparable(resumed.history) == comparable(whole.history)
    assert whole.history[1]["loss_weights"] != whole.history[2]["loss_weights"]  # DWA moved
    a = load_file(str(tmp_path / "whole" / "checkpoints" / "epoch_003" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "checkpoints" / "epoch_003" / "model.safetensors"))
    for name, tensor in a.items():
        torch.testing.assert_close(tensor, b[name], rtol=0, atol=1e-6)
    # The saved model is the selected epoch's, whether or not the run was interrupted before
    # it (the checkpoint carries the best weights so far).
    assert resumed.best_epoch == whole.best_epoch
    a = load_file(str(whole.model_dir / "model.safetensors"))
    b = load_file(str(resumed.model_dir / "model.safetensors"))
    for name, tensor in a.items():
        torch.testing.assert_close(tensor, b[name], rtol=0, atol=1e-6)


def test_a_run_saves_its_calibrated_model_once(
    make_config: Callable[..., TrainConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The detector is fitted on the model in memory and the folder written once, with it
    (before 0.2 the folder was saved per better epoch, reloaded, and saved again)."""
    saves: list[bool] = []
    real_save = modeldir.save

    def counted(directory: str | Path, folder: modeldir.ModelFolder) -> Path:
        saves.append(folder.ood is not None)
        return real_save(directory, folder)

    monkeypatch.setattr(modeldir, "save", counted)
    result = train(make_config(tmp_path / "run", epochs=3, oos_method="energy"))
    assert saves == [True]
    assert nlu.load(result.model_dir).ood is not None
    assert json.loads((tmp_path / "run" / "train_summary.json").read_text())["out_of_scope"]


def test_missing_or_incomplete_model_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match="does not exist"):
        JointModel.load(tmp_path / "nothing")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(
        ModelDirError, match=r"incomplete: missing nlu.json, tokenizer.json, model.safetensors"
    ):
        nlu.load(tmp_path)


def test_a_failed_save_leaves_the_previous_model(
    trained: TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, folder = JointModel.load(trained.model_dir)
    target = tmp_path / "model"
    modeldir.save(target, folder)
    before = nlu.load(target).parse(["turn on the hall lights"])
    original = modeldir._write_adapter
    calls = 0

    def dies_half_way(where: Path, adapter: modeldir.Adapter, skills: Any) -> None:
        nonlocal calls
        calls += 1
        raise KeyboardInterrupt  # as a kill during the save would

    monkeypatch.setattr(modeldir, "_write_adapter", dies_half_way)
    folder.adapters = {"lights": modeldir.Adapter()}
    with pytest.raises(KeyboardInterrupt):
        modeldir.save(target, folder)
    monkeypatch.setattr(modeldir, "_write_adapter", original)
    assert calls == 1
    assert nlu.load(target).parse(["turn on the hall lights"]) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder left


def test_each_example_is_scored_only_against_its_own_skill(tiny_encoder: str) -> None:
    from torch.nn import functional as F
    from transformers import AutoModel

    from nlu.labels import SkillLabels

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
    assert out.losses is not None
    kinds = out.losses.by_kind
    assert kinds["intent"].item() == pytest.approx(intent.item(), rel=1e-5)
    assert kinds["slot"].item() == pytest.approx(slot.item(), rel=1e-5)
    static = LossWeighting(
        model.task_names(), strategy="static", static={"router": 1, "intent": 1, "slot": 1}
    )
    assert static(out.losses).item() == pytest.approx((router + intent + slot).item(), rel=1e-5)
    # Σ share · mean over the tasks is the same plain joint loss.
    mixed = sum(share * loss for loss, share in out.losses.by_task.values())
    assert float(mixed.detach()) == pytest.approx((router + intent + slot).item(), rel=1e-5)


@pytest.mark.slow
def test_two_processes_gather_every_dev_prediction(
    make_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    """`accelerate launch` with 2 CPU processes: dev is sharded, then gathered whole, and the
    dev scores equal a one-process evaluation of the saved model."""
    import subprocess
    import sys

    from nlu.config import dump_config

    cfg = make_config(tmp_path / "run", epochs=2, dev_fraction=0.3)
    config = tmp_path / "config.yaml"
    config.write_text(dump_config(cfg))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu"]
    cmd += ["-m", "nlu.cli", "train", str(config)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    dev = load_split(cfg.data.data[0], "dev", samples_per_template=10, dev_fraction=0.3, seed=0)
    parser = nlu.load(tmp_path / "run" / "model")
    again = score(
        dev.examples, parser.parse([e.text for e in dev.examples]), tokenizer=parser.tokenizer
    )
    best = summary["history"][summary["best_epoch"] - 1]["dev"]
    assert best["n"] == len(dev.examples) and best["n"] % 2 == 1  # uneven shards, none lost
    assert best == again["overall"]
