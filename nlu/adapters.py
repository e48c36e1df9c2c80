"""Per-skill LoRA adapters: fine-tune one skill without touching any other skill's outputs.

`nlu train --from MODEL --finetune lora` on one skill's data trains a LoRA adapter (peft, on the
attention query/value projections) plus that skill's intent and slot heads. The saved model
directory is the base model unchanged, plus:

    adapters/<skill>/adapter_config.json       peft's LoRA config
    adapters/<skill>/adapter_model.safetensors the low-rank weights (~300 KB for MiniLM, r=8)
    adapters/<skill>/heads.safetensors         the skill's fine-tuned intent and slot heads

At parse time the router and every other skill run on the base encoder exactly as before (their
outputs are bit-identical); only texts routed (or forced) to an adapted skill get a second
forward pass through the encoder with that skill's adapter merged in, whose intent and slot
logits replace the base ones for that skill. The price is that second pass for those texts, and
one merged encoder copy in memory per adapted skill; `nlu export` writes one ONNX graph per
adapted skill under `adapters/<skill>/model.onnx`.

While training, the per-epoch dev score (model selection) runs the router on the adapted encoder
too; the data covers only the adapted skill and the adapter is small, so this only matters for
texts near the routing boundary.

The alternative, `--finetune lora_merged`, merges the adapter into the shared encoder: one pass,
but every skill sees the changed encoder (see docs/experiments.md for what that costs).
"""

from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from nlu.model import JointModel, ModelDirError

logger = logging.getLogger(__name__)

ADAPTERS_DIR = "adapters"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
HEADS_FILE = "heads.safetensors"


def adapter_skills(directory: str | Path, *, weights: str = ADAPTER_CONFIG) -> list[str]:
    """Skills with an adapter in a model directory (`weights`: the file that marks one)."""
    root = Path(directory) / ADAPTERS_DIR
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if (d / weights).is_file())


def check_adapters(directory: Path, skills: list[str]) -> None:
    """Every adapter must belong to a skill of the model and be complete."""
    root = directory / ADAPTERS_DIR
    if not root.is_dir():
        return
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if d.name not in skills:
            raise ModelDirError(
                f"{d} is an adapter for skill {d.name!r}, which the model does not have "
                f"(skills: {', '.join(skills)}); remove the folder"
            )


def _heads_state(model: JointModel, skill: str) -> dict[str, torch.Tensor]:
    state = {}
    for kind, heads in (("intent", model.intent_heads), ("slot", model.slot_heads)):
        for name, value in heads[skill].state_dict().items():
            state[f"{kind}.{name}"] = value.detach().contiguous().cpu().clone()
    return state


def _load_heads(model: JointModel, skill: str, state: dict[str, torch.Tensor]) -> None:
    for kind, heads in (("intent", model.intent_heads), ("slot", model.slot_heads)):
        prefix = f"{kind}."
        part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        heads[skill].load_state_dict(part, strict=True)


def save_skill_adapter(directory: Path, *, skill: str, model: JointModel) -> Path:
    """Write the adapter of a model whose encoder is a peft LoRA wrapper, and the skill's heads."""
    from peft import get_peft_model_state_dict

    peft_encoder: Any = model.encoder
    target = directory / ADAPTERS_DIR / skill
    target.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().contiguous().cpu().clone()
        for k, v in get_peft_model_state_dict(peft_encoder).items()
    }
    save_file(state, str(target / ADAPTER_WEIGHTS))
    peft_encoder.peft_config["default"].save_pretrained(str(target))
    save_file(_heads_state(model, skill), str(target / HEADS_FILE))
    return target


def wrap_for_training(model: JointModel, *, skill: str, rank: int, start: Path | None) -> None:
    """Put a trainable LoRA adapter on the encoder: a new one, or the skill's saved adapter
    (then its heads too) to continue training it."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if start is not None:
        model.encoder = PeftModel.from_pretrained(  # type: ignore[assignment]
            model.encoder, str(start), is_trainable=True
        )
        _load_heads(model, skill, load_file(str(start / HEADS_FILE)))
        logger.info("continuing the %s adapter from %s", skill, start)
    else:
        config = LoraConfig(
            r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=["query", "value"]
        )
        model.encoder = get_peft_model(model.encoder, config)  # type: ignore[assignment]


def adapted_model(base: JointModel, directory: Path, skill: str) -> JointModel:
    """A copy of `base` with the skill's adapter merged into the encoder and its heads loaded."""
    from peft import PeftModel

    source = directory / ADAPTERS_DIR / skill
    missing = [
        f for f in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, HEADS_FILE) if not (source / f).is_file()
    ]
    if missing:
        raise ModelDirError(f"adapter {source} is incomplete: missing {', '.join(missing)}")
    clone = copy.deepcopy(base)
    wrapped: Any = PeftModel.from_pretrained(clone.encoder, str(source))
    clone.encoder = wrapped.merge_and_unload()
    _load_heads(clone, skill, load_file(str(source / HEADS_FILE)))
    return clone.eval()


def copy_adapters(source: Path, target: Path, *, keep: list[str] | None = None) -> list[str]:
    """Carry adapters from one model directory to another (optionally only `keep` skills)."""
    copied = []
    for skill in adapter_skills(source):
        if keep is not None and skill not in keep:
            continue
        shutil.copytree(
            source / ADAPTERS_DIR / skill, target / ADAPTERS_DIR / skill, dirs_exist_ok=True
        )
        copied.append(skill)
    return copied
