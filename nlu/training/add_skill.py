"""`nlu add-skill MODEL SKILL_DIR --out RUN`: add a skill to a trained model in minutes; the
extended model is written to RUN/model, as `nlu train` writes <output_dir>/model.

The encoder, the existing skills' heads and the router's existing outputs are frozen; only the
new skill's intent and slot heads and the router's new output(s) are trained. So for every
skill the model already had, intent and slot outputs are bit-identical before and after (the
same encoder and head weights compute them); only the router's softmax now has more outputs,
which can move routing decisions: measure that with `nlu evaluate` on the old skills' data.

Because the encoder is frozen and run in eval mode, its outputs are computed once per example
and the heads train on those cached features: epochs cost milliseconds, not minutes.

The router's new output must also learn what the new skill is *not*, so it trains against
"replay" examples of the old skills (router loss only): by default the training data recorded
in the model's training_config.yaml, or whatever `--replay` names.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from nlu.config import DataConfig, OodConfig, parse_config
from nlu.data.loaders import TrainData
from nlu.labels import SkillLabels
from nlu.model import modeldir
from nlu.model.alignment import Tokenizer, pad_id
from nlu.model.features import collate, featurize
from nlu.model.joint import JointModel
from nlu.model.losses import task_losses
from nlu.model.modeldir import ModelFolder
from nlu.schema import DataError, Example
from nlu.training.mtl import LossWeighting

logger = logging.getLogger(__name__)


class AddSkillError(ValueError):
    pass


@dataclass
class AddSkillResult:
    model_dir: Path
    new_skills: list[str]
    train_examples: int
    replay_examples: int
    seconds: float
    dev: dict[str, Any] | None


def _replay_sources(model_dir: Path, training_config: str | None) -> list[str]:
    if training_config is not None:
        recorded = parse_config(training_config, source=str(model_dir))
        found = [d for d in recorded.data.data if Path(d).exists()]
        if found:
            return found
    raise AddSkillError(
        f"cannot find the data {model_dir} was trained on (training_config.yaml lists none that "
        "exist here); pass --replay with some of the existing skills' data so the router learns "
        "to tell the new skill apart from them"
    )


@dataclass
class Cached:
    """Frozen-encoder features of examples, padded: what the new heads train on."""

    pooled: torch.Tensor  # [N, hidden]
    routed: torch.Tensor  # [N, hidden]: what the router reads (JointModel.router_input)
    tokens: torch.Tensor  # [N, longest, hidden]
    skill_ids: torch.Tensor
    intent_labels: torch.Tensor
    slot_labels: torch.Tensor  # [N, longest], -100 where ignored


def _cache(
    model: JointModel, tokenizer: Tokenizer, examples: Sequence[Example], max_length: int
) -> Cached:
    rows = list(featurize(examples, tokenizer=tokenizer, index=model.index, max_length=max_length))
    batch = collate(rows, pad_id=pad_id(tokenizer))
    pooled, routed, tokens = [], [], []
    with torch.inference_mode():
        for start in range(0, len(rows), 64):
            part = slice(start, start + 64)
            hidden, sentence, router_input = model.encode(
                batch["input_ids"][part], batch["attention_mask"][part]
            )
            pooled.append(sentence)
            routed.append(router_input)
            tokens.append(hidden)
    width = batch["input_ids"].shape[1]
    padded = [torch.nn.functional.pad(t, (0, 0, 0, width - t.shape[1])) for t in tokens]
    return Cached(
        pooled=torch.cat(pooled),
        routed=torch.cat(routed),
        tokens=torch.cat(padded),
        skill_ids=batch["skill_ids"],
        intent_labels=batch["intent_labels"],
        slot_labels=batch["slot_labels"],
    )


def add_skill(
    *,
    model_dir: str | Path,
    skill_data: Sequence[str],
    out_dir: str | Path,
    replay: Sequence[str] | None = None,
    max_replay: int = 2000,
    epochs: int = 30,
    batch_size: int = 32,
    # Only linear heads on fixed features train here, so a rate well above fine-tuning's.
    learning_rate: float = 1e-2,
    samples_per_template: int = 20,
    dev_fraction: float = 0.1,
    seed: int = 0,
) -> AddSkillResult:
    from accelerate import PartialState

    # The data stage: it logs what it loaded.
    from nlu.training.engine import load_data

    PartialState()  # the recipe's stages log through Accelerate, also when called as a function
    model_dir, run_dir = modeldir.locate(model_dir), Path(out_dir)
    out_dir = run_dir / modeldir.RUN_MODEL_DIR
    torch.manual_seed(seed)
    old, base = JointModel.load(model_dir)
    data = load_data(
        DataConfig(
            data=list(skill_data),
            samples_per_template=samples_per_template,
            dev_fraction=dev_fraction,
        ),
        seed=seed,
    )
    _check_new_skills(old, model_dir, [s.name for s in data.labels])
    replayed = replay_examples(
        old, replay or _replay_sources(model_dir, base.training_config), max_replay, seed
    )

    started = time.perf_counter()
    model, new_router = extended_model(old, data.labels)
    new = _cache(model, base.tokenizer, data.train, base.meta.max_length)
    old_cached = _cache(model, base.tokenizer, replayed, base.meta.max_length)
    steps = max(1, -(-len(data.train) // batch_size))
    train_heads(
        model,
        old,
        new_router,
        new,
        old_cached,
        epochs=epochs,
        batch_size=batch_size,
        replay_per_step=-(-len(replayed) // steps),
        learning_rate=learning_rate,
        seed=seed,
    )
    merge_router(model, old, new_router)
    seconds = time.perf_counter() - started

    folder = extended_folder(
        model, base, model_dir, data, replayed, skill_data, epochs, learning_rate, seed
    )
    modeldir.save(out_dir, folder)
    dev_metrics = _dev_scores(out_dir, data.dev, base.tokenizer)
    logger.info(
        "added %s to %s in %.1f s -> %s; new-skill dev: %s",
        ", ".join(s.name for s in data.labels),
        model_dir,
        seconds,
        out_dir,
        json.dumps(dev_metrics),
    )
    return AddSkillResult(
        model_dir=out_dir,
        new_skills=[s.name for s in data.labels],
        train_examples=len(data.train),
        replay_examples=len(replayed),
        seconds=round(seconds, 1),
        dev=dev_metrics,
    )


def _check_new_skills(old: JointModel, model_dir: Path, names: Sequence[str]) -> None:
    """The base model can take new skills (one hard-shared encoder), and these are new."""
    if old.sharing is not None:
        raise AddSkillError(
            f"{model_dir} shares its encoder softly ({old.sharing.mode}): a new skill would need "
            "a place among its columns and mixing weights, which add-skill cannot give it "
            "without retraining them. Train a model on all skills (`nlu train`) instead"
        )
    clash = [name for name in names if name in old.index.names]
    if clash:
        raise AddSkillError(
            f"{model_dir} already has skill(s) {', '.join(clash)}; add-skill only adds new "
            "skills. To update an existing skill, fine-tune: `nlu train --from MODEL ...`"
        )


def extended_folder(
    model: JointModel,
    base: ModelFolder,
    model_dir: Path,
    data: TrainData,
    replayed: list[Example],
    skill_data: Sequence[str],
    epochs: int,
    learning_rate: float,
    seed: int,
) -> ModelFolder:
    """The extended model's folder: the base's tokenizer and adapters, the training config with
    a note of what was added, and the out-of-scope detector refitted when the base had one."""
    note = {
        "add_skill": {
            "base_model": str(model_dir),
            "skill_data": list(skill_data),
            "replay_examples": len(replayed),
            "epochs": epochs,
            "learning_rate": learning_rate,
            "seed": seed,
        }
    }
    folder = model.to_folder(
        tokenizer=base.tokenizer,
        max_length=base.meta.max_length,
        training_config=(base.training_config or "") + yaml.safe_dump(note, sort_keys=False),
    )
    # The encoder is frozen, so adapters of old skills stay valid on the new model.
    folder.adapters = dict(base.adapters)
    if base.ood is not None:
        # Refit (encoder unchanged, so this is cheap) rather than reject the new skill's texts:
        # statistics from the new and replayed texts, threshold on the new skill's dev texts
        # and a held-out share of the replayed ones.
        from nlu.training.calibrate import fit_out_of_scope

        held = replayed[: max(1, len(replayed) // 10)]
        folder.ood = fit_out_of_scope(
            OodConfig(oos_method=base.ood.method, target_recall=base.ood.target_recall),  # type: ignore[arg-type]
            model,
            base.tokenizer,
            base.meta.max_length,
            [*data.train, *replayed],
            [*data.dev, *held],
            seed=seed,
        )
    return folder


def replay_examples(
    old: JointModel, sources: Sequence[str], limit: int, seed: int
) -> list[Example]:
    """In-scope examples of the model's own skills: the router's new outputs learn from them
    what the new skill is not."""
    from nlu.data.loaders import load_split

    found: list[Example] = []
    for source in sources:
        found += load_split(source, "train", seed=seed).examples
    found = [e for e in found if e.in_scope]  # only old skills teach bounds
    unknown = {e.skill for e in found if e.skill} - set(old.index.names)
    if unknown:
        raise DataError(
            f"replay data has skill(s) {', '.join(sorted(unknown))} that the model does not "
            f"know (it has {', '.join(old.index.names)}); replay only the model's own skills"
        )
    if len(found) > limit:
        found = random.Random(seed).sample(found, limit)
    if not found:
        raise AddSkillError("no replay examples: the router cannot learn the new skill's bounds")
    return found


def extended_model(
    old: JointModel, new_labels: Sequence[SkillLabels]
) -> tuple[JointModel, nn.Linear]:
    """The old model's encoder and heads (frozen, shared) with fresh heads for the new skills,
    and the router's new rows as their own layer."""
    model = JointModel(
        encoder=old.hard_encoder,
        skills=[*old.skills, *new_labels],
        pooling=old.pooling,
        dropout=old.dropout_rate,
        router_input=old.router_input,
    )
    for s in old.skills:
        model.intent_heads[s.name] = old.intent_heads[s.name]
        model.slot_heads[s.name] = old.slot_heads[s.name]
    for p in old.parameters():
        p.requires_grad_(False)
    model.eval()  # the encoder runs without dropout; head dropout is applied by hand
    return model, nn.Linear(old.encoder_config.hidden_size, len(new_labels))


def train_heads(
    model: JointModel,
    old: JointModel,
    new_router: nn.Linear,
    new: Cached,
    replayed: Cached,
    *,
    epochs: int,
    batch_size: int,
    replay_per_step: int,
    learning_rate: float,
    seed: int,
) -> None:
    """The new skills' heads and router rows on cached encoder features; the router's new rows
    also learn "not me" from the replayed old skills."""
    new_skills = model.index.names[len(old.index.names) :]
    trainable = [new_router.weight, new_router.bias]
    for name in new_skills:
        trainable += list(model.intent_heads[name].parameters())
        trainable += list(model.slot_heads[name].parameters())
    weighting = LossWeighting(
        model.task_names(), strategy="static", static={"router": 1, "intent": 1, "slot": 1}
    )
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=0.01)
    dropout = nn.Dropout(old.dropout_rate)
    n, steps = len(new.skill_ids), max(1, -(-len(new.skill_ids) // batch_size))
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        replay_order = torch.randperm(len(replayed.skill_ids), generator=generator)
        for step in range(steps):
            idx = order[step * batch_size : (step + 1) * batch_size]
            ridx = replay_order[step * replay_per_step : (step + 1) * replay_per_step]
            _, intent_logits, slot_logits = model.heads(
                dropout(new.pooled[idx]), dropout(new.tokens[idx])
            )
            every = torch.cat([new.routed[idx], replayed.routed[ridx]])
            router_logits = torch.cat([old.router(every), new_router(dropout(every))], dim=-1)
            losses = task_losses(
                index=model.index,
                router_logits=router_logits,
                router_targets=torch.cat([new.skill_ids[idx], replayed.skill_ids[ridx]]),
                intent_logits=intent_logits,
                slot_logits=slot_logits,
                skill_ids=new.skill_ids[idx],
                intent_labels=new.intent_labels[idx],
                slot_labels=new.slot_labels[idx],
            )
            loss = weighting(losses)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def merge_router(model: JointModel, old: JointModel, new_router: nn.Linear) -> None:
    """The old router's rows, then the new ones, as the extended model's router."""
    hidden = old.encoder_config.hidden_size
    with torch.no_grad():
        model.router.weight.copy_(torch.cat([old.router.weight, new_router.weight]))
        model.router.bias.copy_(torch.cat([old.router.bias, new_router.bias]))
    if old.router.curvature is not None:
        # The new rows were trained linear against the old rows' quadratic logits: no
        # curvature of their own.
        zeros = old.router.curvature.new_zeros((len(new_router.bias), hidden, hidden))
        model.router.set_curvature(torch.cat([old.router.curvature, zeros]))


def _dev_scores(
    out_dir: Path, dev: Sequence[Example], tokenizer: Tokenizer
) -> dict[str, Any] | None:
    """The new skills' dev scores through the saved folder (the serving path)."""
    if not dev:
        return None
    from nlu.evaluation.metrics import score
    from nlu.inference.parser import Parser

    parser = Parser.from_pretrained(out_dir, backend="torch")
    scores: dict[str, Any] = score(dev, parser.parse([e.text for e in dev]), tokenizer=tokenizer)
    return scores["overall"]
