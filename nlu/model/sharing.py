"""Soft parameter sharing: cross-stitch (Misra et al., CVPR 2016) and sluice (Ruder et al., AAAI
2019) columns beside the default hard sharing.

Hard sharing is one encoder under every head. Soft sharing gives each *column* its own copy of
the pretrained encoder; after every layer a learned mixing matrix lets each column read from
the others. Columns are either one per task type (`sharing_groups: [tasks]`: router and intents
read the "sentence" column, slots the "tokens" column) or one per group of skills
(`sharing_groups: [alarm+timer, music+radio, ...]`: a skill's intent and slot heads read its
group's column; the router, which must tell every skill apart, reads the mean of all columns).

Cross-stitch mixes whole columns. Sluice splits each layer's output into `subspaces` equal
slices, mixes (column, subspace) pairs, learns for each column a weighted sum of its layers'
outputs (the task's output), and adds an orthogonality penalty between a column's subspaces
(the squared Frobenius norm of their product, per token) so they learn different things.
Mixing weights start near identity (0.9 on the own column's own subspace, the rest spread
evenly), as in the papers, and learn at their own rate (`mixing_learning_rate`).

This module is the configuration (torch-free: the model folder reads it); the columns are
`nlu.model.columns.SoftSharedEncoder`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TASKS = "tasks"  # the sharing_groups value for one column per task type
SENTENCE, TOKENS = 0, 1  # the task-type columns


class SharingError(ValueError):
    """A sharing configuration that does not fit the model's skills or encoder."""


@dataclass(frozen=True)
class Sharing:
    """How the encoder is shared (saved in nlu.json; absent for hard sharing)."""

    mode: str  # "cross_stitch" or "sluice"
    # Skills per column; empty: one column per task type (sentence, tokens).
    groups: list[list[str]] = field(default_factory=list)
    subspaces: int = 1

    @property
    def by_task(self) -> bool:
        return not self.groups

    @property
    def columns(self) -> int:
        return 2 if self.by_task else len(self.groups)

    def sentence_column(self, skill: str) -> int:
        """The column a skill's intent head reads."""
        return SENTENCE if self.by_task else self._group_of(skill)

    def token_column(self, skill: str) -> int:
        """The column a skill's slot head reads."""
        return TOKENS if self.by_task else self._group_of(skill)

    def _group_of(self, skill: str) -> int:
        for k, group in enumerate(self.groups):
            if skill in group:
                return k
        raise SharingError(f"skill {skill!r} is in no sharing group")

    def column_name(self, k: int) -> str:
        return ("sentence", "tokens")[k] if self.by_task else "+".join(self.groups[k])

    def unit_names(self) -> list[str]:
        """The mixed units in mixing-matrix order: columns, each split into its subspaces."""
        s = self.subspaces
        return [
            self.column_name(k) + (f"/{j + 1}" if s > 1 else "")
            for k in range(self.columns)
            for j in range(s)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "groups": self.groups, "subspaces": self.subspaces}

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> Sharing:
        return cls(
            mode=str(row["mode"]),
            groups=[list(g) for g in row.get("groups", [])],
            subspaces=int(row.get("subspaces", 1)),
        )


def sharing_for(
    mode: str, groups: Sequence[str], subspaces: int, skills: Sequence[str]
) -> Sharing | None:
    """The sharing of a new model from config keys; None for hard sharing. Every skill must be
    in exactly one group."""
    if mode == "hard":
        return None
    if mode not in ("cross_stitch", "sluice"):
        raise SharingError(f"sharing={mode!r}; one of hard, cross_stitch, sluice")
    if mode == "sluice" and subspaces < 1:
        raise SharingError(f"subspaces={subspaces}: a sluice layer needs at least 1 subspace")
    parsed: list[list[str]] = []
    if list(groups) != [TASKS]:
        parsed = [[s for s in g.split("+") if s] for g in groups]
        seen: dict[str, int] = {}
        for k, group in enumerate(parsed):
            for skill in group:
                if skill not in skills:
                    raise SharingError(
                        f"sharing_groups: {skill!r} is not a skill of this model (skills: "
                        f"{', '.join(skills)})"
                    )
                if skill in seen:
                    raise SharingError(
                        f"sharing_groups: {skill!r} is in groups {seen[skill] + 1} and {k + 1}; "
                        "put each skill in one group"
                    )
                seen[skill] = k
        missing = [s for s in skills if s not in seen]
        if missing:
            raise SharingError(
                f"sharing_groups: {', '.join(missing)} in no group; list every skill once "
                f"(groups are skill+skill+..., or [{TASKS}] for one column per task type)"
            )
        if len(parsed) < 2:
            raise SharingError(
                f"sharing_groups has {len(parsed)} group; soft sharing needs at least 2 columns "
                f"(or [{TASKS}])"
            )
    return Sharing(mode=mode, groups=parsed, subspaces=subspaces if mode == "sluice" else 1)


# Where the learned weights are in model.safetensors (the encoder's names lose "encoder.").
MIXING_KEY, LAYER_MIXING_KEY = "mixing", "layer_mixing"


def mixing_report(sharing: Sharing, weights_file: Path) -> dict[str, Any]:
    """The learned sharing weights of a saved model, for people: per layer the mixing matrix
    (rows: the unit that reads; columns: the unit read from) and, for sluice, each column's
    weights over its embeddings and layers."""
    from safetensors import safe_open

    with safe_open(str(weights_file), framework="np") as handle:
        keys = set(handle.keys())
        mixing = handle.get_tensor(MIXING_KEY)
        layer_mixing = handle.get_tensor(LAYER_MIXING_KEY) if LAYER_MIXING_KEY in keys else None
    report: dict[str, Any] = {
        "mode": sharing.mode,
        "units": sharing.unit_names(),
        "mixing": [[[round(float(v), 4) for v in row] for row in layer] for layer in mixing],
    }
    if layer_mixing is not None:
        report["layer_mixing"] = {
            sharing.column_name(k): [round(float(v), 4) for v in layer_mixing[k]]
            for k in range(sharing.columns)
        }
    return report
