"""What a run checks before it writes anything: the encoder, the run folder, the tests file, the
tracker; and what it writes beside the model (tracking, learning curve)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nlu.config import ConfigError
from nlu.schema import DataError
from tests.helpers import broken_tests


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


def test_training_into_a_finished_run_needs_overwrite(
    trained: Any, make_config: Callable[..., Any]
) -> None:
    from nlu.training.train import train

    run = Path(trained.model_dir).parent
    before = (Path(trained.model_dir) / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(ConfigError, match=r"already holds a trained model.*overwrite=true"):
        train(make_config(run))
    assert (Path(trained.model_dir) / "model.safetensors").stat().st_mtime_ns == before


def test_train_checks_the_tests_file_before_training(
    tmp_path: Path, make_config: Callable[..., Any]
) -> None:
    from nlu.training.train import train

    out = tmp_path / "run"
    with pytest.raises(DataError, match=r"(?s)rooom.*unknown intent 'dance'"):
        train(make_config(out, data=[str(broken_tests(tmp_path))]))
    assert not out.exists()


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
