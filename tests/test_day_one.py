"""The silent traps a new user fell into (issue: day-one essentials): each one now either works
or fails loudly, saying what to do."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nlu.cli import main
from nlu.config import ConfigError
from nlu.data.loaders import detect_format, load_split, load_train_dev, read_jsonl, write_jsonl
from nlu.data.skills import parse_skill_file
from nlu.predict import Parser
from nlu.schema import DataError, Example, Span
from nlu.text import TextError

FIXTURES = Path(__file__).parent / "fixtures"


def _rows(n: int, intent: str = "turn_on") -> list[Example]:
    rooms = ["kitchen", "bedroom", "hall", "office", "garage", "attic"]
    out = []
    for i in range(n):
        room = rooms[i % len(rooms)]
        text = f"turn on the {room} lights {i}"
        out.append(Example(text, "lights", intent, (Span(12, 12 + len(room), "room"),)))
    return out


# -- 1. a single string --------------------------------------------------------------------------


def test_parse_takes_one_string_and_returns_one_result(trained: Any) -> None:
    parser = Parser.from_pretrained(trained.model_dir)
    one = parser.parse("turn on the kitchen lights")
    assert not isinstance(one, list)
    assert one == parser.parse(["turn on the kitchen lights"])[0]
    with pytest.raises(TypeError, match="list of strings"):
        parser.parse_with_options("lights on", [])  # type: ignore[arg-type]


# -- 6. one rule for empty text ----------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "\t\n", "\u3000"])
def test_empty_text_is_refused_everywhere(
    trained: Any, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = Parser.from_pretrained(trained.model_dir)
    with pytest.raises(TextError, match="empty or only whitespace"):
        parser.parse([text])
    with pytest.raises(TextError, match="text 1"):
        parser.parse(["lights on", text])
    assert main(["predict", "--model", str(trained.model_dir), text]) == 2
    assert "empty or only whitespace" in capsys.readouterr().err


# -- 2 and 3. split files: by content, and no benchmark on a single split -----------------------


def test_folder_of_nlu_split_files_is_not_read_as_slurp(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", _rows(12))
    write_jsonl(tmp_path / "dev.jsonl", _rows(3, "turn_off"))
    write_jsonl(tmp_path / "test.jsonl", _rows(4, "turn_off"))
    assert detect_format(tmp_path) == "jsonl-folder"
    assert detect_format(FIXTURES / "slurp") == "slurp-folder"  # SLURP by its records
    assert len(load_split(tmp_path, "test").examples) == 4
    data = load_train_dev(_data_config(tmp_path), seed=0)
    assert len(data.train) == 12 and {e.intent for e in data.dev} == {"turn_off"}


def test_split_folder_without_dev_takes_a_share_of_train(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", _rows(20))
    data = load_train_dev(_data_config(tmp_path, dev_fraction=0.25), seed=0)
    assert (len(data.train), len(data.dev)) == (15, 5)
    with pytest.raises(DataError, match=r"test\.jsonl: missing.*found: train\.jsonl"):
        load_split(tmp_path, "test")


def test_benchmark_refuses_a_single_split_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "mine.jsonl"
    write_jsonl(file, _rows(10))
    code = main(["benchmark", "mine", "--data", str(file), "--out", str(tmp_path / "b")])
    assert code == 2
    err = capsys.readouterr().err
    assert "no test split of its own" in err and "train.jsonl, dev.jsonl and test.jsonl" in err
    assert not (tmp_path / "b").exists()


def test_the_detected_format_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_jsonl(tmp_path / "train.jsonl", _rows(5))
    with caplog.at_level(logging.INFO, logger="nlu.data.loaders"):
        load_split(tmp_path, "train")
    assert "a folder of nlu JSONL split files" in caplog.text


# -- 4. the folder is honest for transformers --------------------------------------------------


def test_automodel_loads_the_trained_encoder(trained: Any) -> None:
    import torch
    from transformers import AutoModel

    from nlu.model import JointModel

    ours, _ = JointModel.load(trained.model_dir)
    theirs = AutoModel.from_pretrained(trained.model_dir, add_pooling_layer=False)
    mine = ours.encoder.state_dict()
    for name, tensor in theirs.state_dict().items():
        assert torch.equal(tensor, mine[name]), name


def test_a_folder_in_the_old_weight_layout_still_loads(trained: Any, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from nlu import modeldir

    old = tmp_path / "old"
    shutil.copytree(trained.model_dir, old)
    weights = modeldir.load(trained.model_dir, "torch").weights
    assert weights is not None and any(k.startswith("encoder.") for k in weights)
    save_file(dict(weights), str(old / modeldir.WEIGHTS_FILE), {"format": "pt"})  # model names
    assert not any(k.startswith("nlu.") for k in load_file(str(old / modeldir.WEIGHTS_FILE)))
    texts = ["turn on the kitchen lights", "make the hall red"]
    assert Parser.from_pretrained(old).parse(texts) == Parser.from_pretrained(
        trained.model_dir
    ).parse(texts)


# -- 5. one convention: a run folder holds its model in model/ -----------------------------------


def test_every_reader_takes_the_run_folder_too(trained: Any) -> None:
    run = Path(trained.model_dir).parent
    assert Parser.from_pretrained(run).parse(["lights on"]) == Parser.from_pretrained(
        trained.model_dir
    ).parse(["lights on"])


# -- 7. an encoder that cannot load here: one line, nothing written --------------------------------


@pytest.mark.parametrize("encoder", ["bert-base-uncased", "no-such-org/no-such-model"])
def test_unreachable_encoder_is_one_clear_error(
    make_config: Callable[..., Any], tmp_path: Path, encoder: str
) -> None:
    from nlu.train import train

    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"not a local folder.*encoder=default"):
        train(make_config(out, encoder=encoder))
    assert not out.exists()


def test_encoder_folder_without_config_is_named(
    make_config: Callable[..., Any], tmp_path: Path
) -> None:
    from nlu.train import train

    with pytest.raises(ConfigError, match="not a transformers model folder"):
        train(make_config(tmp_path / "run", encoder=str(tmp_path)))


# -- 8. overwriting, spans inside words, duplicated values -------------------------------------


def test_training_into_a_finished_run_needs_overwrite(
    trained: Any, make_config: Callable[..., Any]
) -> None:
    from nlu.train import train

    run = Path(trained.model_dir).parent
    before = (Path(trained.model_dir) / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(ConfigError, match=r"already holds a trained model.*overwrite=true"):
        train(make_config(run))
    assert (Path(trained.model_dir) / "model.safetensors").stat().st_mtime_ns == before


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


def _data_config(path: Path, **changes: Any) -> Any:
    from nlu.config import DataConfig

    return DataConfig(data=[str(path)], **changes)


# -- nlu validate --------------------------------------------------------------------------------


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


def _broken_tests(tmp_path: Path) -> Path:
    skills = tmp_path / "skills"
    shutil.copytree(FIXTURES / "skills", skills)
    (skills / "lights" / "tests.yaml").write_text(
        "turn_on:\n  - lights on in the [hall](room)\n  - lights on in the [hall](rooom)\n"
        "dance:\n  - do a dance\n"
    )
    return skills


def test_validate_reads_the_hand_written_tests(tmp_path: Path) -> None:
    from nlu.validate import validate

    (report,) = validate([str(_broken_tests(tmp_path))])
    tests = tmp_path / "skills" / "lights" / "tests.yaml"
    assert len(report.problems) == 2
    assert report.problems[0].startswith(f"{tests}:3: turn_on.1: slot 'rooom' is not declared")
    assert report.problems[1].startswith(f"{tests}:5: dance: unknown intent 'dance'")


def test_train_checks_the_tests_file_before_training(
    tmp_path: Path, make_config: Callable[..., Any]
) -> None:
    from nlu.train import train

    out = tmp_path / "run"
    with pytest.raises(DataError, match=r"(?s)rooom.*unknown intent 'dance'"):
        train(make_config(out, data=[str(_broken_tests(tmp_path))]))
    assert not out.exists()
