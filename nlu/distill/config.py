"""The distillation config: `teachers:`, `kd:` (the loss's keys) and the student's training keys."""

from __future__ import annotations

import dataclasses
import logging
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from nlu.config import ConfigError, TrainConfig, make_config, read_values
from nlu.distill.answers import TeacherConfig

if typing.TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

Unclaimed = Literal["negative", "drop"]


@dataclass
class KDConfig:
    # Shared transfer texts asked of every teacher: text files (one per line), JSONL or any
    # data source (its train split; labels ignored).
    transfer: list[str] = field(default_factory=list)
    # Weight of the soft (teacher distribution) loss; the hard labels (gold where given, else
    # the teachers' top answers) take 1 - alpha.
    alpha: float = 0.5
    # Softens teacher and student distributions alike (Hinton et al. 2015); the soft loss is
    # scaled by temperature^2 so its gradients keep their size.
    temperature: float = 2.0
    # A shared text whose best claim is below this is unclaimed: an out-of-scope example
    # ("negative") or left out ("drop", counted in the log).
    min_claim: float = 0.5
    # What an unclaimed shared text becomes: "negative" (an out-of-scope example) or "drop".
    unclaimed: Unclaimed = "negative"
    # Where teachers' answers are cached (a restart never asks a teacher twice).
    cache_dir: str = "runs/teacher_cache"


@dataclass
class DistillConfig:
    teachers: list[TeacherConfig]
    kd: KDConfig = field(default_factory=KDConfig)
    # The student: encoder, optimiser, multi-task, output ... as for `nlu train`. Its `data`
    # is optional gold (labelled) data, `dev_data` labelled dev data for model selection (else
    # a `dev_fraction` share of the teacher-labelled texts).
    student: TrainConfig = field(default_factory=TrainConfig)


KD_KEYS = {f.name for f in dataclasses.fields(KDConfig)}
TEACHER_KEYS = {f.name for f in dataclasses.fields(TeacherConfig)}


def _kd_value(key: str, value: Any) -> Any:
    hint = typing.get_type_hints(KDConfig)[key]
    if hint == list[str]:
        return [v for v in value.split(",") if v] if isinstance(value, str) else list(value)
    if typing.get_origin(hint) is Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{key}={value!r}; one of {', '.join(typing.get_args(hint))}")
        return value
    try:
        return hint(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be {hint.__name__}, got {value!r}") from None


def teacher_config(row: Any, *, source: str) -> TeacherConfig:
    if not isinstance(row, Mapping) or "name" not in row or "kind" not in row:
        raise ConfigError(f"{source}: each teacher is a mapping with at least name and kind")
    unknown = sorted(set(row) - TEACHER_KEYS)
    if unknown:
        raise ConfigError(
            f"{source}: teacher {row['name']}: unknown key {unknown[0]!r}; known: "
            f"{', '.join(sorted(TEACHER_KEYS))}"
        )
    values = dict(row)
    for key in ("texts",):
        if isinstance(values.get(key), str):
            values[key] = [values[key]]
    return TeacherConfig(**values)


def make_distill_config(values: Mapping[str, Any], *, source: str) -> DistillConfig:
    values = dict(values)
    rows = values.pop("teachers", None)
    if not isinstance(rows, list) or not rows:
        raise ConfigError(f"{source}: `teachers:` must list at least one teacher")
    teachers = [teacher_config(r, source=source) for r in rows]
    names = [t.name for t in teachers]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: teacher names must be unique, got {names}")
    kd_values = dict(values.pop("kd", None) or {})
    for key in list(values):
        if key in KD_KEYS:
            kd_values[key] = values.pop(key)
        elif key.startswith("kd."):
            kd_values[key[3:]] = values.pop(key)
    unknown = sorted(set(kd_values) - KD_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown key kd.{unknown[0]}; known: {sorted(KD_KEYS)}")
    kd = KDConfig(**{k: _kd_value(k, v) for k, v in kd_values.items()})
    if not 0.0 <= kd.alpha <= 1.0 or kd.temperature <= 0 or not 0.0 <= kd.min_claim <= 1.0:
        raise ConfigError(
            f"{source}: alpha and min_claim are in [0, 1] and temperature > 0 (got alpha="
            f"{kd.alpha}, temperature={kd.temperature}, min_claim={kd.min_claim})"
        )
    values.setdefault("data", [])  # gold data is optional here
    student = make_config(values, source=source)
    return DistillConfig(teachers=teachers, kd=kd, student=student)


def load_distill_config(path: str | Path, overrides: Sequence[str] = ()) -> DistillConfig:
    return make_distill_config(read_values(path, overrides), source=str(path))


def dump_distill_config(cfg: DistillConfig) -> str:
    # Student keys at the top level, as `nlu train` saves them: the model folder's config
    # reads back with nlu.config.parse_config (which skips `teachers` and `kd`).
    student = dataclasses.asdict(cfg.student)
    return yaml.safe_dump(
        {
            **student,
            "kd": dataclasses.asdict(cfg.kd),
            "teachers": [dataclasses.asdict(t) for t in cfg.teachers],
        },
        sort_keys=False,
    )
