"""Continue training a saved model (`nlu train --from MODEL`): which parameters may move.

Modes:
- full: every parameter.
- top_layers: the heads and the top `unfreeze_layers` encoder layers; embeddings and lower
  layers frozen.
- heads: the heads only (router, intent and slot heads); the encoder is frozen.
- lora: low-rank adapters (peft LoRA on the attention query/value projections) plus the heads;
  the encoder's own weights are frozen. At save time the adapter is merged into the encoder, so
  the saved model is an ordinary model directory (served as before), and the adapter alone is
  saved beside it under `adapter/` (a few hundred KB) to ship or inspect.

Skills are not added here (that is `nlu add-skill`): the data's skills, intents and slot types
must already be in the model. When the data covers a single skill the router cannot learn
anything but "always this skill", so its loss is switched off and its weights frozen.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nlu.model import JointModel
from nlu.schema import DataError, SkillLabels

logger = logging.getLogger(__name__)

MODES = ("full", "top_layers", "heads", "lora")


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


def freeze_for(
    model: JointModel,
    *,
    mode: str,
    unfreeze_layers: int,
    lora_rank: int,
    train_router: bool,
) -> Callable[[], tuple[JointModel, dict[str, Any]]] | None:
    """Set requires_grad per mode. For LoRA, returns a function giving a copy of the model with
    the adapter merged (to save) and the adapter itself; otherwise None."""
    if mode not in MODES:
        raise ValueError(f"finetune must be one of {MODES}, not {mode!r}")
    export: Callable[[], tuple[JointModel, dict[str, Any]]] | None = None
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=lora_rank,
            lora_alpha=2 * lora_rank,
            lora_dropout=0.0,
            target_modules=["query", "value"],
        )
        # Freezes the base weights; the peft wrapper stands in for the encoder while training.
        model.encoder = get_peft_model(model.encoder, config)  # type: ignore[assignment]

        def export() -> tuple[JointModel, dict[str, Any]]:
            # A merged copy to save as an ordinary model; training goes on with the adapter.
            clone = copy.deepcopy(model)
            peft_encoder: Any = clone.encoder
            adapter = copy_adapter(peft_encoder)
            clone.encoder = peft_encoder.merge_and_unload()
            return clone, adapter

    elif mode in ("heads", "top_layers"):
        layers = int(model.encoder.config.num_hidden_layers)
        keep = set(range(layers - unfreeze_layers, layers)) if mode == "top_layers" else set()
        for name, param in model.encoder.named_parameters():
            match = re.search(r"\.layers?\.(\d+)\.", name)
            param.requires_grad_(match is not None and int(match.group(1)) in keep)
    if not train_router:
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
    return export


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
