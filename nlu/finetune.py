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

import copy
import logging
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nlu.adapters import (
    ADAPTERS_DIR,
    adapter_skills,
    copy_adapters,
    save_skill_adapter,
    wrap_for_training,
)
from nlu.model import JointModel
from nlu.schema import DataError, SkillLabels

logger = logging.getLogger(__name__)

MODES = ("full", "top_layers", "heads", "lora", "lora_merged")


class FinetuneError(ValueError):
    """The fine-tuning mode does not fit the model or the data."""


# Saves the fine-tuned model: (model_dir, tokenizer=, max_length=, training_config=) -> None.
Saver = Callable[..., None]


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
        slots = sorted(set(skill.slot_types) - set(known[skill.name].slot_types))
        if intents:
            problems.append(f"{skill.name}: intents {intents} are not in the model")
        if slots:
            problems.append(f"{skill.name}: slot types {slots} are not in the model")
    if problems:
        raise DataError(
            f"the training data does not fit {source}: "
            + "; ".join(problems)
            + ". Fine-tuning keeps the model's label space; retrain from the encoder to change it."
        )


def check_mode(*, mode: str, source: Path, data_skills: Sequence[str]) -> None:
    """Refuse modes that would silently break the model's per-skill adapters."""
    if mode not in MODES:
        raise FinetuneError(f"finetune must be one of {MODES}, not {mode!r}")
    adapted = adapter_skills(source)
    if mode == "lora" and len(data_skills) != 1:
        raise FinetuneError(
            f"finetune=lora trains one skill's adapter, but the data covers {len(data_skills)} "
            f"skills ({', '.join(data_skills)}): run once per skill, or use lora_merged"
        )
    if adapted and mode in ("full", "top_layers", "lora_merged"):
        raise FinetuneError(
            f"{source} has per-skill adapters ({', '.join(adapted)}) trained on its current "
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
    *,
    mode: str,
    unfreeze_layers: int,
    lora_rank: int,
    train_router: bool,
    source: Path,
    data_skills: Sequence[str],
) -> Saver | None:
    """Set requires_grad per mode. Returns how to save the result when that differs from
    `model.save_pretrained` (the LoRA modes), else None."""
    check_mode(mode=mode, source=source, data_skills=data_skills)
    saver: Saver | None = None
    if mode == "lora":
        (skill,) = data_skills
        existing = source / ADAPTERS_DIR / skill
        wrap_for_training(
            model,
            skill=skill,
            rank=lora_rank,
            start=existing if skill in adapter_skills(source) else None,
        )

        def save_lora(
            model_dir: Path, *, tokenizer: Any, max_length: int, training_config: str
        ) -> None:
            # The base model's files as they are (so every other skill is bit-identical),
            # then this skill's adapter beside them.
            model_dir.mkdir(parents=True, exist_ok=True)
            if model_dir.resolve() != source.resolve():
                for item in source.iterdir():
                    if item.is_file():
                        shutil.copy2(item, model_dir / item.name)
            copy_adapters(source, model_dir, keep=[s for s in adapter_skills(source) if s != skill])
            (model_dir / "training_config.yaml").write_text(training_config)
            save_skill_adapter(model_dir, skill=skill, model=model)

        saver = save_lora

    elif mode == "lora_merged":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=lora_rank,
            lora_alpha=2 * lora_rank,
            lora_dropout=0.0,
            target_modules=["query", "value"],
        )
        # Freezes the base weights; the peft wrapper stands in for the encoder while training.
        model.encoder = get_peft_model(model.encoder, config)  # type: ignore[assignment]

        def save_merged(
            model_dir: Path, *, tokenizer: Any, max_length: int, training_config: str
        ) -> None:
            # A merged copy to save as an ordinary model; training goes on with the adapter.
            clone = copy.deepcopy(model)
            peft_encoder: Any = clone.encoder
            adapter = copy_adapter(peft_encoder)
            clone.encoder = peft_encoder.merge_and_unload()
            clone.save_pretrained(
                model_dir,
                tokenizer=tokenizer,
                max_length=max_length,
                training_config=training_config,
            )
            save_adapter(adapter, model_dir / "adapter")

        saver = save_merged

    elif mode in ("heads", "top_layers"):
        layers = int(model.encoder.config.num_hidden_layers)
        keep = set(range(layers - unfreeze_layers, layers)) if mode == "top_layers" else set()
        for name, param in model.encoder.named_parameters():
            match = re.search(r"\.layers?\.(\d+)\.", name)
            param.requires_grad_(match is not None and int(match.group(1)) in keep)
    if saver is None and adapter_skills(source):
        # heads mode on skills without adapters: the others' adapters stay valid (same encoder).

        def save_with_adapters(
            model_dir: Path, *, tokenizer: Any, max_length: int, training_config: str
        ) -> None:
            model.save_pretrained(
                model_dir,
                tokenizer=tokenizer,
                max_length=max_length,
                training_config=training_config,
            )
            copy_adapters(source, model_dir)

        saver = save_with_adapters

    if not train_router:
        for param in model.router.parameters():
            param.requires_grad_(False)
    if mode == "lora":
        # The router and the other skills' heads are served from the base model unchanged.
        for name in model.index.names:
            if name != data_skills[0]:
                for param in (
                    *model.intent_heads[name].parameters(),
                    *model.slot_heads[name].parameters(),
                ):
                    param.requires_grad_(False)
        for param in model.router.parameters():
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
    return saver


def copy_adapter(peft_model: Any) -> dict[str, Any]:
    """The adapter weights and config, detached (merging rewrites the modules)."""
    from peft import get_peft_model_state_dict

    state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items()}
    return {"state": state, "config": peft_model.peft_config["default"]}


def save_adapter(adapter: dict[str, Any], directory: Path) -> None:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file(adapter["state"], str(directory / "adapter_model.safetensors"))
    adapter["config"].save_pretrained(str(directory))
