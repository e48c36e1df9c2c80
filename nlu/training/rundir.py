"""The run folder stage: where a run writes (model/, checkpoints/, config.yaml), what it
resumes from, and `Run`, the started run every later stage takes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from accelerate import Accelerator

from nlu.config import ConfigError, OutputConfig, TrainConfig
from nlu.model import modeldir
from nlu.training.checkpoints import checkpoints_newest_first


@dataclass
class RunDir:
    root: Path
    # Checkpoints to resume from, newest first: resume takes the first that loads.
    resume_from: list[Path] = field(default_factory=list)

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"


@dataclass
class Run:
    """A started run (`start_run`): its folder, Accelerate, its training config, and the
    resolved config text saved with it (a recipe's own keys included)."""

    dir: RunDir
    accelerator: Accelerator
    cfg: TrainConfig
    resolved: str


def setup_run(cfg: OutputConfig) -> RunDir:
    """Where the run writes, and the checkpoint to resume from; fails before any data loading
    or training when there is nothing to resume."""
    run = RunDir(Path(cfg.output_dir))
    if not cfg.resume and not cfg.overwrite and modeldir.locate(run.root) == run.model_dir:
        raise ConfigError(
            f"{run.root} already holds a trained model ({run.model_dir}); choose another "
            "output_dir=..., pass overwrite=true to replace it, or resume=latest to continue "
            "its checkpoints"
        )
    if cfg.resume:
        if cfg.resume == "latest":
            run.resume_from = checkpoints_newest_first(run.checkpoints)
        elif Path(cfg.resume).is_dir():
            run.resume_from = [Path(cfg.resume)]
        if not run.resume_from:
            raise FileNotFoundError(
                f"no checkpoint to resume from at {cfg.resume!r} (looked in {run.checkpoints}); "
                "resume needs the output_dir of an earlier run of the same config"
            )
    if cfg.log_with != "none":
        check_tracker(cfg.log_with)
    return run


def check_tracker(name: str) -> None:
    """An unknown or uninstalled tracker is one config error, before anything is written."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    if name not in LOGGER_TYPE_TO_CLASS:
        raise ConfigError(
            f"log_with={name}: unknown tracker; one of none, {', '.join(LOGGER_TYPE_TO_CLASS)}"
        )
    if name not in [str(t) for t in get_available_trackers()]:
        extra = " (pip install 'nlu[tensorboard]')" if name == "tensorboard" else ""
        raise ConfigError(f"log_with={name}: the {name} package is not installed{extra}")
