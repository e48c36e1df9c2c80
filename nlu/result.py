"""The one parse result: `decode` returns it, evaluation reads it, the server serialises it (and
derives its OpenAPI schema from these classes), `nlu predict` prints it.

Plain frozen dataclasses: cheap to build on the serving hot path, serialised natively by
orjson, and described for OpenAPI by pydantic from the annotations below.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field


@dataclass(frozen=True, slots=True)
class Scored:
    name: str
    confidence: float


@dataclass(frozen=True, slots=True)
class SkillChoice:
    name: str
    confidence: Annotated[float, Field(description="The router's probability of this skill.")]
    forced: Annotated[bool, Field(description="The request forced this skill instead of routing.")]


@dataclass(frozen=True, slots=True)
class SlotValue:
    slot: str
    value: Annotated[str, Field(description="text[start:end]")]
    start: Annotated[int, Field(description="Character offset into `text` (inclusive).")]
    end: Annotated[int, Field(description="Character offset into `text` (exclusive).")]
    confidence: float


@dataclass(frozen=True, slots=True)
class ParseResult:
    text: str
    skill: SkillChoice
    intent: Scored
    intents: Annotated[list[Scored], Field(description="Top-k intents of the skill, best first.")]
    slots: list[SlotValue]
    truncated: Annotated[
        bool, Field(description="The text was longer than the model's max_length.")
    ]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> ParseResult:
        """The inverse of `to_dict` (and of the server's JSON answer)."""
        return cls(
            text=row["text"],
            skill=SkillChoice(**row["skill"]),
            intent=Scored(**row["intent"]),
            intents=[Scored(**i) for i in row["intents"]],
            slots=[SlotValue(**s) for s in row["slots"]],
            truncated=bool(row["truncated"]),
        )
