"""The one example type used everywhere, and the label spaces a model is trained on.

Gold data is text plus character-offset spans; BIO tags are never stored, they are derived
(see `nlu.alignment`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class DataError(ValueError):
    """A data file or example is malformed; the message says where and what to fix."""


@dataclass(frozen=True, order=True)
class Span:
    start: int
    end: int
    slot: str

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "slot": self.slot}


@dataclass(frozen=True)
class Example:
    text: str
    skill: str
    intent: str
    slots: tuple[Span, ...] = ()

    def __post_init__(self) -> None:
        problem = _span_problem(self.text, self.slots)
        if problem:
            raise DataError(f"{problem} in example {self.text!r}")
        # Sorted spans make examples comparable and the BIO derivation order-independent.
        object.__setattr__(self, "slots", tuple(sorted(self.slots)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "skill": self.skill,
            "intent": self.intent,
            "slots": [s.to_dict() for s in self.slots],
        }

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> Example:
        return cls(
            text=row["text"],
            skill=row["skill"],
            intent=row["intent"],
            slots=tuple(Span(int(s["start"]), int(s["end"]), str(s["slot"])) for s in row["slots"]),
        )

    def value(self, span: Span) -> str:
        return self.text[span.start : span.end]


def _span_problem(text: str, spans: Iterable[Span]) -> str | None:
    if not text.strip():
        return "empty text"
    previous: Span | None = None
    for span in sorted(spans):
        if not span.slot:
            return f"span {span} has an empty slot name"
        if not 0 <= span.start < span.end <= len(text):
            return f"span {span.start}:{span.end} ({span.slot}) is outside the text"
        value = text[span.start : span.end]
        if value != value.strip():
            return f"span {span.start}:{span.end} ({span.slot}) starts or ends with whitespace"
        if previous is not None and span.start < previous.end:
            return f"spans {previous.slot} and {span.slot} overlap"
        previous = span
    return None


@dataclass
class SkillLabels:
    """The label space of one skill: its intents and slot types (BIO tags are derived)."""

    name: str
    intents: list[str]
    slot_types: list[str]
    description: str = ""
    # Which slot types each intent uses; informative (served by GET /skills), not enforced.
    intent_slots: dict[str, list[str]] = field(default_factory=dict)

    @property
    def tags(self) -> list[str]:
        """BIO tags, "O" first; the order is fixed by the sorted slot types."""
        tags = ["O"]
        for slot in self.slot_types:
            tags += [f"B-{slot}", f"I-{slot}"]
        return tags

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "intents": self.intents,
            "slot_types": self.slot_types,
            "intent_slots": self.intent_slots,
        }

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> SkillLabels:
        return cls(
            name=row["name"],
            intents=list(row["intents"]),
            slot_types=list(row["slot_types"]),
            description=row.get("description", ""),
            intent_slots={k: list(v) for k, v in row.get("intent_slots", {}).items()},
        )


def labels_from_examples(
    examples: Sequence[Example], descriptions: Mapping[str, SkillLabels] | None = None
) -> list[SkillLabels]:
    """Label spaces seen in (training) examples; skills sorted by name for a stable order.

    `descriptions` lets skill files contribute intents/slots declared but not yet seen, and
    descriptions, so the saved model advertises what the skill author wrote.
    """
    intents: dict[str, set[str]] = {}
    slots: dict[str, set[str]] = {}
    for ex in examples:
        intents.setdefault(ex.skill, set()).add(ex.intent)
        slots.setdefault(ex.skill, set()).update(s.slot for s in ex.slots)
    out = []
    for skill in sorted(intents):
        declared = (descriptions or {}).get(skill)
        out.append(
            SkillLabels(
                name=skill,
                intents=sorted(intents[skill]),
                slot_types=sorted(slots[skill]),
                description=declared.description if declared else "",
                intent_slots=declared.intent_slots if declared else {},
            )
        )
    return out
