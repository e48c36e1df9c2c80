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
from nlu.data.formats import read_jsonl, write_jsonl
from nlu.data.loaders import detect_format, load_split, load_train_dev
from nlu.data.skills import parse_skill_file
from nlu.inference.parser import Parser
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

    from nlu.model.joint import JointModel

    ours, _ = JointModel.load(trained.model_dir)
    theirs = AutoModel.from_pretrained(trained.model_dir, add_pooling_layer=False)
    mine = ours.encoder.state_dict()
    for name, tensor in theirs.state_dict().items():
        assert torch.equal(tensor, mine[name]), name


def test_a_folder_in_the_old_weight_layout_still_loads(trained: Any, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from nlu.model import modeldir

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
    from nlu.training.train import train

    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"not a local folder.*encoder=default"):
        train(make_config(out, encoder=encoder))
    assert not out.exists()


def test_encoder_folder_without_config_is_named(
    make_config: Callable[..., Any], tmp_path: Path
) -> None:
    from nlu.training.train import train

    with pytest.raises(ConfigError, match="not a transformers model folder"):
        train(make_config(tmp_path / "run", encoder=str(tmp_path)))


# -- 8. overwriting, spans inside words, duplicated values -------------------------------------


def test_training_into_a_finished_run_needs_overwrite(
    trained: Any, make_config: Callable[..., Any]
) -> None:
    from nlu.training.train import train

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
    from nlu.data.validate import validate

    (report,) = validate([str(_broken_tests(tmp_path))])
    tests = tmp_path / "skills" / "lights" / "tests.yaml"
    assert len(report.problems) == 2
    assert report.problems[0].startswith(f"{tests}:3: turn_on.1: slot 'rooom' is not declared")
    assert report.problems[1].startswith(f"{tests}:5: dance: unknown intent 'dance'")


def test_train_checks_the_tests_file_before_training(
    tmp_path: Path, make_config: Callable[..., Any]
) -> None:
    from nlu.training.train import train

    out = tmp_path / "run"
    with pytest.raises(DataError, match=r"(?s)rooom.*unknown intent 'dance'"):
        train(make_config(out, data=[str(_broken_tests(tmp_path))]))
    assert not out.exists()


# -- evaluation that helps fix data ------------------------------------------------------------


def _said(text: str, skill: str, intent: str, confidence: float, *slots: Any) -> Any:
    from nlu.result import ParseResult, Scored, SkillChoice, SlotValue

    return ParseResult(
        text=text,
        skill=SkillChoice(skill, 0.9, False),
        intent=Scored(intent, confidence),
        intents=[Scored(intent, confidence)],
        slots=[SlotValue(n, text[a:b], a, b, 0.9) for n, a, b in slots],
        truncated=False,
    )


def test_evaluation_reports_per_intent_per_slot_and_worst_errors() -> None:
    from transformers import AutoTokenizer

    from nlu.evaluation.metrics import score
    from nlu.evaluation.report import format_table, prediction_row
    from nlu.model.encoders import resolve_encoder

    gold = [
        Example("alarm at 7", "alarm", "set", (Span(9, 10, "time"),)),
        Example("timer at 7", "timer", "start", (Span(9, 10, "time"),)),
        Example("alarm at 8", "alarm", "set", (Span(9, 10, "time"),)),
        Example("stop the timer", "timer", "stop"),
    ]
    said = [
        _said("alarm at 7", "alarm", "set", 0.99, ("time", 9, 10)),
        _said("timer at 7", "timer", "start", 0.6),  # slot missed
        _said("alarm at 8", "alarm", "cancel", 0.97, ("time", 9, 10)),  # wrong intent
        _said("stop the timer", "timer", "stop", 0.9),
    ]
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder("default"))
    metrics = score(gold, said, tokenizer=tokenizer)
    # The same slot name in two skills is two rows, not one merged score.
    assert metrics["per_slot_type"]["alarm/time"]["recall"] == 1.0
    assert metrics["per_slot_type"]["timer/time"]["recall"] == 0.0
    assert metrics["per_intent"]["alarm/set"] == {
        "n": 2,
        "precision": 100.0,
        "recall": 50.0,
        "f1": 66.67,
    }
    worst = metrics["worst_errors"]
    assert [w["text"] for w in worst] == ["alarm at 8", "timer at 7"]  # surest first
    assert worst[0]["predicted"] == "alarm/cancel time='8'" and worst[1]["wrong"] == "slots"
    table = format_table(metrics)
    assert "| alarm/time | 2 |" in table and "## Worst errors" in table
    row = prediction_row(gold[1], said[1])
    assert (row["correct"], row["intent_correct"], row["slots_correct"]) == (False, True, False)
    assert row["gold"]["slots"][0]["value"] == "7"


# -- voice input: ASR n-best lists ----------------------------------------------------------------


def test_nbest_outvotes_a_misrecognised_top_hypothesis() -> None:
    from nlu.inference.nbest import combine

    top = _said("turn of the lights", "lights", "turn_off", 0.8)  # "of" misheard for "on"
    second = _said("turn on the lights", "lights", "turn_on", 0.9)
    third = _said("turn on the light", "lights", "turn_on", 0.9)
    result = combine([top, second, third], [0.4, 0.35, 0.25], top_k=5)
    assert result.intent is not None and result.intent.name == "turn_on"
    assert result.hypothesis == 1 and result.text == "turn on the lights"
    assert [i.name for i in result.intents] == ["turn_on", "turn_off"]
    on, off = (0.35 + 0.25) * 0.9 * 0.9, 0.4 * 0.9 * 0.8  # ASR weight x skill x intent
    assert result.intent.confidence == pytest.approx(on / (on + off), abs=1e-4)
    alone = combine([top], [1.0], top_k=5)
    assert alone.hypothesis == 0 and alone.intent is not None and alone.intent.name == "turn_off"
    with pytest.raises(ValueError, match="ASR confidences"):
        combine([top, second], [1.0], top_k=5)


# -- Hugging Face interop ------------------------------------------------------------------------


def test_every_model_folder_has_a_model_card(trained: Any) -> None:
    card = (Path(trained.model_dir) / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: nlu\n")
    assert "| lights | set_color, turn_off, turn_on | color, room |" in card
    assert "## Metrics (dev split" in card and "exact match" in card
    assert "## Intended use" in card and "tests/fixtures/skills" in card


def test_save_pretrained_and_from_pretrained_are_symmetric(trained: Any, tmp_path: Path) -> None:
    parser = Parser.from_pretrained(trained.model_dir)
    again = Parser.from_pretrained(parser.save_pretrained(tmp_path / "copy"))
    texts = ["turn on the kitchen lights", "make the hall red"]
    assert again.parse(texts) == parser.parse(texts)
    assert (tmp_path / "copy" / "README.md").read_text() == (
        Path(trained.model_dir) / "README.md"
    ).read_text()


class _LocalHub:
    """A stand-in for huggingface_hub.HfApi that stores uploads in a local folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def create_repo(self, repo_id: str, **kwargs: Any) -> object:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        (self.root / repo_id).mkdir(parents=True, exist_ok=True)
        return repo_id

    def upload_folder(self, **kwargs: Any) -> object:
        self.calls.append(("upload_folder", kwargs))
        shutil.copytree(kwargs["folder_path"], self.root / kwargs["repo_id"], dirs_exist_ok=True)
        return f"local://{kwargs['repo_id']}/commit/1"


def test_push_to_hub_uploads_a_loadable_folder(trained: Any, tmp_path: Path) -> None:
    hub = _LocalHub(tmp_path / "hub")
    parser = Parser.from_pretrained(trained.model_dir)
    url = parser.push_to_hub("team/lights-nlu", api=hub)
    assert url == "local://team/lights-nlu/commit/1"
    assert [name for name, _ in hub.calls] == ["create_repo", "upload_folder"]
    assert hub.calls[0][1]["private"] is True and hub.calls[1][1]["repo_type"] == "model"
    pulled = Parser.from_pretrained(tmp_path / "hub" / "team" / "lights-nlu")
    assert pulled.parse(["lights on"]) == parser.parse(["lights on"])


# -- training visibility ------------------------------------------------------------------------


def test_tensorboard_tracking_and_learning_curve(
    make_config: Callable[..., Any], tmp_path: Path
) -> None:
    from nlu.training.train import train

    out = tmp_path / "run"
    result = train(make_config(out, epochs=2, log_with="tensorboard"))
    events = list((out / "tracking").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    assert (out / "learning_curve.png").stat().st_size > 1000
    assert [r["epoch"] for r in result.history] == [1, 2]


def test_an_unknown_tracker_is_a_config_error(
    make_config: Callable[..., Any], tmp_path: Path
) -> None:
    from nlu.training.train import train

    with pytest.raises(ConfigError, match="log_with=tensorbord: unknown tracker"):
        train(make_config(tmp_path / "run", log_with="tensorbord"))
    assert not (tmp_path / "run").exists()
