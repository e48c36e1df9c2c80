"""JSONL and JointBERT loaders: formats round-trip, malformed lines name file and line."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from nlu.cli import main
from nlu.data.formats import bio_to_example, from_dataset, read_jsonl, to_dataset, write_jsonl
from nlu.data.loaders import detect_format, load_split, load_train_dev, unseen_labels
from nlu.labels import SkillLabels
from nlu.schema import DataError, Example, Span
from tests.helpers import FIXTURES


def test_jsonl_round_trip_and_dataset(tmp_path: Path) -> None:
    examples = [
        Example("play jazz", "music", "play", (Span(5, 9, "genre"),)),
        Example("stop", "music", "stop"),
    ]
    path = tmp_path / "data.jsonl"
    write_jsonl(path, examples)
    assert read_jsonl(path) == examples
    dataset = to_dataset(examples)
    assert dataset.column_names == ["text", "skill", "intent", "slots"]
    assert from_dataset(dataset) == examples


BASE = '{"text": "hi", "skill": "s", "intent": "i", '


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"text": "hi", "skill": "s"}', "missing or non-string field(s): intent"),
        (
            BASE + '"slots": [{"start": 0, "end": 9, "slot": "x"}]}',
            "outside the text",
        ),
        (
            BASE + '"slots": [{"start": "0", "end": 2, "slot": "x"}]}',
            "slots must be a list",
        ),
        ('{"text": "hi", "skill": "s", "intent": "i", "label": "x"}', "unknown field(s)"),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"text": "ok", "skill": "s", "intent": "i", "slots": []})
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(DataError) as err:
        read_jsonl(path)
    assert f"{path}:2:" in str(err.value) and message in str(err.value)


def test_invalid_utf8_jsonl_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "caf\xe9", "skill": "s", "intent": "i"}\n')
    with pytest.raises(DataError, match="not valid UTF-8"):
        read_jsonl(path)


def write_jointbert(root: Path, split: str, lines: list[tuple[str, str, str]]) -> None:
    folder = root / split
    folder.mkdir(parents=True)
    (folder / "seq.in").write_text("".join(t + "\n" for t, _, _ in lines))
    (folder / "seq.out").write_text("".join(t + "\n" for _, t, _ in lines))
    (folder / "label").write_text("".join(t + "\n" for _, _, t in lines))


def test_jointbert_directory_with_stray_spaces(tmp_path: Path) -> None:
    root = tmp_path / "snipsish"
    write_jointbert(
        root,
        "train",
        [
            ("  play  the   beatles ", "O B-artist I-artist ", "PlayMusic"),
            ("book a table in paris", "O O O O B-city", "BookRestaurant"),
            ("rate it I-score", "O O I-score", "RateBook"),  # stray I- starts a span
        ],
    )
    examples = load_split(root, "train").examples
    assert examples[0] == Example(
        "play the beatles", "snipsish", "PlayMusic", (Span(5, 16, "artist"),)
    )
    assert examples[1].value(examples[1].slots[0]) == "paris"
    assert examples[2].slots == (Span(8, 15, "score"),)


def test_jointbert_mismatch_names_file_and_line(tmp_path: Path) -> None:
    root = tmp_path / "atisish"
    write_jointbert(root, "train", [("a b", "O O", "x"), ("a b c", "O O", "y")])
    with pytest.raises(DataError, match=r"seq.out:2: 2 tags for 3 tokens"):
        load_split(root, "train")
    write_jointbert(root, "dev", [("a b", "O X-b", "x")])
    with pytest.raises(DataError, match=r"seq.out:1: invalid BIO tag"):
        load_split(root, "dev")


def test_bio_to_example_rebuilds_character_offsets() -> None:
    ex = bio_to_example(
        ["from", "new", "york", "to", "boston"],
        ["O", "B-from", "I-from", "O", "B-to"],
        skill="atis",
        intent="flight",
    )
    assert [ex.value(s) for s in ex.slots] == ["new york", "boston"]


def test_unseen_labels_are_reported_not_hidden() -> None:
    labels = [SkillLabels("atis", ["flight"], ["city"])]
    examples = [
        Example("fares to boston", "atis", "airfare", (Span(9, 15, "city"),)),
        Example("class one", "atis", "flight", (Span(6, 9, "class"),)),
        Example("hello", "chat", "greet"),
    ]
    assert unseen_labels(labels, examples) == {
        "skills": {"chat": 1},
        "intents": {"atis/airfare": 1},
        "slot_types": {"atis/class": 1},
    }


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_split(tmp_path / "nope", "train")
    with pytest.raises(DataError, match=r"no skill\.yaml"):
        load_split(tmp_path, "train")


def _rows(n: int, intent: str = "turn_on") -> list[Example]:
    rooms = ["kitchen", "bedroom", "hall", "office", "garage", "attic"]
    out = []
    for i in range(n):
        room = rooms[i % len(rooms)]
        text = f"turn on the {room} lights {i}"
        out.append(Example(text, "lights", intent, (Span(12, 12 + len(room), "room"),)))
    return out


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


def _data_config(path: Path, **changes: Any) -> Any:
    from nlu.config import DataConfig

    return DataConfig(data=[str(path)], **changes)
