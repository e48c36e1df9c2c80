"""`nlu add-skill MODEL SKILL_DIR --out NEW_MODEL`: add a skill to a trained model in minutes.

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
from torch.nn import functional as F

from nlu.adapters import copy_adapters
from nlu.alignment import IGNORE_INDEX, Encoding, encode, spans_to_tags, token_labels
from nlu.model import JointModel
from nlu.schema import DataError, Example, labels_from_examples

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


def _replay_sources(model_dir: Path, replay: Sequence[str] | None) -> list[str]:
    if replay:
        return list(replay)
    config_path = model_dir / "training_config.yaml"
    if config_path.is_file():
        recorded = yaml.safe_load(config_path.read_text()) or {}
        found = [d for d in recorded.get("data", []) if Path(d).exists()]
        if found:
            return found
    raise AddSkillError(
        f"cannot find the data {model_dir} was trained on (training_config.yaml lists none that "
        "exist here); pass --replay with some of the existing skills' data so the router learns "
        "to tell the new skill apart from them"
    )


def _features(
    model: JointModel, tokenizer: Any, examples: Sequence[Example], max_length: int
) -> list[tuple[torch.Tensor, torch.Tensor, Encoding]]:
    """Frozen-encoder outputs per example: (pooled vector, token vectors, encoding)."""
    from nlu.predict import pad_batch

    out = []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.inference_mode():
        for start in range(0, len(examples), 64):
            chunk = examples[start : start + 64]
            encodings = encode(tokenizer, [e.text for e in chunk], max_length)
            batch = {k: torch.from_numpy(v) for k, v in pad_batch(encodings, pad_id).items()}
            hidden = model.encoder(**batch).last_hidden_state
            pooled = model.pool(hidden, batch["attention_mask"])
            for row, enc in enumerate(encodings):
                n = len(enc.input_ids)
                out.append((pooled[row].clone(), hidden[row, :n].clone(), enc))
    return out


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
    from nlu.data.loaders import load_split
    from nlu.train import load_training_data

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    torch.manual_seed(seed)
    old, tokenizer, max_length = JointModel.from_pretrained(model_dir)
    old_names = [s.name for s in old.skills]

    train, dev, _ = load_training_data(
        data=list(skill_data),
        dev_data=[],
        samples_per_template=samples_per_template,
        dev_fraction=dev_fraction,
        seed=seed,
    )
    declared = {}
    for source in skill_data:
        declared.update({d.name: d for d in load_split(source, "train").declared})
    new_labels = labels_from_examples(train, declared)
    clash = [s.name for s in new_labels if s.name in old_names]
    if clash:
        raise AddSkillError(
            f"{model_dir} already has skill(s) {', '.join(clash)}; add-skill only adds new "
            "skills. To update an existing skill, fine-tune: `nlu train --from MODEL ...`"
        )

    replay_examples: list[Example] = []
    for source in _replay_sources(model_dir, replay):
        replay_examples += load_split(source, "train", seed=seed).examples
    unknown = {e.skill for e in replay_examples} - set(old_names)
    if unknown:
        raise DataError(
            f"replay data has skill(s) {', '.join(sorted(unknown))} that {model_dir} does not "
            f"know (it has {', '.join(old_names)}); replay only the model's own skills"
        )
    if len(replay_examples) > max_replay:
        replay_examples = random.Random(seed).sample(replay_examples, max_replay)
    if not replay_examples:
        raise AddSkillError("no replay examples: the router cannot learn the new skill's bounds")

    # -- the extended model: old weights shared, new heads and router rows fresh ------------
    skills = [*old.skills, *new_labels]
    model = JointModel(
        encoder=old.encoder, skills=skills, pooling=old.pooling, dropout=old.dropout_rate
    )
    hidden = old.encoder.config.hidden_size
    for s in old.skills:
        model.intent_heads[s.name] = old.intent_heads[s.name]
        model.slot_heads[s.name] = old.slot_heads[s.name]
    new_router = nn.Linear(hidden, len(new_labels))
    for p in [*old.parameters()]:
        p.requires_grad_(False)
    trainable = [new_router.weight, new_router.bias]
    for s in new_labels:
        trainable += list(model.intent_heads[s.name].parameters())
        trainable += list(model.slot_heads[s.name].parameters())
    model.eval()  # the encoder runs without dropout; head dropout is applied by hand below

    skill_ids = {name: i for i, name in enumerate(model.index.names)}
    started = time.perf_counter()
    new_feats = _features(model, tokenizer, train, max_length)
    replay_feats = _features(model, tokenizer, replay_examples, max_length)
    # Stack the cached features once: new-skill examples (padded tokens, -100 labels) and
    # replay examples (pooled only: they train the router's new outputs to say "not me").
    width = max(len(f[1]) for f in new_feats)
    pooled_new = torch.stack([f[0] for f in new_feats])
    tokens_new = torch.zeros(len(new_feats), width, hidden)
    slot_labels = torch.full((len(new_feats), width), IGNORE_INDEX, dtype=torch.long)
    intent_ids = torch.zeros(len(new_feats), dtype=torch.long)
    for i, (ex, (_, tokens, enc)) in enumerate(zip(train, new_feats, strict=True)):
        skill = next(s for s in new_labels if s.name == ex.skill)
        tags = spans_to_tags(enc.words, ex.slots).tags
        tag_ids = {tag: j for j, tag in enumerate(skill.tags)}
        tokens_new[i, : len(tokens)] = tokens
        slot_labels[i, : len(tokens)] = torch.tensor(token_labels(enc, tags, tag_ids))
        intent_ids[i] = skill.intents.index(ex.intent)
    skill_new = torch.tensor([skill_ids[ex.skill] for ex in train])
    pooled_replay = torch.stack([f[0] for f in replay_feats])
    skill_replay = torch.tensor([skill_ids[ex.skill] for ex in replay_examples])

    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=0.01)
    dropout = nn.Dropout(old.dropout_rate)
    steps = max(1, -(-len(new_feats) // batch_size))
    replay_per_step = -(-len(replay_feats) // steps)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(new_feats), generator=generator)
        replay_order = torch.randperm(len(replay_feats), generator=generator)
        for step in range(steps):
            idx = order[step * batch_size : (step + 1) * batch_size]
            ridx = replay_order[step * replay_per_step : (step + 1) * replay_per_step]
            pooled, tokens = dropout(pooled_new[idx]), dropout(tokens_new[idx])
            loss = torch.zeros(())
            for k in skill_new[idx].unique().tolist():
                rows = skill_new[idx] == k
                name = model.index.names[k]
                loss = loss + F.cross_entropy(
                    model.intent_heads[name](pooled[rows]), intent_ids[idx][rows], reduction="sum"
                ) / len(idx)
                labels = slot_labels[idx][rows]
                logits = model.slot_heads[name](tokens[rows])
                loss = loss + F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]),
                    labels.reshape(-1),
                    ignore_index=IGNORE_INDEX,
                    reduction="sum",
                ) / (labels != IGNORE_INDEX).sum().clamp(min=1)
            every = torch.cat([pooled_new[idx], pooled_replay[ridx]])
            router_logits = torch.cat([old.router(every), new_router(dropout(every))], dim=-1)
            loss = loss + F.cross_entropy(
                router_logits, torch.cat([skill_new[idx], skill_replay[ridx]])
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    # -- merge the router and save ------------------------------------------------------------
    with torch.no_grad():
        model.router.weight.copy_(torch.cat([old.router.weight, new_router.weight]))
        model.router.bias.copy_(torch.cat([old.router.bias, new_router.bias]))
    seconds = time.perf_counter() - started
    config_path = model_dir / "training_config.yaml"
    note = {
        "add_skill": {
            "base_model": str(model_dir),
            "skill_data": list(skill_data),
            "replay_examples": len(replay_examples),
            "epochs": epochs,
            "learning_rate": learning_rate,
            "seed": seed,
        }
    }
    recorded = config_path.read_text() if config_path.is_file() else ""
    model.save_pretrained(
        out_dir,
        tokenizer=tokenizer,
        max_length=max_length,
        training_config=recorded + yaml.safe_dump(note, sort_keys=False),
    )
    # The encoder is frozen, so adapters of old skills stay valid on the new model.
    copy_adapters(model_dir, out_dir)
    dev_metrics = None
    if dev:
        from nlu.evaluate import score
        from nlu.predict import Parser

        parser = Parser.from_pretrained(out_dir, backend="torch")
        dev_metrics = score(dev, parser.parse([e.text for e in dev]), tokenizer=tokenizer)[
            "overall"
        ]
    logger.info(
        "added %s to %s in %.1f s -> %s; new-skill dev: %s",
        ", ".join(s.name for s in new_labels),
        model_dir,
        seconds,
        out_dir,
        json.dumps(dev_metrics),
    )
    return AddSkillResult(
        model_dir=out_dir,
        new_skills=[s.name for s in new_labels],
        train_examples=len(train),
        replay_examples=len(replay_examples),
        seconds=round(seconds, 1),
        dev=dev_metrics,
    )
