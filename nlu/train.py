"""The training recipe: joint multi-skill training with Accelerate, in stages.

`train(cfg)` runs, top to bottom: set up the run folder, the data, the model, the batches, the
loss weighting and the optimiser; then `fit` (the one training loop: prepare, resume, epochs,
dev evaluation, model selection, checkpoints). Other recipes (distillation, federated clients)
call the same stages with their own data or loss.

Runs the same on CPU, one GPU, or many (`accelerate launch -m nlu.cli train ...`).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from nlu import modeldir
from nlu.alignment import Tokenizer, check_tokenizer, pad_id
from nlu.calibrate import fit_out_of_scope
from nlu.config import (
    ConfigError,
    DataConfig,
    FinetuneConfig,
    ModelConfig,
    MultiTaskConfig,
    OptimConfig,
    OutputConfig,
    TrainConfig,
    dump_config,
    flat,
)
from nlu.data.loaders import TrainData, check_test_files, load_train_dev, unseen_labels
from nlu.evaluate import score
from nlu.features import collate, featurize
from nlu.finetune import Saver, check_labels, freeze_for
from nlu.model import JointModel, JointOutput, build_model, check_encoder, layer_of
from nlu.mtl import LossWeighting, SkillSampler
from nlu.predict import parse_batch, torch_forward
from nlu.schema import Example
from nlu.sharing import SharingError, sharing_for

# Logs once, from the main process, however many processes `accelerate launch` starts.
logger = get_logger(__name__)

TRAINER_STATE = "trainer_state.json"
MIXING_PARAMETERS = ("encoder.mixing", "encoder.layer_mixing")

# (model output, the batch's soft_* tensors, the weighted hard loss) -> the loss to minimise.
DistillLoss = Callable[[JointOutput, Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]


@dataclass
class TrainResult:
    model_dir: Path
    best_epoch: int
    best_dev: dict[str, Any] | None
    train_seconds: float
    examples_per_second: float
    history: list[dict[str, Any]]
    # What fitting the out-of-scope detector measured on dev (nlu.calibrate), per method.
    out_of_scope: dict[str, Any] | None = None


# -- stage: run folder -----------------------------------------------------------------------------


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
    return run


# -- stage: data -----------------------------------------------------------------------------------


def load_data(cfg: DataConfig, *, seed: int) -> TrainData:
    """The data stage: train and dev examples and their label space, logged."""
    data = load_train_dev(cfg, seed=seed)
    logger.info(
        "%d train / %d dev examples, %d skills: %s",
        len(data.train),
        len(data.dev),
        len(data.labels),
        ", ".join(s.name for s in data.labels),
    )
    unseen = unseen_labels(data.labels, data.dev)
    if any(unseen.values()):
        logger.warning("dev labels never seen in training (they count as errors): %s", unseen)
    return data


# -- stage: model ----------------------------------------------------------------------------------


@dataclass
class ModelSetup:
    model: JointModel
    tokenizer: Tokenizer
    max_length: int
    # Writes the model folder: (directory, resolved training config) -> None.
    save: Saver
    # False when fine-tuning on one skill's data: the router cannot learn anything then.
    train_router: bool = True


def setup_model(
    model_cfg: ModelConfig,
    finetune: FinetuneConfig,
    data: TrainData,
    *,
    label_smoothing: float,
    orthogonality_weight: float = 0.0,
) -> ModelSetup:
    """A new joint model on the encoder, or (finetune.init_from) a saved one prepared for its
    fine-tuning mode."""
    if finetune.init_from:
        model, folder = JointModel.load(finetune.init_from)
        check_labels(model, data.labels, finetune.init_from)
        if model.sharing is not None and finetune.finetune in ("lora", "lora_merged"):
            raise ConfigError(
                f"finetune={finetune.finetune}: {finetune.init_from} shares its encoder softly "
                f"({model.sharing.mode}); LoRA adapters need one encoder. Use finetune=full, "
                "top_layers or heads"
            )
        data_skills = sorted({e.skill for e in data.train if e.skill is not None})
        train_router = len(data_skills) > 1
        if not train_router:
            logger.info("one skill in the data: the router is frozen and its loss is off")
        save = freeze_for(
            model,
            folder,
            mode=finetune.finetune,
            unfreeze_layers=finetune.unfreeze_layers,
            lora_rank=finetune.lora_rank,
            lora_modules=finetune.lora_modules,
            train_router=train_router,
            data_skills=data_skills,
        )
        tokenizer, max_length = folder.tokenizer, model_cfg.max_length
    else:
        try:
            sharing = sharing_for(
                model_cfg.sharing,
                model_cfg.sharing_groups,
                model_cfg.subspaces,
                [s.name for s in data.labels],
            )
        except SharingError as err:
            raise ConfigError(str(err)) from None
        model, tokenizer = build_model(
            encoder=model_cfg.encoder,
            skills=data.labels,
            pooling=model_cfg.pooling,
            dropout=model_cfg.dropout,
            sharing=sharing,
            router_input=model_cfg.router_input,
        )
        train_router, max_length = True, model_cfg.max_length

        def save(directory: Path, training_config: str, metrics: dict[str, Any] | None) -> None:
            folder = model.to_folder(
                tokenizer=tokenizer, max_length=max_length, training_config=training_config
            )
            folder.metrics = metrics
            modeldir.save(directory, folder)

    check_tokenizer(tokenizer)
    model.label_smoothing = label_smoothing
    model.orthogonality_weight = orthogonality_weight
    model.train()
    return ModelSetup(model, tokenizer, max_length, save, train_router)


# -- stage: batches --------------------------------------------------------------------------------


def setup_batches(
    examples: Sequence[Example],
    setup: ModelSetup,
    *,
    batch_size: int,
    mtl: MultiTaskConfig,
    epochs: int,
    seed: int,
    extra: Callable[[Sequence[int], int], dict[str, torch.Tensor]] | None = None,
) -> tuple[DataLoader[dict[str, torch.Tensor]], SkillSampler]:
    """Named, dynamically padded batches; the sampler decides how often each skill is drawn.

    `extra(rows, width)`: more named tensors for the batch of these example rows, padded to
    `width` tokens (distillation's soft targets)."""
    features = featurize(
        examples,
        tokenizer=setup.tokenizer,
        index=setup.model.index,
        max_length=setup.max_length,
    )
    if extra is not None:
        features = features.add_column("row", list(range(len(examples))))
    sampler = SkillSampler(
        features["skill_ids"],
        strategy=mtl.sampling,
        temperature=mtl.sampling_temperature,
        epochs=epochs,
        seed=seed,
    )
    padding = pad_id(setup.tokenizer)

    def collate_rows(rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = collate(rows, pad_id=padding)
        if extra is not None:
            batch.update(extra([r["row"] for r in rows], batch["input_ids"].shape[1]))
        return batch

    loader: DataLoader[dict[str, torch.Tensor]] = DataLoader(
        features,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate_rows,
    )
    return loader, sampler


# -- stage: optimiser ------------------------------------------------------------------------------


def param_groups(
    model: JointModel,
    *,
    learning_rate: float,
    head_learning_rate: float,
    weight_decay: float,
    layer_lr_decay: float = 1.0,
    mixing_learning_rate: float | None = None,
) -> list[dict[str, Any]]:
    """Encoder and heads get their own learning rates; no decay on biases and LayerNorm.

    With layer_lr_decay < 1 the encoder's top layer learns at `learning_rate` and each layer
    below at `layer_lr_decay` times the one above (embeddings lowest), so the general features
    of lower layers move least. LoRA adapter weights are new parameters (B starts at zero), so
    they learn at the heads' rate, not the pretrained encoder's. Soft sharing's mixing weights
    learn at `mixing_learning_rate` (default: the heads' rate), without weight decay.
    """
    layers = int(getattr(model.encoder_config, "num_hidden_layers", 0))
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name in MIXING_PARAMETERS:
            lr = head_learning_rate if mixing_learning_rate is None else mixing_learning_rate
            groups.setdefault((lr, True), []).append(param)
            continue
        if name.startswith("encoder.") and ".lora_" not in name:
            depth = encoder_depth(name, layers)
            lr = learning_rate * layer_lr_decay ** (layers - depth)
        else:
            lr = head_learning_rate
        groups.setdefault((lr, param.ndim < 2), []).append(param)
    return [
        {"params": params, "lr": lr, "weight_decay": 0.0 if no_decay else weight_decay}
        for (lr, no_decay), params in groups.items()
    ]


def encoder_depth(name: str, layers: int) -> int:
    """0 for embeddings, l for transformer layer l (1-based), `layers` for anything on top."""
    layer = layer_of(name)
    if layer is not None:
        return layer + 1
    return 0 if "embeddings" in name else layers


def setup_optimizer(
    cfg: OptimConfig, model: JointModel, weighting: LossWeighting, *, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    groups = param_groups(
        model,
        learning_rate=cfg.learning_rate,
        head_learning_rate=cfg.head_learning_rate,
        weight_decay=cfg.weight_decay,
        layer_lr_decay=cfg.layer_lr_decay,
        mixing_learning_rate=cfg.mixing_learning_rate,
    )
    if weighting.log_vars.requires_grad:  # learned task weights (uncertainty)
        groups.append(
            {"params": [weighting.log_vars], "lr": cfg.head_learning_rate, "weight_decay": 0}
        )
    optimizer = torch.optim.AdamW(groups)
    total = math.ceil(steps_per_epoch / cfg.gradient_accumulation_steps) * cfg.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)
    return optimizer, scheduler


# -- stage: fit ------------------------------------------------------------------------------------


def evaluate_dev(
    accelerator: Accelerator,
    model: JointModel,
    tokenizer: Tokenizer,
    loader: DataLoader[list[int]],
    examples: Sequence[Example],
    max_length: int,
) -> dict[str, Any]:
    """Dev metrics through the serving code path (parse_batch), sharded across processes."""
    model.eval()
    forward = torch_forward(model)
    by_index: dict[int, Any] = {}
    for indices in loader:
        texts = [examples[i].text for i in indices]
        batch = parse_batch(forward, model.index, tokenizer, texts, max_length=max_length)
        # Processes see interleaved shards: carry each example's index through the gather.
        gathered = accelerator.gather_for_metrics(
            list(zip(indices, batch, strict=True)), use_gather_object=True
        )
        by_index.update(gathered)
    model.train()
    missing = len(examples) - len(by_index)
    if missing:
        raise RuntimeError(f"dev evaluation lost {missing} of {len(examples)} predictions")
    return score(examples, [by_index[i] for i in range(len(examples))], tokenizer=tokenizer)


@dataclass
class Progress:
    """What a checkpoint records beside Accelerate's state; it makes resume exact."""

    epoch: int = -1  # last finished epoch (0-based)
    best_score: float = -1.0
    best_epoch: int = -1
    best_dev: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def run_epoch(
    accelerator: Accelerator,
    model: torch.nn.Module,
    batches: DataLoader[dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    weighting: LossWeighting,
    combine: Callable[[Any], torch.Tensor],
    *,
    max_grad_norm: float,
    desc: str,
    distill: DistillLoss | None = None,
    progress: bool = True,
) -> tuple[float, int, float]:
    """One pass over the prepared batches: (running loss, examples, seconds).

    The step every recipe shares: `fit` runs it per epoch, a federated client per round.
    `distill(output, soft, hard)` may replace the weighted loss (distillation, FedProx)."""
    started, examples, running = time.perf_counter(), 0, 0.0
    bar = tqdm(batches, desc=desc, disable=not (progress and accelerator.is_local_main_process))
    for step, batch in enumerate(bar):
        with accelerator.accumulate(model):
            soft = {k: batch.pop(k) for k in [k for k in batch if k.startswith("soft_")]}
            output = model(**batch)
            loss = combine(output.losses)
            if distill is not None:
                loss = distill(output, soft, loss)
            if output.penalty is not None:  # sluice sharing's orthogonality penalty
                loss = loss + output.penalty
            accelerator.backward(loss)
            if accelerator.sync_gradients and max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            if accelerator.sync_gradients:
                weighting.step()
        examples += len(batch["input_ids"]) * accelerator.num_processes
        running = 0.9 * running + 0.1 * loss.item() if step else loss.item()
        elapsed = time.perf_counter() - started
        bar.set_postfix(loss=f"{running:.3f}", ex_s=f"{examples / max(elapsed, 1e-9):.0f}")
    return running, examples, time.perf_counter() - started


def fit(
    accelerator: Accelerator,
    setup: ModelSetup,
    loader: DataLoader[dict[str, torch.Tensor]],
    sampler: SkillSampler,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    weighting: LossWeighting,
    *,
    dev: Sequence[Example],
    optim: OptimConfig,
    run: RunDir,
    keep_checkpoints: int,
    training_config: str,
    distill: DistillLoss | None = None,
) -> TrainResult:
    """The training loop: prepare, resume, epochs (train, evaluate on dev, keep the best model,
    checkpoint).

    `distill(output, soft, hard)`: the loss from the model output, the batch's `soft_*`
    tensors and the weighted hard loss (distillation mixes in the teachers' distributions)."""
    dev_loader: DataLoader[list[int]] = DataLoader(
        list(range(len(dev))),  # type: ignore[arg-type]
        batch_size=64,
        collate_fn=list,
    )
    # Prepared objects are Accelerate's wrappers (DDP, sharded loaders, ...).
    model, optimizer, batches, dev_batches, scheduler = accelerator.prepare(
        setup.model, optimizer, loader, dev_loader, scheduler
    )
    # Learned task weights (uncertainty) are parameters: replicate them across processes too.
    learned = weighting.log_vars.requires_grad
    combine = accelerator.prepare(weighting) if learned else weighting
    # DWA's running means are restored on resume with the rest (the log-variances are a model).
    accelerator.register_for_checkpointing(weighting.dwa)
    raw_model: JointModel = accelerator.unwrap_model(model)

    progress = resume(accelerator, run.resume_from) if run.resume_from else Progress()

    model.train()
    history = progress.history
    train_seconds = sum(h["seconds"] for h in history)
    seen = sum(h["examples"] for h in history)
    for epoch in range(progress.epoch + 1, optim.epochs):
        # Through the prepared loader: Accelerate keeps its own epoch counter and hands it to
        # the sampler, so a resumed run draws the order of this epoch, not of epoch 0.
        batches.set_epoch(epoch)
        running, epoch_examples, epoch_seconds = run_epoch(
            accelerator,
            model,
            batches,
            optimizer,
            scheduler,
            weighting,
            combine,
            max_grad_norm=optim.max_grad_norm,
            desc=f"epoch {epoch + 1}/{optim.epochs}",
            distill=distill,
        )
        train_seconds += epoch_seconds
        seen += epoch_examples

        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": round(running, 4),
            "seconds": round(epoch_seconds, 1),
            "examples": epoch_examples,
        }
        if sampler.strategy != "proportional":
            names = raw_model.index.names
            record["skill_probabilities"] = {
                (names[k] if k >= 0 else "out_of_scope"): round(p, 4)
                for k, p in sampler.probabilities().items()
            }
        if weighting.strategy != "static":
            record["loss_weights"] = weighting.effective_weights()
        if dev:
            metrics = evaluate_dev(
                accelerator, raw_model, setup.tokenizer, dev_batches, dev, setup.max_length
            )
            overall = metrics["overall"]
            record["dev"] = overall
            # Select on dev exact match; intent accuracy + slot F1 break ties.
            selection = overall["exact_match"] + 1e-3 * (
                overall["intent_accuracy"] + overall["slot_f1"]
            )
        else:
            selection = float(epoch)  # no dev data: keep the last epoch
        history.append(record)
        logger.info("epoch %d: %s", epoch + 1, json.dumps(record))
        accelerator.log(tracked(record), step=epoch + 1)  # a no-op without trackers
        if selection > progress.best_score:
            progress.best_score, progress.best_epoch = selection, epoch + 1
            progress.best_dev = record.get("dev")
            if accelerator.is_main_process:
                setup.save(
                    run.model_dir,
                    training_config,
                    {"best_epoch": epoch + 1, "dev": progress.best_dev},
                )
        progress.epoch, progress.history = epoch, history
        save_checkpoint(accelerator, run.checkpoints, progress, keep=keep_checkpoints)

    return TrainResult(
        model_dir=run.model_dir,
        best_epoch=progress.best_epoch,
        best_dev=progress.best_dev,
        train_seconds=round(train_seconds, 1),
        examples_per_second=round(seen / max(train_seconds, 1e-9), 1),
        history=history,
    )


class CheckpointError(FileNotFoundError):
    """No checkpoint could be resumed from."""


def resume(accelerator: Accelerator, candidates: Sequence[Path]) -> Progress:
    """Load the first checkpoint that loads whole (newest first); say which were skipped."""
    problems = []
    for checkpoint in candidates:
        try:
            progress = Progress(**json.loads((checkpoint / TRAINER_STATE).read_text()))
            accelerator.load_state(str(checkpoint))
        except Exception as err:  # torch, safetensors and pickle each raise their own types
            reason = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
            problems.append(f"{checkpoint.name} ({reason})")
            logger.warning("skipping checkpoint %s, it does not load: %s", checkpoint, reason)
            continue
        logger.info("resumed from %s at epoch %d", checkpoint, progress.epoch + 2)
        return progress
    raise CheckpointError(
        "no checkpoint could be resumed from: " + "; ".join(problems) + ". Start the run again "
        "without --resume (or point --resume at an intact checkpoint folder)"
    )


def save_checkpoint(
    accelerator: Accelerator, checkpoints: Path, progress: Progress, *, keep: int
) -> None:
    """Written under a temporary name and renamed when complete, so an `epoch_*` folder is
    always whole; older ones are removed only after that."""
    name = f"epoch_{progress.epoch + 1:03d}"
    staging = checkpoints / f".{name}.partial"
    accelerator.save_state(str(staging))
    if accelerator.is_main_process:
        (staging / TRAINER_STATE).write_text(json.dumps(progress.__dict__, indent=2))
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


# -- the recipe ------------------------------------------------------------------------------------


def _keeps_detector(finetune: FinetuneConfig, model: JointModel, data: TrainData) -> str | None:
    """Why a fine-tuned model keeps its base model's detector, or None to refit it."""
    if not finetune.init_from:
        return None
    if finetune.finetune == "lora":
        return "a per-skill adapter leaves the base encoder and router unchanged"
    missing = set(model.index.names) - {e.skill for e in data.train if e.skill}
    if missing:
        return f"the data has no examples of {', '.join(sorted(missing))}"
    return None


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


def flat_config(cfg: TrainConfig) -> dict[str, Any]:
    """The config as flat scalars, as trackers' hyperparameter tables want it."""
    return {
        k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in flat(cfg).items()
    }


def tracked(record: dict[str, Any]) -> dict[str, float]:
    """An epoch record's numbers for the trackers: loss, seconds, dev/<metric>."""
    out: dict[str, float] = {k: float(record[k]) for k in ("loss", "seconds") if k in record}
    for key, value in (record.get("dev") or {}).items():
        if isinstance(value, int | float):
            out[f"dev/{key}"] = float(value)
    return out


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


def train(cfg: TrainConfig) -> TrainResult:
    resolved = dump_config(cfg)
    # Both fail before anything is written: no stray config.yaml from a run that cannot start.
    run = setup_run(cfg.output)
    if not cfg.finetune.init_from:
        check_encoder(cfg.model.encoder)
    check_test_files(cfg.data)  # a broken tests.yaml fails now, not at `nlu evaluate`
    tracking = cfg.output.log_with != "none"
    if tracking:
        check_tracker(cfg.output.log_with)
    accelerator = Accelerator(
        mixed_precision=cfg.optim.mixed_precision,
        gradient_accumulation_steps=cfg.optim.gradient_accumulation_steps,
        log_with=cfg.output.log_with if tracking else None,
        project_dir=str(run.root / "tracking") if tracking else None,
    )
    set_seed(cfg.seed)
    if accelerator.is_main_process:
        run.root.mkdir(parents=True, exist_ok=True)
        (run.root / "config.yaml").write_text(resolved)
    if tracking:
        accelerator.init_trackers("nlu", config=flat_config(cfg))
    logger.info("%d process(es), %s", accelerator.num_processes, accelerator.device)

    data = load_data(cfg.data, seed=cfg.seed)
    setup = setup_model(
        cfg.model,
        cfg.finetune,
        data,
        label_smoothing=cfg.optim.label_smoothing,
        orthogonality_weight=cfg.mtl.orthogonality_weight,
    )
    loader, sampler = setup_batches(
        data.train,
        setup,
        batch_size=cfg.optim.batch_size,
        mtl=cfg.mtl,
        epochs=cfg.optim.epochs,
        seed=cfg.seed,
    )
    weighting = LossWeighting.from_config(
        cfg.mtl,
        setup.model.task_names(),
        train_router=setup.train_router,
        negatives=any(not e.in_scope for e in data.train),
    )
    optimizer, scheduler = setup_optimizer(
        cfg.optim, setup.model, weighting, steps_per_epoch=len(loader)
    )
    result = fit(
        accelerator,
        setup,
        loader,
        sampler,
        optimizer,
        scheduler,
        weighting,
        dev=data.dev,
        optim=cfg.optim,
        run=run,
        keep_checkpoints=cfg.output.keep_checkpoints,
        training_config=resolved,
    )
    if accelerator.is_main_process:
        # Out-of-scope rejection and calibration, fitted on the selected model (no retraining),
        # unless fine-tuning saw only some skills: their statistics would then miss the others.
        keep = _keeps_detector(cfg.finetune, setup.model, data)
        if keep:
            logger.info("keeping the base model's out-of-scope detector: %s", keep)
        else:
            detector = fit_out_of_scope(cfg.ood, run.model_dir, data.train, data.dev, seed=cfg.seed)
            result.out_of_scope = detector.report if detector else None
        summary = {k: str(v) if isinstance(v, Path) else v for k, v in result.__dict__.items()}
        (run.root / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        plot_learning_curve(result.history, run.root / "learning_curve.png")
    accelerator.end_training()
    return result
