"""Skill files: expansion is deterministic; every malformed file names file, line and problem."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from nlu.data.loaders import load_split
from nlu.data.skills import expand_skill, parse_skill_file, parse_tests_file
from nlu.schema import DataError
from tests.helpers import SKILLS

GOOD = """\
skill: kitchen
description: Cooking help.
slots:
  dish:
    values: [pasta, {value: chili con carne, synonyms: [chili]}]
  time:
    values: [6:30, noon]
intents:
  cook:
    slots: [dish]
    utterances:
      - how do i cook {dish}
      - "{dish} recipe please"
      - teach me to make [lasagne](dish)
  schedule:
    slots: {start: time, dish: dish}
    utterances:
      - start the {dish} at {start}
"""


def write_skill(tmp_path: Path, text: str, name: str = "kitchen") -> Path:
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "skill.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_expansion_is_deterministic_and_fills_slots(tmp_path: Path) -> None:
    spec = parse_skill_file(write_skill(tmp_path, GOOD))
    first = expand_skill(spec, samples_per_template=5, seed=1)
    assert first == expand_skill(spec, samples_per_template=5, seed=1)
    assert first != expand_skill(spec, samples_per_template=5, seed=2)
    texts = {e.text for e in first}
    assert "teach me to make lasagne" in texts
    assert {"how do i cook pasta", "how do i cook chili con carne", "how do i cook chili"} <= texts
    for ex in first:
        for span in ex.slots:
            assert ex.value(span) in {
                "pasta",
                "chili con carne",
                "chili",
                "lasagne",
                "6:30",
                "noon",
            }
    # Slot names map to types: `start` is filled from `time`, and "6:30" stays text.
    schedule = [e for e in first if e.intent == "schedule"]
    assert any(e.value(s) == "6:30" and s.slot == "start" for e in schedule for s in e.slots)
    assert spec.labels.slots == ["dish", "start"]


def test_whitespace_in_templates_is_normalised(tmp_path: Path) -> None:
    text = GOOD.replace("how do i cook {dish}", "how  do i   cook {dish}  ")
    spec = parse_skill_file(write_skill(tmp_path, text))
    ex = next(
        e for e in expand_skill(spec, samples_per_template=1, seed=0) if e.text.startswith("how")
    )
    assert "  " not in ex.text
    assert ex.value(ex.slots[0]) in ex.text.split("cook ")[1]


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        (
            ("how do i cook {dish}", "how do i cook {dsh}"),
            12,
            "uses slot 'dsh', which intent 'cook' does not declare",
        ),
        (
            ("teach me to make [lasagne](dish)", "teach me to make [lasagne](dishes)"),
            14,
            "does not declare",
        ),
        (
            ("teach me to make [lasagne](dish)", "teach me to make [lasagne(dish)"),
            14,
            "malformed markup",
        ),
        (("how do i cook {dish}", "how do i cook {dish"), 12, "malformed markup"),
        (
            ("slots: {start: time, dish: dish}", "slots: {start: clock, dish: dish}"),
            16,
            "type 'clock', which is not declared",
        ),
        (("  cook:\n", "  cook:\n    priority: high\n"), 10, "unknown key(s) priority"),
        (("skill: kitchen", "skill: Kitchen Helper"), 1, "must start with a letter"),
        (("skill: kitchen", "skill: cooking"), 1, "must match its folder name"),
        (("values: [6:30, noon]", "values: []"), 7, "non-empty list `values`"),
        (
            ('"{dish} recipe please"', "{dish} recipe please"),
            None,
            "quote utterances that start with {",
        ),
    ],
)
def test_malformed_skill_file_names_file_line_and_problem(
    tmp_path: Path, change: tuple[str, str], line: int | None, message: str
) -> None:
    old, new = change
    assert old in GOOD
    path = write_skill(tmp_path, GOOD.replace(old, new))
    with pytest.raises(DataError) as err:
        parse_skill_file(path)
    text = str(err.value)
    assert str(path) in text
    assert message in text
    if line is not None:
        assert f"{path}:{line}:" in text


def test_tests_file_must_be_literal_and_match_the_skill(tmp_path: Path) -> None:
    spec = parse_skill_file(write_skill(tmp_path, GOOD))
    tests = tmp_path / "kitchen" / "tests.yaml"
    tests.write_text("cook:\n  - what goes into [pho](dish)\n")
    (ex,) = parse_tests_file(tests, spec)
    assert ex.text == "what goes into pho" and ex.value(ex.slots[0]) == "pho"
    tests.write_text("cook:\n  - make {dish}\n")
    with pytest.raises(DataError, match=r"tests.yaml:2: cook.0: test utterances are literal"):
        parse_tests_file(tests, spec)
    tests.write_text("bake:\n  - make bread\n")
    with pytest.raises(DataError, match="unknown intent 'bake'"):
        parse_tests_file(tests, spec)


def test_shipped_skills_are_valid_and_big_enough() -> None:
    root = SKILLS
    train = load_split(root, "train")
    test = load_split(root, "test").examples
    assert len(train.declared) >= 5
    for labels in train.declared:
        assert len(labels.intents) >= 3, labels.name
        assert len(labels.slots) >= 3, labels.name
        assert sum(e.skill == labels.name for e in test) >= 30, labels.name
    # The hand-written tests are not template outputs: no test text appears in the expansion.
    generated = {e.text for e in train.examples} | {
        e.text for e in load_split(root, "dev").examples
    }
    assert not generated & {e.text for e in test}


SKILL = """skill: alarm
intents:
  set_alarm:
    utterances:
      - wake me up
  set_alarm:
    utterances:
      - another one
"""


def test_duplicate_keys_in_a_skill_file_are_a_path_line_error(tmp_path: Path) -> None:
    from nlu.data.skills import parse_skill_file

    path = tmp_path / "skill.yaml"
    path.write_text(SKILL)
    with pytest.raises(DataError, match=r"skill\.yaml:6: duplicate key 'intents\.set_alarm' "):
        parse_skill_file(path)
    path.write_text("skill: alarm\nintents:\n  set_alarm: [\n")
    with pytest.raises(DataError, match=r"skill\.yaml:4: invalid YAML"):
        parse_skill_file(path)
    path.write_bytes(b"skill: alarm\nintents:\n  caf\xe9: {}\n")
    with pytest.raises(DataError, match=r"skill\.yaml:3: not valid UTF-8"):
        parse_skill_file(path)
