"""`nlu validate` and the data warnings: every problem with its path and line, the same checks
training applies."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from nlu.cli import main
from nlu.data.formats import read_jsonl
from nlu.data.skills import parse_skill_file
from nlu.schema import DataError
from tests.helpers import FIXTURES, broken_tests


def test_a_span_inside_a_word_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = tmp_path / "d.jsonl"
    row = {"text": "turn on the kitchen lights", "skill": "lights", "intent": "turn_on"}
    rows = [
        {**row, "slots": [{"start": 13, "end": 19, "slot": "room"}]},  # "itchen"
        {**row, "slots": [{"start": 12, "end": 19, "slot": "room"}]},  # right
    ]
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level(logging.WARNING):
        assert len(read_jsonl(file)) == 2
    assert f"{file}:1: span 13:19 (room) 'itchen' cuts a word" in caplog.text
    assert f"{file}:2" not in caplog.text


def _skill(tmp_path: Path, values: str) -> Path:
    folder = tmp_path / "lights"
    folder.mkdir()
    (folder / "skill.yaml").write_text(
        "skill: lights\nslots:\n  room:\n    values:\n"
        + values
        + "intents:\n  turn_on:\n    slots: [room]\n    utterances:\n      - lights on in {room}\n"
    )
    return folder / "skill.yaml"


def test_a_slot_value_listed_twice_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _skill(tmp_path, "      - kitchen\n      - hall\n      - Kitchen\n")
    with caplog.at_level(logging.WARNING):
        spec = parse_skill_file(path)
    assert spec.slot_values["room"] == ["kitchen", "hall"]
    assert f"{path}:7: slots.room.values.2: slot value 'Kitchen' is listed twice" in caplog.text


def test_a_synonym_of_two_values_is_an_error(tmp_path: Path) -> None:
    path = _skill(
        tmp_path,
        "      - {value: kitchen, synonyms: [cooking area]}\n"
        "      - {value: dining room, synonyms: [cooking area]}\n",
    )
    with pytest.raises(DataError, match=r":6: .*'cooking area' stands for both 'kitchen'"):
        parse_skill_file(path)


def test_validate_reports_every_problem_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = {"text": "lights on", "skill": "lights", "intent": "turn_on"}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({"text": "lights on", "skill": "lights"}),
        json.dumps({**good, "slots": [{"start": 0, "end": 99, "slot": "room"}]}),
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    assert main(["validate", str(bad), str(FIXTURES / "skills")]) == 2
    out = capsys.readouterr().out
    assert f"{bad}:2: invalid JSON" in out
    assert f"{bad}:3: missing or non-string field(s): intent" in out
    assert f"{bad}:4: span 0:99 (room) is outside the text" in out
    assert f"{FIXTURES / 'skills'}: skill folders" in out and ": ok" in out


def test_validate_reads_the_hand_written_tests(tmp_path: Path) -> None:
    from nlu.data.validate import validate

    (report,) = validate([str(broken_tests(tmp_path))])
    tests = tmp_path / "skills" / "lights" / "tests.yaml"
    assert len(report.problems) == 2
    assert report.problems[0].startswith(f"{tests}:3: turn_on.1: slot 'rooom' is not declared")
    assert report.problems[1].startswith(f"{tests}:5: dance: unknown intent 'dance'")


def _lights_with(tmp_path: Path, negatives: str | None = None) -> Path:
    import shutil

    root = tmp_path / "skills"
    shutil.copytree(FIXTURES / "skills" / "lights", root / "lights")
    if negatives is not None:
        (root / "out_of_scope.yaml").write_text(negatives)
    return root


def test_validate_counts_train_and_dev_as_training_does(tmp_path: Path) -> None:
    from nlu.config import DataConfig, TrainConfig
    from nlu.data.loaders import load_train_dev
    from nlu.data.validate import validate

    root = _lights_with(tmp_path)
    (report,) = validate([str(root)])
    data = load_train_dev(DataConfig(data=[str(root)]), seed=TrainConfig().seed)
    assert (report.examples["train"], report.examples["dev"]) == (len(data.train), len(data.dev))


def test_validate_reports_a_text_labelled_with_two_intents(tmp_path: Path) -> None:
    from nlu.data.validate import validate

    root = _lights_with(tmp_path)
    skill = root / "lights" / "skill.yaml"
    doc = skill.read_text()
    skill.write_text(
        doc.replace(
            "      - switch the {room} light off\n",
            "      - switch the {room} light off\n      - Lights  on\n",
        )
    )
    (report,) = validate([str(root)])
    said = " ".join(report.warnings)
    assert "intents.turn_off.utterances.2: 'Lights on' is also an utterance of intent" in said
    assert report.ok  # a warning: the data still trains


def test_shared_negatives_that_a_skill_handles_are_dropped_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from nlu.data.loaders import load_split

    root = _lights_with(
        tmp_path, "train:\n  - Turn on the kitchen lights\n  - order a pizza\ntest: []\n"
    )
    with caplog.at_level(logging.WARNING):
        train = load_split(root, "train", dev_fraction=0.0).examples
    negatives = [e.text for e in train if not e.in_scope]
    assert negatives == ["order a pizza"]
    assert "'Turn on the kitchen lights' (lights/turn_on" in caplog.text
    off = load_split(root, "train", dev_fraction=0.0, shared_negatives=False).examples
    assert all(e.in_scope for e in off)
