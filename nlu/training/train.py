"""The training recipe: joint multi-skill training (`nlu train`), a new model on an encoder or
a saved model fine-tuned (`--from`), built from the engine's stages (nlu.training.engine)."""

from __future__ import annotations

from typing import Any

from accelerate.logging import get_logger

from nlu.config import FinetuneConfig, TrainConfig, dump_config, flat
from nlu.data.loaders import TrainData, check_test_files, load_train_dev
from nlu.model.encoders import check_encoder
from nlu.model.joint import JointModel
from nlu.training.engine import TrainResult, log_data, setup_model, train_model
from nlu.training.run import finish_run, start_run
from nlu.training.rundir import setup_run

logger = get_logger(__name__)


def keeps_detector(finetune: FinetuneConfig, model: JointModel, data: TrainData) -> str | None:
    """Why a fine-tuned model keeps its base model's detector, or None to refit it (its
    statistics would miss the skills the data does not cover)."""
    if not finetune.init_from:
        return None
    if finetune.finetune == "lora":
        return "a per-skill adapter leaves the base encoder and router unchanged"
    missing = set(model.index.names) - {e.skill for e in data.train if e.skill}
    if missing:
        return f"the data has no examples of {', '.join(sorted(missing))}"
    return None


def flat_config(cfg: TrainConfig) -> dict[str, Any]:
    """The config as flat scalars, as trackers' hyperparameter tables want it."""
    return {
        k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in flat(cfg).items()
    }


def train(cfg: TrainConfig) -> TrainResult:
    resolved = dump_config(cfg)
    # These fail before anything is written: no stray config.yaml from a run that cannot start.
    run_dir = setup_run(cfg.output)
    if not cfg.finetune.init_from:
        check_encoder(cfg.model.encoder)
    check_test_files(cfg.data)  # a broken tests.yaml fails now, not at `nlu evaluate`
    data = load_train_dev(cfg.data, seed=cfg.seed)  # and bad training data
    run = start_run(run_dir, cfg, resolved=resolved, tracker_config=flat_config(cfg))
    log_data(data)
    setup = setup_model(cfg, data)
    result = train_model(run, setup, data.train, data.dev)
    return finish_run(
        run,
        setup,
        result,
        fit_on=(data.train, data.dev),
        keep_detector=keeps_detector(cfg.finetune, setup.model, data),
    )
