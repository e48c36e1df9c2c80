"""The beginning and the end every recipe shares: `start_run` (config saved, seed set,
Accelerate and its trackers started) and `finish_run` (the selected model calibrated in memory,
its folder saved once, the run's summary and learning curve written)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed

from nlu.config import TrainConfig
from nlu.model import modeldir
from nlu.schema import Example
from nlu.training.calibrate import fit_out_of_scope
from nlu.training.engine import ModelSetup, TrainResult
from nlu.training.rundir import Run, RunDir

logger = get_logger(__name__)


def start_run(
    run_dir: RunDir,
    cfg: TrainConfig,
    *,
    resolved: str,
    tracker_config: Mapping[str, Any] | None = None,
) -> Run:
    """Accelerate for this run, the seed set, the resolved config saved beside the model."""
    output, optim = cfg.output, cfg.optim
    tracking = output.log_with != "none"
    accelerator = Accelerator(
        mixed_precision=optim.mixed_precision,
        gradient_accumulation_steps=optim.gradient_accumulation_steps,
        log_with=output.log_with if tracking else None,
        project_dir=str(run_dir.root / "tracking") if tracking else None,
    )
    set_seed(cfg.seed)
    if accelerator.is_main_process:
        run_dir.root.mkdir(parents=True, exist_ok=True)
        (run_dir.root / "config.yaml").write_text(resolved)
    if tracking:
        accelerator.init_trackers("nlu", config=dict(tracker_config or {}))
    logger.info("%d process(es), %s", accelerator.num_processes, accelerator.device)
    return Run(run_dir, accelerator, cfg, resolved)


def finish_run(
    run: Run,
    setup: ModelSetup,
    result: TrainResult,
    *,
    fit_on: tuple[Sequence[Example], Sequence[Example]],
    keep_detector: str | None = None,
    summary: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Calibrate the selected model (out-of-scope detector and temperatures, fitted on
    `fit_on` = (train, dev)) unless `keep_detector` says why its base model's stays, then save
    the model folder once and write `train_summary.json` (plus `summary`) and the curve."""
    root = run.dir.root
    if run.accelerator.is_main_process:
        folder = setup.folder(
            run.resolved, {"best_epoch": result.best_epoch, "dev": result.best_dev}
        )
        if keep_detector:
            logger.info("keeping the base model's out-of-scope detector: %s", keep_detector)
        else:
            train, dev = fit_on
            detector = fit_out_of_scope(
                run.cfg.ood,
                setup.model,
                setup.tokenizer,
                setup.max_length,
                train,
                dev,
                seed=run.cfg.seed,
            )
            folder.ood = detector
            result.out_of_scope = detector.report if detector else None
        if folder.ood is None and run.cfg.ood.oos_method != "none":
            # Said in nlu.json, so that loading tells this model from one whose training
            # stopped before this stage (nlu.model.integrity).
            reason = keep_detector or "no in-scope dev texts to fit a detector on"
            folder.meta = dataclasses.replace(folder.meta, ood_skipped=reason)
        modeldir.save(run.dir.model_dir, folder)
        written = {k: str(v) if isinstance(v, Path) else v for k, v in result.__dict__.items()}
        written.update(summary or {})
        (root / "train_summary.json").write_text(json.dumps(written, indent=2) + "\n")
        plot_learning_curve(result.history, root / "learning_curve.png")
    run.accelerator.wait_for_everyone()
    run.accelerator.end_training()
    return result


def plot_learning_curve(history: Sequence[dict[str, Any]], path: Path) -> None:
    """Training loss and dev scores per epoch, beside train_summary.json."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [r["loss"] for r in history], marker="o")
    left.set(xlabel="epoch", ylabel="training loss", title="Loss")
    for key in ("intent_accuracy", "slot_f1", "exact_match", "router_accuracy"):
        values = [(r["epoch"], r["dev"][key]) for r in history if r.get("dev")]
        if values:
            right.plot(*zip(*values, strict=True), marker="o", label=key.replace("_", " "))
    right.set(xlabel="epoch", ylabel="%", title="Dev")
    if right.has_data():
        right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
