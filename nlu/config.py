"""Typed training configuration: YAML file + `key=value` overrides; unknown keys are errors.

The config is grouped (data, model, optim, mtl, finetune, ood, output); each training stage takes
only its group. Users write flat keys (`epochs: 4`, `data=skills,my.jsonl`) or nested groups
(`optim: {epochs: 4}`, `optim.epochs=4`); every key name is unique across groups. The resolved
config is saved nested with each run and inside the model folder.

Adding a key means adding a field to its group here and reading it where it is used: choices
are `Literal` types (validated here), and nothing else lists the keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

Pooling = Literal["mean", "cls"]
RouterInput = Literal["sentence", "layers"]
Sampling = Literal["proportional", "temperature", "uniform", "annealed"]
Weighting = Literal["static", "uncertainty", "dwa"]
Precision = Literal["no", "fp16", "bf16"]
FinetuneMode = Literal["full", "top_layers", "heads", "lora", "lora_merged"]
LoraModules = Literal["attention", "all"]
OodMethod = Literal["none", "msp", "temperature", "energy", "mahalanobis"]
SharingMode = Literal["hard", "cross_stitch", "sluice"]


class ConfigError(ValueError):
    pass


@dataclass
class DataConfig:
    # Skill folders, JSONL files or benchmark folders/files. dev_data defaults to each source's
    # own dev split (skills: a held-out fraction of the expanded templates).
    data: list[str] = field(default_factory=lambda: ["skills"])
    # Dev sources instead of each source's own dev split (model selection and calibration read dev).
    dev_data: list[str] = field(default_factory=list)
    # Skill folders: how many fillings of each template `{slot}` placeholder pattern.
    samples_per_template: int = 20
    # Share of the expanded templates (or of a single JSONL file) held out as dev.
    dev_fraction: float = 0.1
    # Out-of-scope examples in the training data (skill null; skills/out_of_scope.yaml) train
    # the router to refuse (outlier exposure). False: they only serve dev and test.
    train_negatives: bool = True


@dataclass
class ModelConfig:
    # "default" (all-MiniLM-L6-v2, offline), "mpnet" (scripts/get_mpnet.sh), a local folder or a
    # Hugging Face name.
    encoder: str = "default"
    # How token vectors become the sentence vector the router and intent heads read.
    pooling: Pooling = "mean"
    # What the skill router reads: the pooled sentence vector ("sentence", as the intent heads)
    # or the mean of every transformer layer's pooled vector ("layers"; measured for federated
    # owners, whose router is fitted from feature statistics: docs/guide/federated.md).
    router_input: RouterInput = "sentence"
    # Dropout before the heads.
    dropout: float = 0.1
    # Tokens per text; longer texts are truncated (results say `truncated: true`).
    max_length: int = 64
    # Parameter sharing (nlu/sharing.py): one encoder under every head ("hard"), or columns of
    # it with learned mixing ("cross_stitch", "sluice"). sharing_groups: [tasks] (one column
    # for router + intents, one for slots) or skill groups, each skill+skill+...; subspaces:
    # the slices of each sluice layer.
    sharing: SharingMode = "hard"
    # sharing=cross_stitch or sluice: [tasks] or skill groups (see sharing).
    sharing_groups: list[str] = field(default_factory=lambda: ["tasks"])
    # sharing=sluice: slices of each layer.
    subspaces: int = 2


@dataclass
class OptimConfig:
    # Passes over the training data; the best epoch on dev is kept.
    epochs: int = 4
    # Examples per optimiser step (per process).
    batch_size: int = 32
    # The encoder's peak learning rate (AdamW, linear warm-up and decay).
    learning_rate: float = 1e-4
    # The router's and heads' learning rate (new parameters learn faster).
    head_learning_rate: float = 1e-3
    # AdamW weight decay (not on biases and LayerNorm).
    weight_decay: float = 0.01
    # Share of the steps spent warming the learning rate up from 0.
    warmup_ratio: float = 0.1
    # Batches whose gradients add up before one optimiser step.
    gradient_accumulation_steps: int = 1
    # Gradient clipping norm (0 = off).
    max_grad_norm: float = 1.0
    # Label smoothing for the router, intent and slot cross-entropies (0 = off).
    label_smoothing: float = 0.0
    # Encoder layer l of L learns at learning_rate · layer_lr_decay^(L − l); embeddings at
    # learning_rate · layer_lr_decay^L. 1.0 = one rate for the whole encoder.
    layer_lr_decay: float = 1.0
    # Soft sharing's mixing weights learn at their own rate (the papers use a much higher one
    # than the encoder's).
    mixing_learning_rate: float = 1e-2
    # Accelerate's mixed precision for the forward and backward passes.
    mixed_precision: Precision = "no"


@dataclass
class MultiTaskConfig:
    # How often each skill is drawn, and how task losses (router, each skill's intents, each
    # skill's slots) are weighted (nlu/mtl.py). Default from benchmarks/mtl_ablation.py
    # (benchmarks/results/studies/multi-task.md): p ∝ n^(1/2) lifts small skills by 6 macro
    # exact-match points over
    # proportional without costing the large ones.
    sampling: Sampling = "temperature"
    # sampling=temperature: p ∝ n^(1/T); T = 1 is proportional, large T uniform.
    sampling_temperature: float = 2.0
    # static (the three weights below), uncertainty (learned, Kendall et al. 2018) or dwa (dynamic
    # weight average, Liu et al. 2019).
    loss_weighting: Weighting = "static"
    # loss_weighting=static: weight of the router's loss.
    router_loss_weight: float = 1.0
    # loss_weighting=static: weight of each skill's intent loss.
    intent_loss_weight: float = 1.0
    # loss_weighting=static: weight of each skill's slot loss.
    slot_loss_weight: float = 1.0
    # loss_weighting=dwa: softness of the weights.
    dwa_temperature: float = 2.0
    dwa_period: int = 100  # optimizer steps per DWA period
    # Out-of-scope examples in the data (skill null) train the router towards a uniform
    # distribution over skills (outlier exposure); this weighs that loss.
    oos_loss_weight: float = 0.5
    # Sluice sharing: weight of the orthogonality penalty between a column's subspaces.
    orthogonality_weight: float = 1e-3


@dataclass
class FinetuneConfig:
    # Fine-tuning a saved model (`nlu train --from MODEL`): its encoder, heads and labels are
    # the starting point; `encoder` is then ignored. See nlu/finetune.py for the modes.
    init_from: str | None = None
    # With init_from: which parameters train (full, top_layers, heads, lora, lora_merged;
    # docs/guide/training.md).
    finetune: FinetuneMode = "full"
    unfreeze_layers: int = 2  # top_layers: how many of the top encoder layers train
    # finetune=lora or lora_merged: the adapter's rank.
    lora_rank: int = 8
    # Which encoder layers get LoRA adapters: "attention" (query and value projections, the
    # LoRA paper's choice) or "all" (every linear layer of every transformer block: about 4.5x
    # the adapter parameters, and faster learning on little data).
    lora_modules: LoraModules = "attention"


@dataclass
class OodConfig:
    # Out-of-scope rejection (nlu.model.ood), fitted after training without retraining: the
    # score the threshold applies to ("none": every text is in scope), and the share of in-scope
    # dev texts the threshold keeps. The default method comes from the CLINC150 comparison in
    # benchmarks/results/studies/out-of-scope.md.
    oos_method: OodMethod = "mahalanobis"
    # Share of in-scope dev texts the threshold keeps in scope.
    target_recall: float = 0.98


@dataclass
class OutputConfig:
    # The run folder: model/, config.yaml, checkpoints/, train_summary.json, learning_curve.png.
    output_dir: str = "runs/demo"
    resume: str | None = None  # a checkpoint folder, or "latest"
    # Epoch checkpoints kept (newest first) for resume.
    keep_checkpoints: int = 1
    # An output_dir that already holds a trained model is refused unless this is set.
    overwrite: bool = False
    # Experiment tracking through Accelerate's trackers: "none", "tensorboard" (the
    # `tensorboard` extra), "wandb", "mlflow", ... (whatever Accelerate supports and is installed);
    # logs go under <output_dir>/tracking.
    log_with: str = "none"


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    mtl: MultiTaskConfig = field(default_factory=MultiTaskConfig)
    # With init_from: which parameters train (full, top_layers, heads, lora, lora_merged;
    # docs/guide/training.md).
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    ood: OodConfig = field(default_factory=OodConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    # Seeds data splits, template filling, initialisation and data order: one seed, one model.
    seed: int = 42


GROUPS: dict[str, type] = {
    f.name: typing.get_type_hints(TrainConfig)[f.name]
    for f in dataclasses.fields(TrainConfig)
    if dataclasses.is_dataclass(typing.get_type_hints(TrainConfig)[f.name])
}
# Public key -> its group ("" for top-level keys).
KEYS: dict[str, str] = {
    **{f.name: group for group, cls in GROUPS.items() for f in dataclasses.fields(cls)},
    **{f.name: "" for f in dataclasses.fields(TrainConfig) if f.name not in GROUPS},
}


def choices(literal: Any) -> tuple[str, ...]:
    """The values a Literal config type allows (for CLI choices and error messages)."""
    return tuple(typing.get_args(literal))


def _coerce(name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{name}={value!r}; choose one of {', '.join(map(str, args))}")
        return value
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


def typed_value(cls: type, key: str, value: Any, *, source: str) -> Any:
    """`value` checked and converted for field `key` of config dataclass `cls` (the rules of
    the training keys, for recipes with keys of their own)."""
    try:
        return _coerce(key, value, typing.get_type_hints(cls)[key])
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def _flatten(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Nested groups (`optim: {epochs: 4}`) and dotted keys (`optim.epochs`) -> flat keys."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        group, dot, name = key.partition(".")
        if dot:
            if group not in GROUPS or KEYS.get(name) != group:
                raise ConfigError(f"{source}: unknown key {key!r}{_suggest(key)}")
            flat[name] = value
        elif key in GROUPS and isinstance(value, dict):
            for name, inner in value.items():
                if KEYS.get(name) != key:
                    raise ConfigError(f"{source}: unknown key {key}.{name}{_suggest(name)}")
                flat[name] = inner
        else:
            flat[key] = value
    return flat


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key.rpartition(".")[2], list(KEYS), n=1)
    return f"; did you mean {close[0]!r}?" if close else f". Known keys: {', '.join(sorted(KEYS))}"


def make_config(values: dict[str, Any], *, source: str = "config") -> TrainConfig:
    flat = _flatten(values, source)
    unknown = sorted(set(flat) - set(KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}{_suggest(unknown[0])}")
    return replace(TrainConfig(), source=source, **flat)


def replace(cfg: TrainConfig, *, source: str = "overrides", **changes: Any) -> TrainConfig:
    """A copy of `cfg` with flat keys changed (`replace(cfg, epochs=2, data=[...])`), validated."""
    groups: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for key, value in changes.items():
        if key not in KEYS:
            raise ConfigError(f"{source}: unknown key {key!r}{_suggest(key)}")
        group = KEYS[key]
        hint = typing.get_type_hints(GROUPS[group] if group else TrainConfig)[key]
        try:
            coerced = _coerce(key, value, hint)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
        (groups.setdefault(group, {}) if group else top)[key] = coerced
    new = dataclasses.replace(
        cfg,
        **top,
        **{g: dataclasses.replace(getattr(cfg, g), **kv) for g, kv in groups.items()},
    )
    if not 0.0 < new.ood.target_recall <= 1.0:
        raise ConfigError(
            f"{source}: target_recall={new.ood.target_recall}; use a share in (0, 1], e.g. 0.98"
        )
    if new.model.router_input == "layers" and new.model.sharing != "hard":
        raise ConfigError(
            f"{source}: router_input=layers needs one encoder (sharing=hard), not "
            f"sharing={new.model.sharing}; use router_input=sentence with soft sharing"
        )
    if not 0.0 <= new.optim.label_smoothing < 1.0:
        raise ConfigError(
            f"{source}: label_smoothing={new.optim.label_smoothing}; use a value in [0, 1), "
            "e.g. 0.1"
        )
    return new


def read_values(path: str | Path | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """A config file's keys with `key=value` overrides on top, not yet checked (every recipe's
    loader checks them against its own keys)."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(read_yaml(Path(path)))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value")
        # YAML parsing gives numbers, booleans, null and [lists] their natural types.
        values[key.strip()] = yaml.safe_load(raw) if raw else ""
    return values


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    return make_config(read_values(path, overrides or []), source=str(path or "overrides"))


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read config {path}: {err}") from err
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config file is a mapping of key: value")
    return loaded


def parse_config(text: str, *, source: str) -> TrainConfig:
    """A resolved config as saved with a run or in a model folder (flat or nested)."""
    loaded = yaml.safe_load(text) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{source}: a config is a mapping of key: value")
    # Keys that later tools add (add-skill's note) are not training keys.
    return make_config({k: v for k, v in loaded.items() if k in KEYS or k in GROUPS}, source=source)


def flat(cfg: TrainConfig) -> dict[str, Any]:
    """Every public key with its value: the flat view that `key=value` overrides use."""
    return {k: getattr(getattr(cfg, group) if group else cfg, k) for k, group in KEYS.items()}


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)
