"""MASSIVE and SLURP loaders on small files written in the upstream formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nlu.data.corpora import parse_bracketed
from nlu.data.loaders import has_own_split, load_split
from nlu.schema import DataError, Example, Span
from nlu.training.benchmark import format_report, mean_stderr
from tests.helpers import FIXTURES


def test_parse_bracketed_keeps_character_offsets() -> None:
    text, spans = parse_bracketed(
        "fly from [fromloc : new york] to [toloc : boston]: [date : today]"
    )
    assert text == "fly from new york to boston: today"
    assert [(text[s.start : s.end], s.slot) for s in spans] == [
        ("new york", "fromloc"),
        ("boston", "toloc"),
        ("today", "date"),
    ]


@pytest.mark.parametrize(
    "bad", ["wake me [time : ]", "wake me [time five am]", "wake [time : x] me ]"]
)
def test_parse_bracketed_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_bracketed(bad)


def test_massive_partitions_and_scenarios_as_skills() -> None:
    path = FIXTURES / "massive" / "en-US.jsonl"
    train = load_split(path, "train").examples
    assert [e.skill for e in train] == ["alarm", "alarm", "weather"]
    assert train[0] == Example(
        "wake me up at seven am tomorrow",
        "alarm",
        "alarm_set",
        (Span(14, 22, "time"), Span(23, 31, "date")),
    )
    assert len(load_split(path, "dev").examples) == 1
    test = load_split(path, "test").examples
    assert test[1].text == "what's the weather in paris: today"
    assert [test[1].value(s) for s in test[1].slots] == ["paris", "today"]
    assert has_own_split(path, "dev")


def test_slurp_folder_intent_is_scenario_action() -> None:
    folder = FIXTURES / "slurp"
    train = load_split(folder, "train").examples
    assert [(e.skill, e.intent) for e in train] == [
        ("alarm", "alarm_set"),
        ("audio", "audio_volume_mute"),
    ]
    assert train[0].value(train[0].slots[1]) == "this week"
    assert load_split(folder, "dev").examples[0].intent == "alarm_set"
    assert load_split(folder / "test.jsonl", "test").examples[0].skill == "audio"
    assert not has_own_split(folder / "test.jsonl", "dev")


def test_malformed_benchmark_lines_name_file_and_line(tmp_path: Path) -> None:
    good = json.loads((FIXTURES / "massive" / "en-US.jsonl").read_text().splitlines()[0])
    path = tmp_path / "en-US.jsonl"
    path.write_text(
        json.dumps(good) + "\n" + json.dumps({**good, "annot_utt": "wake [time : ]"}) + "\n"
    )
    with pytest.raises(DataError, match=r"en-US.jsonl:2: empty filler"):
        load_split(path, "train")
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "scenario": ""}) + "\n")
    with pytest.raises(DataError, match=r"en-US.jsonl:2: missing or empty field\(s\): scenario"):
        load_split(path, "train")
    slurp = tmp_path / "slurp"
    slurp.mkdir()
    (slurp / "train.jsonl").write_text(
        '{"sentence_annotation": "hi", "scenario": "x", "action": "y"}\n{oops\n'
    )
    with pytest.raises(DataError, match=r"train.jsonl:2: invalid JSON"):
        load_split(slurp, "train")
    with pytest.raises(DataError, match=r"devel.jsonl: missing"):
        load_split(slurp, "dev")


def test_mean_stderr_and_report() -> None:
    stat = mean_stderr([90.0, 92.0, 94.0])
    assert stat == {"mean": 92.0, "stderr": 1.15, "n": 3}
    assert mean_stderr([80.0])["stderr"] == 0.0
    cell = {"mean": 1.0, "stderr": 0.0, "n": 1}
    report = {
        "benchmark": "x",
        "seeds": 1,
        "test": {m: cell for m in ("intent_accuracy", "slot_f1", "exact_match", "router_accuracy")},
        "train_seconds": cell,
        "examples_per_second": cell,
        "slot_metric": "strict",
        "protocol": "p",
        "config": {"epochs": 1},
        "runs": [{"unseen_test_labels": {"intents": {"x/y": 1}}}],
    }
    text = format_report(report)
    assert "| 1.00 ± 0.00 |" in text and "never seen in training" in text


def test_benchmark_command_reports_every_seed(tiny_encoder: str, tmp_path: Path) -> None:
    from nlu.cli import main

    data = FIXTURES / "massive" / "en-US.jsonl"
    out = tmp_path / "bench"
    argv = ["benchmark", "massive", "--data", str(data), "--seeds", "2", "--out", str(out)]
    assert main([*argv, "--encoder", tiny_encoder, "epochs=2", "batch_size=4"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [r["seed"] for r in report["runs"]] == [0, 1]
    assert report["config"]["encoder"] == tiny_encoder and report["config"]["epochs"] == 2
    assert report["test"]["intent_accuracy"]["n"] == 2
    assert all(r["test"]["n"] == 2 for r in report["runs"])  # the two test-partition lines
    assert (out / "report.md").read_text().startswith("## massive (2 seeds, test split)")
