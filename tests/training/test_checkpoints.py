"""Resuming from checkpoints: a broken newest checkpoint is skipped, none intact is one error."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from nlu.config import TrainConfig
from nlu.training.train import train


def test_resume_skips_a_broken_newest_checkpoint(
    make_config: Callable[..., TrainConfig], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nlu.training")
    first = train(make_config(tmp_path, epochs=2, keep_checkpoints=3))
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "epoch_002" / "optimizer.bin").write_bytes(b"\x00" * 10)  # torn save
    (checkpoints / ".epoch_003.partial").mkdir()  # a save killed half way is never a candidate
    resumed = train(make_config(tmp_path, epochs=3, keep_checkpoints=3, resume="latest"))
    assert "skipping checkpoint" in caplog.text and "epoch_002" in caplog.text
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.history[0] == first.history[0]
    assert "resumed from" in caplog.text and "epoch_001 at epoch 2" in caplog.text


def test_resume_with_no_intact_checkpoint_is_a_clear_error(
    make_config: Callable[..., TrainConfig], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train(make_config(tmp_path, epochs=1))
    (tmp_path / "checkpoints" / "epoch_001" / "trainer_state.json").unlink()
    from nlu.training.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match=r"epoch_001 \(FileNotFoundError"):
        train(make_config(tmp_path, epochs=2, resume="latest"))
