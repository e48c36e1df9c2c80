from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
import yaml

from nlu.config import ConfigError, TrainConfig, dump_config, load_config
from nlu.train import train


def test_yaml_plus_overrides_are_typed(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 3\ndata: [skills]\nlearning_rate: 1e-4\n")
    cfg = load_config(
        path, ["epochs=5", "learning_rate=3e-5", "data=a,b", "resume=null", "head_learning_rate=1"]
    )
    assert cfg.epochs == 5 and cfg.learning_rate == 3e-5 and cfg.data == ["a", "b"]
    assert cfg.resume is None and cfg.head_learning_rate == 1.0
    assert yaml.safe_load(dump_config(cfg))["epochs"] == 5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["epoch=3"], "unknown key(s) epoch"),
        (["epochs=three"], "epochs must be int"),
        (["epochs=true"], "epochs must be int"),
        (["epochs"], "must look like key=value"),
    ],
)
def test_bad_config_is_an_error(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, overrides)


def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 3\nlr: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) lr"):
        load_config(path)


def test_config_fields_are_exactly_the_train_arguments() -> None:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert fields == set(inspect.signature(train).parameters)


def test_optional_mpnet_encoder_says_how_to_fetch_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nlu.model import ModelDirError, resolve_encoder

    monkeypatch.setenv("NLU_MODELS", str(tmp_path))
    with pytest.raises(ModelDirError, match=r"scripts/get_mpnet\.sh"):
        resolve_encoder("mpnet")
    (tmp_path / "all-mpnet-base-v2").mkdir()
    (tmp_path / "all-mpnet-base-v2" / "config.json").write_text("{}")
    assert resolve_encoder("mpnet") == str(tmp_path / "all-mpnet-base-v2")
    assert resolve_encoder("bert-base-uncased") == "bert-base-uncased"
