"""The distillation config: `teachers:`, `kd:` (the loss's keys) and the student's training keys."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from nlu._aliases import old_loaders
from nlu.config import DataConfig, TrainConfig
from nlu.distill.answers import TeacherConfig

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

    def problems(self) -> list[str]:
        if 0.0 <= self.alpha <= 1.0 and self.temperature > 0 and 0.0 <= self.min_claim <= 1.0:
            return []
        return [
            f"alpha and min_claim are in [0, 1] and temperature > 0 (got alpha={self.alpha}, "
            f"temperature={self.temperature}, min_claim={self.min_claim})"
        ]


@dataclass
class DistillConfig:
    teachers: list[TeacherConfig]
    kd: KDConfig = field(default_factory=KDConfig)
    # The student: encoder, optimiser, multi-task, output ... as for `nlu train`. Its `data`
    # is optional gold (labelled) data, `dev_data` labelled dev data for model selection (else
    # a `dev_fraction` share of the teacher-labelled texts).
    student: TrainConfig = field(default_factory=lambda: TrainConfig(data=DataConfig(data=[])))

    def problems(self) -> list[str]:
        if not self.teachers:
            return ["`teachers:` must list at least one teacher"]
        names = [t.name for t in self.teachers]
        if len(set(names)) != len(names):
            return [f"teacher names must be unique, got {names}"]
        if self.student.finetune.init_from:
            return ["distillation trains a new student; init_from is not supported here"]
        return []


# nlu 0.1's loaders of this config (nlu.config.build, load, dump with DistillConfig now).
__getattr__ = old_loaders(
    __name__,
    "distill",
    DistillConfig,
    groups={"KD_KEYS": KDConfig, "TEACHER_KEYS": TeacherConfig},
    rows={"teacher_config": TeacherConfig},
)
