"""Epoch checkpoints: Accelerate's state, the run's progress and the best weights so far, so
that `resume=latest` continues a run exactly and still ends on its best epoch."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from safetensors.torch import load_file, save_file

logger = get_logger(__name__)

TRAINER_STATE = "trainer_state.json"
# The selected epoch's weights: the model folder is written once, at the end of the run.
BEST_WEIGHTS = "best_model.safetensors"

Weights = dict[str, torch.Tensor]


@dataclass
class Progress:
    """What a checkpoint records beside Accelerate's state; it makes resume exact."""

    epoch: int = -1  # last finished epoch (0-based)
    best_score: float = -1.0
    best_epoch: int = -1
    best_dev: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def weights_of(model: torch.nn.Module) -> Weights:
    """A copy of the model's weights (own storage each, so later steps cannot change it)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class CheckpointError(FileNotFoundError):
    """No checkpoint could be resumed from."""


def resume(accelerator: Accelerator, candidates: Sequence[Path]) -> tuple[Progress, Weights | None]:
    """Load the first checkpoint that loads whole (newest first); say which were skipped."""
    problems = []
    for checkpoint in candidates:
        try:
            progress = Progress(**json.loads((checkpoint / TRAINER_STATE).read_text()))
            accelerator.load_state(str(checkpoint))
            best = (
                load_file(checkpoint / BEST_WEIGHTS)
                if (checkpoint / BEST_WEIGHTS).exists()
                else None
            )
        except Exception as err:  # torch, safetensors and pickle each raise their own types
            reason = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
            problems.append(f"{checkpoint.name} ({reason})")
            logger.warning("skipping checkpoint %s, it does not load: %s", checkpoint, reason)
            continue
        if best is None and progress.best_epoch >= 0:
            # Written by nlu 0.1, which kept the best weights in the model folder instead.
            logger.warning(
                "checkpoint %s has no %s (nlu 0.1): the best epoch is chosen again among the "
                "epochs still to run",
                checkpoint,
                BEST_WEIGHTS,
            )
            progress.best_score, progress.best_epoch, progress.best_dev = -1.0, -1, None
        logger.info("resumed from %s at epoch %d", checkpoint, progress.epoch + 2)
        return progress, best
    raise CheckpointError(
        "no checkpoint could be resumed from: " + "; ".join(problems) + ". Start the run again "
        "without --resume (or point --resume at an intact checkpoint folder)"
    )


def save_checkpoint(
    accelerator: Accelerator,
    checkpoints: Path,
    progress: Progress,
    best: Weights | None,
    *,
    keep: int,
) -> None:
    """Written under a temporary name and renamed when complete, so an `epoch_*` folder is
    always whole; older ones are removed only after that."""
    name = f"epoch_{progress.epoch + 1:03d}"
    staging = checkpoints / f".{name}.partial"
    accelerator.save_state(str(staging))
    if accelerator.is_main_process:
        (staging / TRAINER_STATE).write_text(json.dumps(progress.__dict__, indent=2))
        if best is not None:
            save_file(best, str(staging / BEST_WEIGHTS))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        target = checkpoints / name
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        for old in checkpoints_newest_first(checkpoints)[max(1, keep) :]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def checkpoints_newest_first(checkpoints: Path) -> list[Path]:
    return sorted(checkpoints.glob("epoch_*"), reverse=True)
