"""LoRA adapters (peft): the one place that configures, trains, extracts and merges them.

Per-skill adapters let `nlu train --from MODEL --finetune lora` on one skill's data change that
skill without touching any other skill's outputs. The saved model folder is the base model
unchanged, plus `adapters/<skill>/` (peft's LoRA config and low-rank weights, ~300 KB for
MiniLM at r=8, and the skill's fine-tuned intent and slot heads; see `nlu.model.modeldir`).

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
but every skill sees the changed encoder (benchmarks/results/studies/forgetting.md measures
what that costs).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch

from nlu.model.joint import JointModel
from nlu.model.modeldir import Adapter, ModelDirError

logger = logging.getLogger(__name__)

# Per `lora_modules`, the linear layers of BERT-style encoders that get adapters: attention's
# query and value projections, or every linear layer of each block ("dense" names attention's
# output and the feed-forward layers; our encoders have no pooler).
TARGET_MODULES: dict[str, list[str]] = {
    "attention": ["query", "value"],
    "all": ["query", "key", "value", "dense"],
}


def lora_config(rank: int, modules: str = "attention") -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=list(TARGET_MODULES[modules])
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


def wrap_for_training(
    model: JointModel,
    *,
    rank: int,
    modules: str = "attention",
    start: Adapter | None = None,
    skill: str | None = None,
) -> None:
    """Put a trainable LoRA adapter on the encoder's `modules` (freezing its base weights): a
    new one, or a saved adapter to continue training it (its own rank and modules; then with
    its skill's heads, when it has them)."""
    from peft import PeftConfig, get_peft_model, set_peft_model_state_dict

    if start is None:
        model.encoder = get_peft_model(model.encoder, lora_config(rank, modules))
        return
    if start.config is None or start.weights is None:
        raise ModelDirError("the adapter to continue has no PyTorch weights")
    config = PeftConfig.from_peft_type(**PeftConfig.check_kwargs(**start.config))
    config.inference_mode = False
    wrapped: Any = get_peft_model(model.encoder, config)
    set_peft_model_state_dict(wrapped, start.weights)
    model.encoder = wrapped
    if skill is not None and start.heads is not None:
        _load_heads(model, skill, start.heads)
    logger.info("continuing the %s adapter", skill or "merged")


def extract(model: JointModel, *, skill: str | None) -> Adapter:
    """The adapter of a model whose encoder is a peft LoRA wrapper (detached copies), with the
    skill's heads when `skill` is given."""
    from peft import get_peft_model_state_dict

    peft_encoder: Any = model.encoder
    state = {
        k: v.detach().contiguous().cpu().clone()
        for k, v in get_peft_model_state_dict(peft_encoder).items()
    }
    return Adapter(
        config=peft_encoder.peft_config["default"].to_dict(),
        weights=state,
        heads=_heads_state(model, skill) if skill is not None else None,
    )


def merged_copy(model: JointModel) -> JointModel:
    """A copy of a model under LoRA training with the adapter merged into a plain encoder."""
    clone = copy.deepcopy(model)
    peft_encoder: Any = clone.encoder
    clone.encoder = peft_encoder.merge_and_unload()
    return clone


def adapted_model(base: JointModel, skill: str, adapter: Adapter) -> JointModel:
    """A copy of `base` with the skill's adapter merged into the encoder and its heads loaded."""
    if adapter.config is None or adapter.weights is None or adapter.heads is None:
        raise ModelDirError(f"the adapter of skill {skill!r} has no PyTorch weights")
    clone = copy.deepcopy(base)
    wrap_for_training(clone, rank=0, start=adapter, skill=skill)
    peft_encoder: Any = clone.encoder
    clone.encoder = peft_encoder.merge_and_unload()
    return clone.eval()
