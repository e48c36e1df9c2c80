"""Training data that could be misread is refused, naming file and line, by `nlu validate` and
`nlu train` alike, and before a run writes anything (issue 36)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nlu.cli import main

GOOD = '{"text": "stop the music", "skill": "music", "intent": "stop"}\n'
CASES = {
    "a key twice": (
        '{"text": "play jazz", "skill": "music", "intent": "play", "intent": "stop"}\n',
        ":1: the key 'intent' is given twice",
    ),
    "an empty skill": (
        '{"text": "play jazz", "skill": "", "intent": "play"}\n',
        ":1: example 'play jazz': an empty skill or intent name",
    ),
    "broken markup": (
        '{"text": "set a timer for [5 minutes](durration", "skill": "music", "intent": "x"}\n',
        ":1: malformed markup",
    ),
    "a boolean offset": (
        '{"text": "play jazz", "skill": "music", "intent": "play", '
        '"slots": [{"start": true, "end": 4, "slot": "x"}]}\n',
        ':1: slots must be a list of {"start": int',
    ),
    "a lone surrogate": (
        '{"text": "play \\ud800 jazz", "skill": "music", "intent": "play"}\n',
        ":1: a lone UTF-16 surrogate '\\ud800' at character 5",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_misreadable_jsonl_is_refused_by_validate_and_train(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line, message = CASES[case]
    data = tmp_path / "data.jsonl"
    data.write_text(GOOD + line + GOOD.replace("stop the", "pause the"))
    assert main(["validate", str(data)]) == 2
    said = "".join(capsys.readouterr())
    assert f"{data}:2" + message.removeprefix(":1") in said, said
    run = tmp_path / "run"
    assert main(["train", f"data={data}", f"output_dir={run}", "epochs=1"]) == 2
    assert message.removeprefix(":1") in capsys.readouterr().err
    assert not run.exists()  # refused before the run folder or its config.yaml


def test_a_file_that_is_not_utf8_names_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.jsonl"
    data.write_bytes(GOOD.encode() + b'{"text": "caf\xe9", "skill": "music", "intent": "x"}\n')
    assert main(["validate", str(data)]) == 2
    assert f"{data}:2: not valid UTF-8 (byte 0xe9)" in "".join(capsys.readouterr())


def test_yaml_aliases_are_refused_in_skills_and_configs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 751 bytes that would expand to 9^9 strings: refused at once, not after gigabytes.
    levels = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        levels.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    skill = tmp_path / "skills" / "bomb"
    skill.mkdir(parents=True)
    (skill / "skill.yaml").write_text("\n".join(levels) + "\nskill: bomb\n")
    assert main(["validate", str(tmp_path / "skills")]) == 2
    said = "".join(capsys.readouterr())
    assert "skill.yaml:2: invalid YAML: aliases (*name) are not allowed" in said
    config = tmp_path / "config.yaml"
    config.write_text("epochs: &n 3\nbatch_size: *n\n")
    assert main(["train", str(config)]) == 2
    assert f"cannot read config {config}:2: aliases" in capsys.readouterr().err


def test_one_text_under_two_intents_is_warned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(GOOD + GOOD.replace('"stop"', '"pause"'))
    main(["validate", str(data)])
    said = "".join(capsys.readouterr())
    assert "'stop the music' is labelled music/stop and music/pause; keep one" in said
