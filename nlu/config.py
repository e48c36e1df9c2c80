"""Typed configuration and the one loader every recipe and the server use.

A config is a dataclass whose fields are keys or groups (nested dataclasses). The training
config is grouped (data, model, optim, mtl, finetune, ood, output); each training stage takes
only its group. Recipes nest it (`DistillConfig.student`, `FederatedConfig.student`) beside their
own groups, and the server's settings are one flat dataclass. `load(cls, path, overrides,
flags=...)` reads any of them: a YAML file, then `key=value` overrides, then values the command
line already parsed (flags). Users write flat keys (`epochs: 4`), nested groups or dotted keys
(`optim.epochs=4`); every key name is unique in its config, so a flat key has one place. Unknown
keys are errors that name the closest known one; values are checked against the field's type
(choices are `Literal` types); a class's `problems()` checks what spans several keys. YAML
aliases are refused (nlu.schema.NoAliasLoader). The resolved config is saved with each run.

Adding a key means adding a field (with a comment: docs/reference/config.md is generated from
them) and reading it where it is used: nothing else lists the keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from nlu.schema import load_yaml_text

Pooling = Literal["mean", "cls"]
RouterInput = Literal["sentence", "layers"]
Sampling = Literal["proportional", "temperature", "uniform", "annealed"]
Weighting = Literal["static", "uncertainty", "dwa"]
Precision = Literal["no", "fp16", "bf16"]
FinetuneMode = Literal["full", "top_layers", "heads", "lora", "lora_merged"]
LoraModules = Literal["attention", "all"]
OodMethod = Literal["auto", "none", "msp", "temperature", "energy", "mahalanobis"]
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
    # Out-of-scope examples (skill null; out_of_scope.yaml) train the router to refuse. False:
    # they only serve dev and test.
    train_negatives: bool = True
    # Use the shared out_of_scope.yaml beside skill folders (less texts a skill handles).
    shared_negatives: bool = True


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
    # score the threshold applies to ("none": every text is in scope; "auto": the method that
    # rejects most out-of-scope dev texts, or mahalanobis when dev has none).
    oos_method: OodMethod = "auto"
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
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    ood: OodConfig = field(default_factory=OodConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    # Seeds data splits, template filling, initialisation and data order: one seed, one model.
    seed: int = 42

    def problems(self) -> list[str]:
        found = []
        if not 0.0 < self.ood.target_recall <= 1.0:
            found.append(
                f"target_recall={self.ood.target_recall}; use a share in (0, 1], e.g. 0.98"
            )
        if self.model.router_input == "layers" and self.model.sharing != "hard":
            found.append(
                f"router_input=layers needs one encoder (sharing=hard), not "
                f"sharing={self.model.sharing}; use router_input=sentence with soft sharing"
            )
        if not 0.0 <= self.optim.label_smoothing < 1.0:
            found.append(
                f"label_smoothing={self.optim.label_smoothing}; use a value in [0, 1), e.g. 0.1"
            )
        return found


C = TypeVar("C")
Path_ = tuple[str, ...]


# -- the loader ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tree:
    """Where every key of a config class lives: its name -> its path of field names."""

    leaves: dict[str, Path_]
    groups: dict[str, Path_]
    hints: dict[Path_, Any]


def tree(cls: Any) -> Tree:
    if cls not in _TREES:
        _TREES[cls] = _walk(cls)
    return _TREES[cls]


_TREES: dict[Any, Tree] = {}


def _walk(cls: Any) -> Tree:
    leaves: dict[str, Path_] = {}
    groups: dict[str, Path_] = {}
    hints: dict[Path_, Any] = {}

    def walk(node: Any, prefix: Path_) -> None:
        for f in dataclasses.fields(node):
            path, hint = (*prefix, f.name), typing.get_type_hints(node)[f.name]
            hints[path] = hint
            if dataclasses.is_dataclass(hint):
                groups.setdefault(f.name, path)
                walk(hint, path)
            elif leaves.setdefault(f.name, path) != path:
                raise TypeError(f"{cls.__name__}: key {f.name!r} is defined twice")

    walk(cls, ())
    return Tree(leaves, groups, hints)


def _under(path: Path_, within: Path_) -> bool:
    return path[: len(within)] == within


def _suggest(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key.rpartition(".")[2], list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else f". Known keys: {', '.join(sorted(known))}"


def _place(t: Tree, key: str, value: Any, within: Path_, out: dict[Path_, Any], shown: str) -> None:
    """Put one user key (flat, dotted or a group's mapping) at its path."""
    head, dot, rest = key.partition(".")
    group = t.groups.get(head)
    if dot:
        if group is None or not _under(group, within):
            raise ConfigError(f"unknown key {shown!r}{_suggest(shown, list(t.leaves))}")
        _place(t, rest, value, group, out, shown)
        return
    if group is not None and _under(group, within) and isinstance(value, Mapping):
        for name, inner in value.items():
            _place(t, str(name), inner, group, out, f"{shown}.{name}")
        return
    path = t.leaves.get(key)
    if path is None or not _under(path, within):
        raise ConfigError(f"unknown key {shown!r}{_suggest(key, list(t.leaves))}")
    out[path] = _coerce(key, value, t.hints[path])


def _make(cls: Any, base: Any, assigned: dict[Path_, Any], prefix: Path_, source: str) -> Any:
    """`base` (or, when None, a new `cls`) with the assigned values, checked."""
    changes: dict[str, Any] = {}
    missing = []
    for f in dataclasses.fields(cls):
        path = (*prefix, f.name)
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            inner = getattr(base, f.name) if base is not None else _default(f)
            if inner is None or any(_under(p, path) for p in assigned):
                changes[f.name] = _make(hint, inner, assigned, path, source)
        elif path in assigned:
            changes[f.name] = assigned[path]
        elif base is None and _default(f) is None and f.default is dataclasses.MISSING:
            missing.append(f.name)
    if missing:
        raise ConfigError(f"{source}: missing key {missing[0]!r}")
    made = cls(**changes) if base is None else dataclasses.replace(base, **changes)
    found = made.problems() if hasattr(made, "problems") else []
    if found:
        raise ConfigError(f"{source}: " + "; ".join(found))
    return made


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def update(config: C, values: Mapping[str, Any], *, source: str = "overrides") -> C:
    """A copy of `config` with user keys (flat, dotted or grouped) changed, checked."""
    return typing.cast(
        C, _make(type(config), config, _assigned(type(config), values, source), (), source)
    )


def build(cls: type[C], values: Mapping[str, Any], *, source: str = "config") -> C:
    """A new `cls` from user keys: the defaults, then `values`."""
    return typing.cast(C, _make(cls, None, _assigned(cls, values, source), (), source))


def _assigned(cls: Any, values: Mapping[str, Any], source: str) -> dict[Path_, Any]:
    """Each user key at its path, its value checked against the field's type."""
    t = tree(cls)
    assigned: dict[Path_, Any] = {}
    for key, value in values.items():
        try:
            _place(t, str(key), value, (), assigned, str(key))
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
    return assigned


def load(
    cls: type[C],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    flags: Mapping[str, Any] | None = None,
) -> C:
    """The one loader: a YAML file, then `key=value` overrides, then command-line flags that
    are set (None: not given)."""
    values = read_values(path, overrides)
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    return build(cls, values, source=str(path or "overrides"))


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
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        if dataclasses.is_dataclass(args[0]):
            return [_row(name, i, v, args[0]) for i, v in enumerate(value)]
        return origin(_coerce(name, v, args[0]) for v in value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name} must be a mapping, got {value!r}")
        return dict(value)
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


def _row(name: str, index: int, value: Any, cls: Any) -> Any:
    """One entry of a list of configs (`teachers:`), named in errors by its `name` key."""
    named = isinstance(value, Mapping) and "name" in value
    label = f"{name.removesuffix('s')} {value['name']}" if named else f"{name}[{index}]"
    if not isinstance(value, Mapping):
        raise ConfigError(f"{label} must be a mapping of key: value, got {value!r}")
    return build(cls, value, source=label)


def read_values(path: str | Path | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """A config file's keys with `key=value` overrides on top, not yet checked."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(read_yaml(Path(path)))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value")
        # YAML parsing gives numbers, booleans, null and [lists] their natural types.
        values[key.strip()] = load_yaml_text(raw) if raw else ""
    return values


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = load_yaml_text(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None) or err
        at = f"{path}:{mark.line + 1}" if mark else path  # one line, not YAML's excerpt
        raise ConfigError(f"cannot read config {at}: {problem}") from err
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config file is a mapping of key: value")
    return loaded


# -- the training config -----------------------------------------------------------------------


GROUPS: dict[str, type] = {
    k: tree(TrainConfig).hints[p] for k, p in tree(TrainConfig).groups.items()
}
# Public key -> its group ("" for top-level keys).
KEYS: dict[str, str] = {
    name: path[0] if len(path) > 1 else "" for name, path in tree(TrainConfig).leaves.items()
}


def make_config(values: Mapping[str, Any], *, source: str = "config") -> TrainConfig:
    return build(TrainConfig, values, source=source)


def replace(cfg: TrainConfig, *, source: str = "overrides", **changes: Any) -> TrainConfig:
    """A copy of `cfg` with flat keys changed (`replace(cfg, epochs=2, data=[...])`), checked."""
    return update(cfg, changes, source=source)


def load_config(
    path: str | Path | None = None, overrides: Sequence[str] | None = None
) -> TrainConfig:
    return load(TrainConfig, path, overrides or [])


def parse_config(text: str, *, source: str) -> TrainConfig:
    """A resolved config as saved with a run or in a model folder (flat or nested)."""
    loaded = load_yaml_text(text) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{source}: a config is a mapping of key: value")
    # Keys that other recipes save beside the training keys (teachers, federation, add-skill's
    # note) are not training keys.
    return make_config({k: v for k, v in loaded.items() if k in KEYS or k in GROUPS}, source=source)


def flat(cfg: TrainConfig) -> dict[str, Any]:
    """Every public key with its value: the flat view that `key=value` overrides use."""
    return {k: getattr(getattr(cfg, group) if group else cfg, k) for k, group in KEYS.items()}


def dump(config: Any) -> str:
    """A resolved config as a run saves it. A recipe's student keys stand at the top level, as
    `nlu train` saves them, so the model folder's config reads back with `parse_config` (which
    skips the recipe's own keys); the recipe's own groups follow."""
    values = dataclasses.asdict(config)
    return yaml.safe_dump({**values.pop("student", {}), **values}, sort_keys=False)


def parse(cls: type[C], text: str, *, source: str) -> C:
    """A config of type `cls` from the YAML text `dump` wrote."""
    loaded = load_yaml_text(text) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{source}: a config is a mapping of key: value")
    return build(cls, loaded, source=source)


def dump_config(cfg: TrainConfig) -> str:
    return dump(cfg)
