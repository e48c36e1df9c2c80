"""Joint multi-skill training with Accelerate: one readable loop, top to bottom.

Runs the same on CPU, one GPU, or many (`accelerate launch -m nlu.cli train ...`).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from nlu.alignment import IGNORE_INDEX, encode, spans_to_tags, token_labels
from nlu.config import TrainConfig, dump_config
from nlu.data.loaders import (
    has_own_dev_split,
    load_split,
    random_split,
    to_dataset,
    unseen_labels,
)
from nlu.evaluate import score
from nlu.finetune import check_labels, freeze_for
from nlu.model import JointModel, build_model
from nlu.mtl import LossWeighting, SkillSampler
from nlu.predict import parse_batch, torch_forward
from nlu.schema import DataError, Example, SkillLabels, labels_from_examples

# Logs once, from the main process, however many processes `accelerate launch` starts.
logger = get_logger(__name__)


@dataclass
class TrainResult:
    model_dir: Path
    best_epoch: int
    best_dev: dict[str, Any] | None
    train_seconds: float
    examples_per_second: float
    history: list[dict[str, Any]]


def load_training_data(
    *,
    data: Sequence[str],
    dev_data: Sequence[str],
    samples_per_template: int,
    dev_fraction: float,
    seed: int,
) -> tuple[list[Example], list[Example], list[SkillLabels]]:
    if not data:
        raise DataError(
            "no training data: set `data` to skill folders, JSONL files or JointBERT folders"
        )
    options = {
        "samples_per_template": samples_per_template,
        "dev_fraction": dev_fraction,
        "seed": seed,
    }
    train: list[Example] = []
    dev: list[Example] = []
    declared: list[SkillLabels] = []
    for source in data:
        loaded = load_split(source, "train", **options)
        declared += loaded.declared
        if dev_data:
            train += loaded.examples
        elif not has_own_dev_split(source):
            # A file that is one split: hold out a fraction of it for model selection.
            kept, held = random_split(loaded.examples, dev_fraction, seed)
            train += kept
            dev += held
        else:
            train += loaded.examples
            dev += load_split(source, "dev", **options).examples
    for source in dev_data:
        dev += load_split(source, "dev", **options).examples
    labels = labels_from_examples(train, {d.name: d for d in declared})
    return train, dev, labels


def featurize(
    examples: Sequence[Example], *, tokenizer: Any, labels: Sequence[SkillLabels], max_length: int
) -> Any:
    """Examples -> a datasets.Dataset of model inputs and label ids (-100 where ignored)."""
    skill_ids = {s.name: i for i, s in enumerate(labels)}
    intent_ids = {s.name: {name: i for i, name in enumerate(s.intents)} for s in labels}
    tag_ids = {s.name: {tag: i for i, tag in enumerate(s.tags)} for s in labels}
    problems: dict[str, list[str]] = {"misaligned": [], "lost": [], "truncated": []}

    def convert(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        encodings = encode(tokenizer, batch["text"], max_length)
        out: dict[str, list[Any]] = {
            "input_ids": [],
            "skill_ids": [],
            "intent_labels": [],
            "slot_labels": [],
        }
        for row, enc in enumerate(encodings):
            ex = Example.from_dict({k: batch[k][row] for k in ("text", "skill", "intent", "slots")})
            tags = spans_to_tags(enc.words, ex.slots)
            for kind, spans in (("misaligned", tags.misaligned), ("lost", tags.lost)):
                problems[kind] += [f"{ex.text!r} [{s.start}:{s.end}] {s.slot}" for s in spans]
            if enc.truncated:
                problems["truncated"].append(repr(ex.text))
            out["input_ids"].append(enc.input_ids)
            out["skill_ids"].append(skill_ids[ex.skill])
            out["intent_labels"].append(intent_ids[ex.skill][ex.intent])
            out["slot_labels"].append(token_labels(enc, tags.tags, tag_ids[ex.skill]))
        return out

    dataset = to_dataset(examples)
    features = dataset.map(
        convert, batched=True, remove_columns=dataset.column_names, load_from_cache_file=False
    )
    for kind, items in problems.items():
        if items:
            logger.warning(
                "%d training spans/texts %s (max_length=%d); first: %s",
                len(items),
                {
                    "misaligned": "cut through a word (the whole word is tagged)",
                    "lost": "cover no token and are NOT learned",
                    "truncated": "are longer than max_length and were truncated",
                }[kind],
                max_length,
                items[:3],
            )
    return features


def collate(rows: list[dict[str, Any]], *, pad_id: int) -> dict[str, torch.Tensor]:
    """Named batch with dynamic padding; padded label positions are -100."""
    width = max(len(r["input_ids"]) for r in rows)
    batch = {
        "input_ids": torch.full((len(rows), width), pad_id, dtype=torch.long),
        "attention_mask": torch.zeros((len(rows), width), dtype=torch.long),
        "slot_labels": torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long),
        "skill_ids": torch.tensor([r["skill_ids"] for r in rows], dtype=torch.long),
        "intent_labels": torch.tensor([r["intent_labels"] for r in rows], dtype=torch.long),
    }
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        batch["input_ids"][i, :n] = torch.tensor(r["input_ids"])
        batch["attention_mask"][i, :n] = 1
        batch["slot_labels"][i, :n] = torch.tensor(r["slot_labels"])
    return batch


def param_groups(
    model: JointModel,
    *,
    learning_rate: float,
    head_learning_rate: float,
    weight_decay: float,
    layer_lr_decay: float = 1.0,
) -> list[dict[str, Any]]:
    """Encoder and heads get their own learning rates; no decay on biases and LayerNorm.

    With layer_lr_decay < 1 the encoder's top layer learns at `learning_rate` and each layer
    below at `layer_lr_decay` times the one above (embeddings lowest), so the general features
    of lower layers move least. LoRA adapter weights are new parameters (B starts at zero), so
    they learn at the heads' rate, not the pretrained encoder's.
    """
    layers = int(getattr(model.encoder.config, "num_hidden_layers", 0))
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("encoder.") and ".lora_" not in name:
            depth = _encoder_depth(name, layers)
            lr = learning_rate * layer_lr_decay ** (layers - depth)
        else:
            lr = head_learning_rate
        groups.setdefault((lr, param.ndim < 2), []).append(param)
    return [
        {"params": params, "lr": lr, "weight_decay": 0.0 if no_decay else weight_decay}
        for (lr, no_decay), params in groups.items()
    ]


def _encoder_depth(name: str, layers: int) -> int:
    """0 for embeddings, l for transformer layer l (1-based), `layers` for anything on top."""
    match = re.search(r"\.layers?\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    return 0 if "embeddings" in name else layers


def evaluate_dev(
    accelerator: Accelerator,
    model: JointModel,
    tokenizer: Any,
    loader: DataLoader,
    examples: Sequence[Example],
    max_length: int,
) -> dict[str, Any]:
    """Dev metrics through the serving code path (parse_batch), sharded across processes."""
    model.eval()
    forward = torch_forward(model)
    by_index: dict[int, dict[str, Any]] = {}
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


def train(
    *,
    data: list[str],
    dev_data: list[str],
    samples_per_template: int,
    dev_fraction: float,
    encoder: str,
    pooling: str,
    dropout: float,
    max_length: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    head_learning_rate: float,
    weight_decay: float,
    warmup_ratio: float,
    gradient_accumulation_steps: int,
    max_grad_norm: float,
    label_smoothing: float,
    layer_lr_decay: float,
    sampling: str,
    sampling_temperature: float,
    loss_weighting: str,
    router_loss_weight: float,
    intent_loss_weight: float,
    slot_loss_weight: float,
    dwa_temperature: float,
    dwa_period: int,
    mixed_precision: str,
    seed: int,
    init_from: str | None,
    finetune: str,
    unfreeze_layers: int,
    lora_rank: int,
    output_dir: str,
    resume: str | None,
    keep_checkpoints: int,
) -> TrainResult:
    resolved_config = dump_config(TrainConfig(**locals()))
    accelerator = Accelerator(
        mixed_precision=mixed_precision, gradient_accumulation_steps=gradient_accumulation_steps
    )
    set_seed(seed)
    out = Path(output_dir)
    model_dir, checkpoints = out / "model", out / "checkpoints"
    ckpt: Path | None = None
    if resume:  # fail before any data loading or training when there is nothing to resume
        ckpt = _latest_checkpoint(checkpoints) if resume == "latest" else Path(resume)
        if ckpt is None or not ckpt.is_dir():
            raise FileNotFoundError(
                f"no checkpoint to resume from at {resume!r} (looked in {checkpoints}); "
                "resume needs the output_dir of an earlier run of the same config"
            )
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(resolved_config)

    # -- data --------------------------------------------------------------------------------
    train_examples, dev_examples, labels = load_training_data(
        data=data,
        dev_data=dev_data,
        samples_per_template=samples_per_template,
        dev_fraction=dev_fraction,
        seed=seed,
    )
    logger.info(
        "%d train / %d dev examples, %d skills: %s",
        len(train_examples),
        len(dev_examples),
        len(labels),
        ", ".join(s.name for s in labels),
    )
    unseen = unseen_labels(labels, dev_examples)
    if any(unseen.values()):
        logger.warning("dev labels never seen in training (they count as errors): %s", unseen)

    # -- model -------------------------------------------------------------------------------
    saver = None
    if init_from:
        model, tokenizer, _ = JointModel.from_pretrained(init_from)
        check_labels(model, labels, init_from)
        labels = model.skills  # keep the model's label ids
        train_router = len({e.skill for e in train_examples}) > 1
        if not train_router:
            logger.info("one skill in the data: the router is frozen and its loss is off")
        model.loss_weights = (
            router_loss_weight if train_router else 0.0,
            intent_loss_weight,
            slot_loss_weight,
        )
        saver = freeze_for(
            model,
            mode=finetune,
            unfreeze_layers=unfreeze_layers,
            lora_rank=lora_rank,
            train_router=train_router,
            source=Path(init_from),
            data_skills=sorted({e.skill for e in train_examples}),
        )
        model.train()
    else:
        model, tokenizer = build_model(
            encoder=encoder,
            skills=labels,
            pooling=pooling,
            dropout=dropout,
            loss_weights=(router_loss_weight, intent_loss_weight, slot_loss_weight),
        )
    model.label_smoothing = label_smoothing  # a loss setting; a saved model keeps none
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    features = featurize(train_examples, tokenizer=tokenizer, labels=labels, max_length=max_length)
    sampler = SkillSampler(
        features["skill_ids"],
        strategy=sampling,
        temperature=sampling_temperature,
        epochs=epochs,
        seed=seed,
    )
    train_loader = DataLoader(
        features,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=lambda rows: collate(rows, pad_id=pad_id),
    )
    weighting = LossWeighting(
        model.task_names(),
        strategy=loss_weighting,
        static={
            "router": router_loss_weight,
            "intent": intent_loss_weight,
            "slot": slot_loss_weight,
        },
        dwa_temperature=dwa_temperature,
        period=dwa_period,
    )
    dev_indices: list[int] = list(range(len(dev_examples)))
    dev_loader: DataLoader[list[int]] = DataLoader(dev_indices, batch_size=64, collate_fn=list)  # type: ignore[arg-type]
    groups = param_groups(
        model,
        learning_rate=learning_rate,
        head_learning_rate=head_learning_rate,
        weight_decay=weight_decay,
        layer_lr_decay=layer_lr_decay,
    )
    if loss_weighting == "uncertainty":
        groups.append({"params": [weighting.log_vars], "lr": head_learning_rate, "weight_decay": 0})
    optimizer = torch.optim.AdamW(groups)
    total_steps = math.ceil(len(train_loader) / gradient_accumulation_steps) * epochs
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(warmup_ratio * total_steps), total_steps
    )
    model, optimizer, train_loader, dev_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, dev_loader, scheduler
    )
    raw_weighting = weighting
    if loss_weighting == "uncertainty":  # learned parameters: replicate across processes too
        weighting = accelerator.prepare(weighting)
    raw_model: JointModel = accelerator.unwrap_model(model)

    # -- resume ------------------------------------------------------------------------------
    start_epoch, best_score, best_epoch, best_dev = 0, -1.0, -1, None
    history: list[dict[str, Any]] = []
    if ckpt is not None:
        accelerator.load_state(str(ckpt))
        state = json.loads((ckpt / "trainer_state.json").read_text())
        start_epoch, best_score, best_epoch = (
            state["epoch"] + 1,
            state["best_score"],
            state["best_epoch"],
        )
        best_dev, history = state["best_dev"], state["history"]
        logger.info("resumed from %s at epoch %d", ckpt, start_epoch)

    # -- loop --------------------------------------------------------------------------------
    model.train()
    train_seconds, seen = sum(h["seconds"] for h in history), sum(h["examples"] for h in history)
    for epoch in range(start_epoch, epochs):
        started, epoch_examples, running = time.perf_counter(), 0, 0.0
        sampler.set_epoch(epoch)
        bar = tqdm(
            train_loader,
            desc=f"epoch {epoch + 1}/{epochs}",
            disable=not accelerator.is_local_main_process,
        )
        for step, batch in enumerate(bar):
            with accelerator.accumulate(model):
                output = model(**batch)
                loss = output.loss if loss_weighting == "static" else weighting(output.task_losses)
                accelerator.backward(loss)
                if accelerator.sync_gradients and max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                if accelerator.sync_gradients:
                    raw_weighting.step()
            epoch_examples += len(batch["input_ids"]) * accelerator.num_processes
            running = 0.9 * running + 0.1 * loss.item() if step else loss.item()
            elapsed = time.perf_counter() - started
            bar.set_postfix(
                loss=f"{running:.3f}", ex_s=f"{epoch_examples / max(elapsed, 1e-9):.0f}"
            )
        epoch_seconds = time.perf_counter() - started
        train_seconds += epoch_seconds
        seen += epoch_examples

        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": round(running, 4),
            "seconds": round(epoch_seconds, 1),
            "examples": epoch_examples,
        }
        if sampling != "proportional":
            record["skill_probabilities"] = {
                labels[k].name: round(p, 4) for k, p in sampler.probabilities().items()
            }
        if loss_weighting != "static":
            record["loss_weights"] = raw_weighting.effective_weights()
        if dev_examples:
            metrics = evaluate_dev(
                accelerator, raw_model, tokenizer, dev_loader, dev_examples, max_length
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
        if selection > best_score:
            best_score, best_epoch, best_dev = selection, epoch + 1, record.get("dev")
            if accelerator.is_main_process:
                save = saver or raw_model.save_pretrained
                save(
                    model_dir,
                    tokenizer=tokenizer,
                    max_length=max_length,
                    training_config=resolved_config,
                )
        epoch_ckpt = checkpoints / f"epoch_{epoch + 1:03d}"
        accelerator.save_state(str(epoch_ckpt))
        if accelerator.is_main_process:
            state = {
                "epoch": epoch,
                "best_score": best_score,
                "best_epoch": best_epoch,
                "best_dev": best_dev,
                "history": history,
            }
            (epoch_ckpt / "trainer_state.json").write_text(json.dumps(state, indent=2))
            for old in sorted(checkpoints.glob("epoch_*"))[: -max(1, keep_checkpoints)]:
                shutil.rmtree(old)
        accelerator.wait_for_everyone()

    result = TrainResult(
        model_dir=model_dir,
        best_epoch=best_epoch,
        best_dev=best_dev,
        train_seconds=round(train_seconds, 1),
        examples_per_second=round(seen / max(train_seconds, 1e-9), 1),
        history=history,
    )
    if accelerator.is_main_process:
        summary = {k: str(v) if isinstance(v, Path) else v for k, v in result.__dict__.items()}
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    accelerator.end_training()
    return result


def _latest_checkpoint(checkpoints: Path) -> Path | None:
    found = sorted(checkpoints.glob("epoch_*"))
    return found[-1] if found else None
