"""The Parser's contract: one string in, one result out; every text rule and backend choice
the same through the library, the CLI and the server."""

from __future__ import annotations

import json
from typing import Any

import pytest

import nlu
from nlu.cli import main
from nlu.inference.parser import Parser
from nlu.text import TextError
from nlu.training.engine import TrainResult


def test_parse_takes_one_string_and_returns_one_result(trained: Any) -> None:
    parser = Parser.from_pretrained(trained.model_dir)
    one = parser.parse("turn on the kitchen lights")
    assert not isinstance(one, list)
    assert one == parser.parse(["turn on the kitchen lights"])[0]
    with pytest.raises(TypeError, match="list of strings"):
        parser.parse_with_options("lights on", [])


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


@pytest.fixture(scope="module")
def parser(trained: TrainResult) -> Parser:
    return Parser.from_pretrained(trained.model_dir)


def test_nlu_load_takes_a_backend(trained: TrainResult) -> None:
    parser = nlu.load(trained.model_dir, backend="torch")
    assert parser.backend == "torch"
    assert json.loads(json.dumps(parser.parse(["lights on"])[0].to_dict()))["text"] == "lights on"
    with pytest.raises(ValueError, match="backend must be one of"):
        nlu.load(trained.model_dir, backend="tensorflow")
