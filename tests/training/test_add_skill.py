"""`nlu add-skill`: a new skill on a frozen encoder; the old skills' outputs do not move."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nlu.cli import main
from nlu.data.formats import read_jsonl
from nlu.inference.parser import Parser, torch_forward
from nlu.model.features import encodings_inputs
from nlu.model.joint import JointModel
from nlu.training.add_skill import AddSkillError, add_skill
from nlu.training.engine import TrainResult
from tests.helpers import FIXTURES

TIMER = FIXTURES / "timer.jsonl"
OLD_TEXTS = [
    "turn on the kitchen lights",
    "set the living room lights to warm white",
    "switch off the lights in the bedroom",
    "make the hallway blue",
]


def _logits(model_dir: Path, texts: list[str]) -> tuple[JointModel, dict[str, np.ndarray]]:
    model, folder = JointModel.load(model_dir)
    tokenizer, max_length = folder.tokenizer, folder.meta.max_length
    from nlu.model.alignment import encode

    batch = encodings_inputs(encode(tokenizer, texts, max_length), tokenizer.pad_token_id)
    out = torch_forward(model)(batch)
    return model, {"intents": out.intents, "slots": out.slots, "router": out.router}


def test_old_skill_outputs_are_bit_identical(trained: TrainResult, extended: Path) -> None:
    old_model, before = _logits(trained.model_dir, OLD_TEXTS)
    new_model, after = _logits(extended, OLD_TEXTS)
    assert new_model.index.names == ["lights", "timer"]
    intents, tags = old_model.index.intent_slices[0], old_model.index.tag_slices[0]
    assert np.array_equal(before["intents"][:, intents], after["intents"][:, intents])
    assert np.array_equal(before["slots"][:, :, tags], after["slots"][:, :, tags])
    # The router's old weights are untouched; only an output was added. (Its old logits agree
    # to float rounding, not bits: a wider matrix product may sum in another order.)
    np.testing.assert_allclose(before["router"], after["router"][:, :1], atol=1e-5)
    # And so the decoded intent and slots for the old skill are the same.
    old_results = Parser.from_pretrained(trained.model_dir).parse(OLD_TEXTS, skill="lights")
    new_results = Parser.from_pretrained(extended).parse(OLD_TEXTS, skill="lights")
    for a, b in zip(old_results, new_results, strict=True):
        assert (a.intent, a.intents, a.slots) == (b.intent, b.intents, b.slots)


def test_new_skill_is_learned_and_routed(extended: Path) -> None:
    parser = Parser.from_pretrained(extended)
    examples = read_jsonl(TIMER)
    results = parser.parse([e.text for e in examples])
    routed = sum(r.skill.name == "timer" for r in results) / len(results)
    intents = sum(r.intent.name == e.intent for r, e in zip(results, examples, strict=True)) / len(
        results
    )
    assert routed >= 0.9 and intents >= 0.9, (routed, intents)
    (result,) = parser.parse(["set a timer for 5 minutes"])
    assert [(s.slot, s.value) for s in result.slots] == [("duration", "5 minutes")]
    # Old-skill utterances still route to the old skill.
    assert all(r.skill.name == "lights" for r in parser.parse(OLD_TEXTS))


def test_adding_an_existing_skill_is_refused(trained: TrainResult, tmp_path: Path) -> None:
    from tests.helpers import FIXTURES

    with pytest.raises(AddSkillError, match="already has skill"):
        add_skill(
            model_dir=trained.model_dir, skill_data=[str(FIXTURES / "skills")], out_dir=tmp_path
        )


def test_missing_replay_data_says_what_to_pass(trained: TrainResult, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(trained.model_dir, copy)
    (copy / "training_config.yaml").write_text("data: [/nowhere/skills]\n")
    with pytest.raises(AddSkillError, match="pass --replay"):
        add_skill(model_dir=copy, skill_data=[str(TIMER)], out_dir=tmp_path / "out")


def test_cli_add_skill(
    trained: TrainResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["add-skill", str(trained.model_dir), str(TIMER), "--out", str(tmp_path / "m")])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["added"] == ["timer"] and report["new_skill_dev"]["n"] > 0
    assert main(["add-skill", str(tmp_path / "nope"), str(TIMER), "--out", str(tmp_path)]) == 2
