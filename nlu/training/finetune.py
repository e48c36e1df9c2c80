"""Continue training a saved model (`nlu train --from MODEL`): which parameters may move.

Modes:
- full: every parameter.
- top_layers: the heads and the top `unfreeze_layers` encoder layers; embeddings and lower
  layers frozen.
- heads: the heads only (router, intent and slot heads); the encoder is frozen.
- lora: a per-skill adapter (see `nlu/adapters.py`): a LoRA adapter on the attention
  query/value projections plus the skill's heads, saved beside the unchanged base model under
  `adapters/<skill>/` and applied at parse time to that skill only, so no other skill's output
  moves. The data must cover exactly one skill.
- lora_merged: the same LoRA adapter, merged into the shared encoder at save time: one forward
  pass at parse time, but every skill sees the changed encoder. The adapter alone is also saved
  under `adapter/` (a few hundred KB) to ship or inspect.

Skills are not added here (that is `nlu add-skill`): the data's skills, intents and slot types
must already be in the model. When the data covers a single skill the router cannot learn
anything but "always this skill", so its loss is switched off and its weights frozen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from nlu.config import FinetuneMode, choices
from nlu.labels import SkillLabels
from nlu.model import adapters
from nlu.model.encoders import layer_of
from nlu.model.joint import JointModel
from nlu.model.modeldir import ModelFolder
from nlu.schema import DataError

logger = logging.getLogger(__name__)

MODES = choices(FinetuneMode)


class FinetuneError(ValueError):
    """The fine-tuning mode does not fit the model or the data."""


# The model folder of a training run, built from the model as it is now (the run's finish
# saves it): (resolved training config, dev metrics of the selected epoch) -> folder.
FolderBuilder = Callable[[str, dict[str, Any] | None], ModelFolder]


def check_labels(model: JointModel, data_labels: Sequence[SkillLabels], source: str) -> None:
    """The data must fit the model's label space: say exactly what does not."""
    known = {s.name: s for s in model.skills}
    problems = []
    for skill in data_labels:
        if skill.name not in known:
            problems.append(
                f"skill {skill.name!r} is not in the model (add it with `nlu add-skill`)"
            )
            continue
        intents = sorted(set(skill.intents) - set(known[skill.name].intents))
        slots = sorted(set(skill.slots) - set(known[skill.name].slots))
        if intents:
            problems.append(f"{skill.name}: intents {intents} are not in the model")
        if slots:
            problems.append(f"{skill.name}: slots {slots} are not in the model")
    if problems:
        raise DataError(
            f"the training data does not fit {source}: "
            + "; ".join(problems)
            + ". Fine-tuning keeps the model's label space; retrain from the encoder to change it."
        )


def check_mode(*, mode: str, adapted: Sequence[str], data_skills: Sequence[str]) -> None:
    """Refuse modes that would silently break the model's per-skill adapters."""
    if mode not in MODES:
        raise FinetuneError(f"finetune must be one of {MODES}, not {mode!r}")
    if mode == "lora" and len(data_skills) != 1:
        raise FinetuneError(
            f"finetune=lora trains one skill's adapter, but the data covers {len(data_skills)} "
            f"skills ({', '.join(data_skills)}): run once per skill, or use lora_merged"
        )
    if adapted and mode in ("full", "top_layers", "lora_merged"):
        raise FinetuneError(
            f"the model has per-skill adapters ({', '.join(adapted)}) trained on its current "
            f"encoder; finetune={mode} changes that encoder and would invalidate them. Fine-tune "
            "those skills with finetune=lora, or start from a model without adapters"
        )
    stale = sorted(set(adapted) & set(data_skills))
    if stale and mode == "heads":
        raise FinetuneError(
            f"skills {stale} are served by their adapters' heads, so training their base heads "
            "would change nothing; use finetune=lora to continue their adapters"
        )


def freeze_for(
    model: JointModel,
    base: ModelFolder,
    *,
    mode: str,
    unfreeze_layers: int,
    lora_rank: int,
    lora_modules: str,
    train_router: bool,
    data_skills: Sequence[str],
) -> FolderBuilder:
    """Set requires_grad per mode; returns how to build the fine-tuned model's folder.

    `base` is the folder the model was loaded from: its tokenizer, its out-of-scope detector
    (the recipe refits it when the data covers every skill), and the adapters that stay valid,
    are carried into every folder."""
    check_mode(mode=mode, adapted=sorted(base.adapters), data_skills=data_skills)
    build = _plain(model, base)
    if mode == "lora":
        (skill,) = data_skills
        adapters.wrap_for_training(
            model,
            rank=lora_rank,
            modules=lora_modules,
            start=base.adapters.get(skill),
            skill=skill,
        )
        build = _with_lora(model, base, skill)
    elif mode == "lora_merged":
        # Freezes the base weights; the peft wrapper stands in for the encoder while training.
        adapters.wrap_for_training(model, rank=lora_rank, modules=lora_modules)
        build = _merged(model, base)
    elif mode in ("heads", "top_layers"):
        layers = int(model.encoder_config.num_hidden_layers)
        keep = set(range(layers - unfreeze_layers, layers)) if mode == "top_layers" else set()
        for name, param in model.encoder.named_parameters():
            param.requires_grad_(layer_of(name) in keep)

    if not train_router or mode == "lora":
        # lora: the router is served from the base model unchanged.
        for param in model.router.parameters():
            param.requires_grad_(False)
    if mode == "lora":
        # ...and so are the other skills' heads.
        for name in model.index.names:
            if name != data_skills[0]:
                for param in (
                    *model.intent_heads[name].parameters(),
                    *model.slot_heads[name].parameters(),
                ):
                    param.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info(
        "fine-tuning (%s): %d of %d parameters trainable (%.2f%%)",
        mode,
        trainable,
        total,
        100 * trainable / total,
    )
    return build


def _plain(model: JointModel, base: ModelFolder) -> FolderBuilder:
    def build(training_config: str, metrics: dict[str, Any] | None) -> ModelFolder:
        # heads mode keeps the encoder, so the other skills' adapters stay valid.
        folder = model.to_folder(
            tokenizer=base.tokenizer,
            max_length=base.meta.max_length,
            training_config=training_config,
        )
        folder.adapters = dict(base.adapters)
        folder.ood = base.ood
        folder.metrics = metrics
        return folder

    return build


def _with_lora(model: JointModel, base: ModelFolder, skill: str) -> FolderBuilder:
    def build(training_config: str, metrics: dict[str, Any] | None) -> ModelFolder:
        # The base model as it is (so every other skill is bit-identical), plus this skill's
        # adapter.
        adapted = {**base.adapters, skill: adapters.extract(model, skill=skill)}
        return replace(base, training_config=training_config, adapters=adapted, metrics=metrics)

    return build


def _merged(model: JointModel, base: ModelFolder) -> FolderBuilder:
    def build(training_config: str, metrics: dict[str, Any] | None) -> ModelFolder:
        # A merged copy to save as an ordinary model; training goes on with the adapter.
        folder = adapters.merged_copy(model).to_folder(
            tokenizer=base.tokenizer,
            max_length=base.meta.max_length,
            training_config=training_config,
        )
        folder.merged_adapter = adapters.extract(model, skill=None)
        folder.ood = base.ood
        folder.metrics = metrics
        return folder

    return build
