"""The optimiser stage: AdamW over parameter groups (encoder and heads at their own rates,
layer-wise decay, no weight decay on biases and LayerNorm) with a linear warm-up schedule."""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import get_linear_schedule_with_warmup

from nlu.config import (
    OptimConfig,
)
from nlu.model.encoders import layer_of
from nlu.model.joint import JointModel
from nlu.training.mtl import LossWeighting

MIXING_PARAMETERS = ("encoder.mixing", "encoder.layer_mixing")


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


def configured_groups(cfg: OptimConfig, model: JointModel) -> list[dict[str, Any]]:
    """`param_groups` with the rates of the optimiser config."""
    return param_groups(
        model,
        learning_rate=cfg.learning_rate,
        head_learning_rate=cfg.head_learning_rate,
        weight_decay=cfg.weight_decay,
        layer_lr_decay=cfg.layer_lr_decay,
        mixing_learning_rate=cfg.mixing_learning_rate,
    )


def setup_optimizer(
    cfg: OptimConfig, model: JointModel, weighting: LossWeighting, *, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    groups = configured_groups(cfg, model)
    if weighting.log_vars.requires_grad:  # learned task weights (uncertainty)
        groups.append(
            {"params": [weighting.log_vars], "lr": cfg.head_learning_rate, "weight_decay": 0}
        )
    optimizer = torch.optim.AdamW(groups)
    total = math.ceil(steps_per_epoch / cfg.gradient_accumulation_steps) * cfg.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)
    return optimizer, scheduler
