"""Typed training configuration: YAML file + `key=value` overrides; unknown keys are errors.

The config lives at the edge: the CLI resolves it and calls `nlu.train.train(**asdict(cfg))`;
nothing below the CLI receives the config object itself.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    pass


@dataclass
class TrainConfig:
    # Data: skill folders, JSONL files or JointBERT folders. dev_data defaults to each source's
    # own dev split (skills: a held-out fraction of the expanded templates).
    data: list[str] = field(default_factory=lambda: ["skills"])
    dev_data: list[str] = field(default_factory=list)
    samples_per_template: int = 20
    dev_fraction: float = 0.1
    # Model
    encoder: str = "default"
    pooling: str = "mean"
    dropout: float = 0.1
    max_length: int = 64
    # Optimisation
    epochs: int = 4
    batch_size: int = 32
    learning_rate: float = 1e-4
    head_learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    # Label smoothing for the router, intent and slot cross-entropies (0 = off).
    label_smoothing: float = 0.0
    # Encoder layer l of L learns at learning_rate · layer_lr_decay^(L − l); embeddings at
    # learning_rate · layer_lr_decay^L. 1.0 = one rate for the whole encoder.
    layer_lr_decay: float = 1.0
    # Multi-task controls (nlu/mtl.py): how often each skill is drawn, and how task losses
    # (router, each skill's intents, each skill's slots) are weighted.
    # Default from benchmarks/mtl_ablation.py (docs/experiments.md): p ∝ n^(1/2) lifts small
    # skills by 6 macro exact-match points over proportional without costing the large ones.
    sampling: str = "temperature"  # proportional | temperature | uniform | annealed
    sampling_temperature: float = 2.0
    loss_weighting: str = "static"  # static | uncertainty | dwa
    router_loss_weight: float = 1.0
    intent_loss_weight: float = 1.0
    slot_loss_weight: float = 1.0
    dwa_temperature: float = 2.0
    dwa_period: int = 100  # optimizer steps per DWA period
    mixed_precision: str = "no"
    seed: int = 42
    # Fine-tuning a saved model (`nlu train --from MODEL`): its encoder, heads and labels are
    # the starting point; `encoder` is then ignored. See nlu/finetune.py for the modes.
    init_from: str | None = None
    finetune: str = "full"  # full | top_layers | heads | lora | lora_merged
    unfreeze_layers: int = 2  # top_layers: how many of the top encoder layers train
    lora_rank: int = 8
    # Output
    output_dir: str = "runs/demo"
    resume: str | None = None  # a checkpoint folder, or "latest"
    keep_checkpoints: int = 1


def _coerce(name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        return [_coerce(name, v, args[0]) for v in value]
    if hint is float and not isinstance(value, bool) and isinstance(value, int | str):
        # YAML 1.1 reads `3e-5` (no dot) as a string; accept it as the number it means.
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if hint is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{name} must be {hint.__name__}, got {value!r}")
    return value


def make_config(values: dict[str, Any], *, source: str = "config") -> TrainConfig:
    hints = typing.get_type_hints(TrainConfig)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(unknown)}. Known keys: {', '.join(sorted(known))}"
        )
    cfg = TrainConfig(**{k: _coerce(k, v, hints[k]) for k, v in values.items()})
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(
                f"{source}: {key}={getattr(cfg, key)!r}; choose one of {', '.join(allowed)}"
            )
    if not 0.0 <= cfg.label_smoothing < 1.0:
        raise ConfigError(
            f"{source}: label_smoothing={cfg.label_smoothing}; use a value in [0, 1), e.g. 0.1"
        )
    return cfg


CHOICES = {
    "pooling": ("mean", "cls"),
    "sampling": ("proportional", "temperature", "uniform", "annealed"),
    "loss_weighting": ("static", "uncertainty", "dwa"),
    "mixed_precision": ("no", "fp16", "bf16"),
    "finetune": ("full", "top_layers", "heads", "lora", "lora_merged"),
}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"cannot read config {path}: {err}") from err
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config file is a mapping of key: value")
        values.update(loaded)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value")
        # YAML parsing gives numbers, booleans, null and [lists] their natural types.
        values[key.strip()] = yaml.safe_load(raw) if raw else ""
    return make_config(values, source=str(path or "overrides"))


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)
