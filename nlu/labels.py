"""Label spaces: what one skill can say (`SkillLabels`), and where every skill's labels sit in
the joint model's concatenated outputs (`LabelIndex`).

The index is the one place that maps names to ids (skills, each skill's intents and BIO tags),
for training labels, loss slicing, decoding and adding skills alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from nlu.resolve import SlotCatalog
from nlu.schema import Example


@dataclass
class SkillLabels:
    """The label space of one skill: its intents and slot names (BIO tags are derived)."""

    name: str
    intents: list[str]
    slots: list[str]
    description: str = ""
    # Which slots each intent uses; informative (served by GET /skills), not enforced.
    intent_slots: dict[str, list[str]] = field(default_factory=dict)
    # Slot value resolution (nlu.resolve), from the skill file: per slot, its listed forms
    # (normalised) -> value, and its built-in kind. Empty where no skill file declared any.
    slot_values: dict[str, dict[str, str]] = field(default_factory=dict)
    slot_kinds: dict[str, str] = field(default_factory=dict)

    @property
    def tags(self) -> list[str]:
        """BIO tags, "O" first; the order is fixed by the sorted slot names."""
        tags = ["O"]
        for slot in self.slots:
            tags += [f"B-{slot}", f"I-{slot}"]
        return tags

    def to_dict(self) -> dict[str, Any]:
        # "slot_types" is the key model folders have always used; kept for compatibility.
        return {
            "name": self.name,
            "description": self.description,
            "intents": self.intents,
            "slot_types": self.slots,
            "intent_slots": self.intent_slots,
            **({"slot_values": self.slot_values} if self.slot_values else {}),
            **({"slot_kinds": self.slot_kinds} if self.slot_kinds else {}),
        }

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> SkillLabels:
        return cls(
            name=row["name"],
            intents=list(row["intents"]),
            slots=list(row["slot_types"]),
            description=row.get("description", ""),
            intent_slots={k: list(v) for k, v in row.get("intent_slots", {}).items()},
            slot_values={k: dict(v) for k, v in row.get("slot_values", {}).items()},
            slot_kinds=dict(row.get("slot_kinds", {})),
        )


@dataclass(frozen=True)
class LabelIndex:
    """Where each skill's intents and tags sit in the concatenated logits, and name → id maps."""

    skills: tuple[SkillLabels, ...]

    @classmethod
    def of(cls, skills: Sequence[SkillLabels]) -> LabelIndex:
        return cls(tuple(skills))

    @cached_property
    def catalogs(self) -> dict[tuple[str, str], SlotCatalog]:
        """(skill, slot) -> what the slot resolves to, for slots that declare values or a kind."""
        return {
            (s.name, slot): SlotCatalog(s.slot_values.get(slot, {}), s.slot_kinds.get(slot))
            for s in self.skills
            for slot in s.slots
            if s.slot_values.get(slot) or s.slot_kinds.get(slot)
        }

    @cached_property
    def names(self) -> list[str]:
        return [s.name for s in self.skills]

    @cached_property
    def position(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    @cached_property
    def intent_ids(self) -> dict[str, dict[str, int]]:
        return {s.name: {name: i for i, name in enumerate(s.intents)} for s in self.skills}

    @cached_property
    def tag_ids(self) -> dict[str, dict[str, int]]:
        return {s.name: {tag: i for i, tag in enumerate(s.tags)} for s in self.skills}

    @cached_property
    def intent_slices(self) -> list[slice]:
        return _slices([len(s.intents) for s in self.skills])

    @cached_property
    def tag_slices(self) -> list[slice]:
        return _slices([len(s.tags) for s in self.skills])

    def skill(self, name: str) -> SkillLabels:
        return self.skills[self.position[name]]


def _slices(sizes: Sequence[int]) -> list[slice]:
    out, offset = [], 0
    for size in sizes:
        out.append(slice(offset, offset + size))
        offset += size
    return out


def labels_from_examples(
    examples: Sequence[Example], declared: Mapping[str, SkillLabels] | None = None
) -> list[SkillLabels]:
    """Label spaces seen in (training) examples; skills sorted by name for a stable order.

    `declared` lets skill files contribute descriptions and intents' slots, so the saved model
    advertises what the skill author wrote.
    """
    intents: dict[str, set[str]] = {}
    slots: dict[str, set[str]] = {}
    for ex in examples:
        if ex.skill is None or ex.intent is None:
            continue  # out of scope: no label space of its own
        intents.setdefault(ex.skill, set()).add(ex.intent)
        slots.setdefault(ex.skill, set()).update(s.slot for s in ex.slots)
    out = []
    for skill in sorted(intents):
        known = (declared or {}).get(skill)
        out.append(
            SkillLabels(
                name=skill,
                intents=sorted(intents[skill]),
                slots=sorted(slots[skill]),
                description=known.description if known else "",
                intent_slots=known.intent_slots if known else {},
                slot_values={k: v for k, v in known.slot_values.items() if k in slots[skill]}
                if known
                else {},
                slot_kinds={k: v for k, v in known.slot_kinds.items() if k in slots[skill]}
                if known
                else {},
            )
        )
    return out
