"""The training engine: the stages every recipe builds a run from, and the one training loop.

A recipe (train, distill, the federated client, ...) runs, top to bottom: `setup_run`
(nlu.training.rundir) and `start_run` (nlu.training.run) for the run folder, the resolved
config and Accelerate; `load_data` and `setup_model`; `train_model` (`setup_batches`, the loss
weighting, `setup_optimizer` from nlu.training.optim, then `fit`: prepare, resume, epochs, dev
evaluation, model selection, checkpoints); and `finish_run` (calibrate the selected model in
memory, save its folder once). A recipe with its own loss passes a `loss_hook`.

Runs the same on CPU, one GPU, or many (`accelerate launch -m nlu.cli train ...`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from nlu.config import (
    ConfigError,
    DataConfig,
    MultiTaskConfig,
    OptimConfig,
    TrainConfig,
)
from nlu.data.loaders import TrainData, load_train_dev, unseen_labels
from nlu.evaluation.metrics import score
from nlu.inference.parser import parse_batch, torch_forward
from nlu.model.alignment import Tokenizer, check_tokenizer, pad_id
from nlu.model.features import collate, featurize
from nlu.model.joint import JointModel, JointOutput, build_model
from nlu.model.modeldir import ModelFolder
from nlu.model.sharing import SharingError, sharing_for
from nlu.schema import Example
from nlu.training.checkpoints import (
    Progress,
    resume,
    save_checkpoint,
    weights_of,
)
from nlu.training.finetune import FolderBuilder, check_labels, freeze_for
from nlu.training.mtl import LossWeighting, SkillSampler
from nlu.training.optim import setup_optimizer
from nlu.training.rundir import Run, RunDir

# Logs once, from the main process, however many processes `accelerate launch` starts.
logger = get_logger(__name__)

# (model output, the batch's soft_* tensors, the weighted hard loss) -> the loss to minimise:
# how a recipe changes the loss (distillation's soft targets, FedProx's proximal term).
LossHook = Callable[[JointOutput, Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]


@dataclass
class TrainResult:
    model_dir: Path
    best_epoch: int
    best_dev: dict[str, Any] | None
    train_seconds: float
    examples_per_second: float
    history: list[dict[str, Any]]
    # What fitting the out-of-scope detector measured on dev (nlu.training.calibrate), per method.
    out_of_scope: dict[str, Any] | None = None


# -- stage: data -----------------------------------------------------------------------------------


def load_data(cfg: DataConfig, *, seed: int) -> TrainData:
    """The data stage: train and dev examples and their label space, logged."""
    return log_data(load_train_dev(cfg, seed=seed))


def log_data(data: TrainData) -> TrainData:
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
    # Builds the model folder from the model as it is: (resolved config, dev metrics) -> folder.
    folder: FolderBuilder
    # False when fine-tuning on one skill's data: the router cannot learn anything then.
    train_router: bool = True


def setup_model(cfg: TrainConfig, data: TrainData) -> ModelSetup:
    """A new joint model on the encoder, or (finetune.init_from) a saved one prepared for its
    fine-tuning mode."""
    model_cfg, finetune = cfg.model, cfg.finetune
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
        build = freeze_for(
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

        def build(training_config: str, metrics: dict[str, Any] | None) -> ModelFolder:
            folder = model.to_folder(
                tokenizer=tokenizer, max_length=max_length, training_config=training_config
            )
            folder.metrics = metrics
            return folder

    check_tokenizer(tokenizer)
    model.label_smoothing = cfg.optim.label_smoothing
    model.orthogonality_weight = cfg.mtl.orthogonality_weight
    model.train()
    return ModelSetup(model, tokenizer, max_length, build, train_router)


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
    loss_hook: LossHook | None = None,
    progress: bool = True,
) -> tuple[float, int, float]:
    """One pass over the prepared batches: (running loss, examples, seconds).

    The step every recipe shares: `fit` runs it per epoch, a federated client per round.
    `loss_hook(output, soft, hard)` may replace the weighted loss (distillation, FedProx)."""
    started, examples, running = time.perf_counter(), 0, 0.0
    bar = tqdm(batches, desc=desc, disable=not (progress and accelerator.is_local_main_process))
    for step, batch in enumerate(bar):
        with accelerator.accumulate(model):
            soft = {k: batch.pop(k) for k in [k for k in batch if k.startswith("soft_")]}
            output = model(**batch)
            loss = combine(output.losses)
            if loss_hook is not None:
                loss = loss_hook(output, soft, loss)
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


def train_model(
    run: Run,
    setup: ModelSetup,
    examples: Sequence[Example],
    dev: Sequence[Example],
    *,
    extra: Callable[[Sequence[int], int], dict[str, torch.Tensor]] | None = None,
    loss_hook: LossHook | None = None,
) -> TrainResult:
    """The stages from batches to the trained model, every recipe's: `setup_batches`, the loss
    weighting, `setup_optimizer`, then `fit`."""
    cfg = run.cfg
    loader, sampler = setup_batches(
        examples,
        setup,
        batch_size=cfg.optim.batch_size,
        mtl=cfg.mtl,
        epochs=cfg.optim.epochs,
        seed=cfg.seed,
        extra=extra,
    )
    weighting = LossWeighting.from_config(
        cfg.mtl,
        setup.model.task_names(),
        train_router=setup.train_router,
        negatives=any(not e.in_scope for e in examples),
    )
    optimizer, scheduler = setup_optimizer(
        cfg.optim, setup.model, weighting, steps_per_epoch=len(loader)
    )
    return fit(
        run.accelerator,
        setup,
        loader,
        sampler,
        optimizer,
        scheduler,
        weighting,
        dev=dev,
        optim=cfg.optim,
        run=run.dir,
        keep_checkpoints=cfg.output.keep_checkpoints,
        loss_hook=loss_hook,
    )


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
    loss_hook: LossHook | None = None,
) -> TrainResult:
    """The training loop: prepare, resume, epochs (train, evaluate on dev, keep the best
    weights, checkpoint). On return the model holds the best epoch's weights. `loss_hook`: see
    `LossHook` (distillation mixes in the teachers' distributions)."""
    model, optimizer, batches, dev_batches, scheduler, combine = _prepare(
        accelerator, setup, loader, optimizer, scheduler, weighting, dev_size=len(dev)
    )
    raw_model: JointModel = accelerator.unwrap_model(model)

    progress, best = resume(accelerator, run.resume_from) if run.resume_from else (Progress(), None)

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
            loss_hook=loss_hook,
        )
        train_seconds += epoch_seconds
        seen += epoch_examples

        record = epoch_record(
            epoch + 1, running, epoch_examples, epoch_seconds, sampler, weighting, raw_model
        )
        if dev:
            metrics = evaluate_dev(
                accelerator, raw_model, setup.tokenizer, dev_batches, dev, setup.max_length
            )
            record["dev"] = metrics["overall"]
        selection = selection_score(record)
        history.append(record)
        logger.info("epoch %d: %s", epoch + 1, json.dumps(record))
        accelerator.log(tracked(record), step=epoch + 1)  # a no-op without trackers
        if selection > progress.best_score:
            progress.best_score, progress.best_epoch = selection, epoch + 1
            progress.best_dev = record.get("dev")
            best = weights_of(raw_model)
        progress.epoch, progress.history = epoch, history
        save_checkpoint(accelerator, run.checkpoints, progress, best, keep=keep_checkpoints)

    if best is not None:
        raw_model.load_state_dict(best)

    return TrainResult(
        model_dir=run.model_dir,
        best_epoch=progress.best_epoch,
        best_dev=progress.best_dev,
        train_seconds=round(train_seconds, 1),
        examples_per_second=round(seen / max(train_seconds, 1e-9), 1),
        history=history,
    )


def _prepare(
    accelerator: Accelerator,
    setup: ModelSetup,
    loader: DataLoader[dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    weighting: LossWeighting,
    *,
    dev_size: int,
) -> tuple[Any, Any, Any, Any, Any, Any]:
    """Accelerate's wrappers (DDP, sharded loaders, ...) of everything the loop touches, and a
    loader of dev example indices, sharded across processes too."""
    dev_loader: DataLoader[list[int]] = DataLoader(
        list(range(dev_size)),  # type: ignore[arg-type]
        batch_size=64,
        collate_fn=list,
    )
    model, optimizer, batches, dev_batches, scheduler = accelerator.prepare(
        setup.model, optimizer, loader, dev_loader, scheduler
    )
    # Learned task weights (uncertainty) are parameters: replicate them across processes too.
    learned = weighting.log_vars.requires_grad
    combine = accelerator.prepare(weighting) if learned else weighting
    # DWA's running means are restored on resume with the rest (the log-variances are a model).
    accelerator.register_for_checkpointing(weighting.dwa)
    return model, optimizer, batches, dev_batches, scheduler, combine


def epoch_record(
    epoch: int,
    loss: float,
    examples: int,
    seconds: float,
    sampler: SkillSampler,
    weighting: LossWeighting,
    model: JointModel,
) -> dict[str, Any]:
    """What an epoch did: its loss and speed, and the skill sampling and task weights when
    they change during training (the dev scores are added by the caller)."""
    record: dict[str, Any] = {
        "epoch": epoch,
        "loss": round(loss, 4),
        "seconds": round(seconds, 1),
        "examples": examples,
    }
    if sampler.strategy != "proportional":
        names = model.index.names
        record["skill_probabilities"] = {
            (names[k] if k >= 0 else "out_of_scope"): round(p, 4)
            for k, p in sampler.probabilities().items()
        }
    if weighting.strategy != "static":
        record["loss_weights"] = weighting.effective_weights()
    return record


def selection_score(record: dict[str, Any]) -> float:
    """Dev exact match, with intent accuracy + slot F1 to break ties; without dev data the
    last epoch wins."""
    dev = record.get("dev")
    if not dev:
        return float(record["epoch"])
    return float(dev["exact_match"] + 1e-3 * (dev["intent_accuracy"] + dev["slot_f1"]))


def tracked(record: dict[str, Any]) -> dict[str, float]:
    """An epoch record's numbers for the trackers: loss, seconds, dev/<metric>."""
    out: dict[str, float] = {k: float(record[k]) for k in ("loss", "seconds") if k in record}
    for key, value in (record.get("dev") or {}).items():
        if isinstance(value, int | float):
            out[f"dev/{key}"] = float(value)
    return out
