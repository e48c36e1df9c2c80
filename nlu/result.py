"""The one parse result: `decode` returns it, evaluation reads it, the server serialises it (and
derives its OpenAPI schema from these classes), `nlu predict` prints it.

Plain frozen dataclasses: cheap to build on the serving hot path, serialised natively by
orjson, and described for OpenAPI by pydantic from the annotations below.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field


@dataclass(frozen=True)
class ParseOptions:
    """Per-text parse options (the server batches texts of requests with different ones)."""

    skill: str | None = None  # force this skill (then never out of scope)
    top_k: int = 5  # intents and skills to rank
    oos_threshold: float | None = None  # None: the model's own threshold
    # "Now" for relative dates and times in slot values ("tomorrow"); None: the current time.
    # Naive: a wall time in `timezone`; aware: its offset is the zone unless `timezone` is set.
    reference_time: datetime | None = None
    # IANA name ("Europe/Berlin"); None: reference_time's offset, else this machine's zone.
    timezone: str | None = None
    locale: str | None = None  # "en_GB" reads "12/11" as 12 November; None: ambiguous


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
    resolved: Annotated[
        str | None,
        Field(
            description="The value an application acts on: the skill's listed value for a "
            'value or synonym (or a near miss), or a built-in kind\'s value (number "70", '
            'ordinal "3", duration "PT5M", date "2026-11-27" or "2026-12-05/2026-12-06", time '
            '"06:30" or "17:00/18:00"), dates and times in the request\'s time zone; null when '
            "nothing fits or the span is ambiguous (docs/guide/slot-values.md)."
        ),
    ] = None
    resolution: Annotated[
        Literal["exact", "synonym", "parsed", "fuzzy", "ambiguous", "no_match"] | None,
        Field(
            description="How `resolved` was found; `ambiguous`: the span reads as several "
            "values (`candidates`), `no_match`: as none; null for a free-text slot (no listed "
            "values, no built-in kind)."
        ),
    ] = None
    grain: Annotated[
        str | None,
        Field(
            description='The precision of a date or time value: "second", "minute", "hour", '
            '"day", "week", "month", "quarter" or "year"; null for other values.'
        ),
    ] = None
    candidates: Annotated[
        list[str] | None,
        Field(description="For an `ambiguous` span: its readings, most likely first."),
    ] = None


@dataclass(frozen=True, slots=True)
class ParseResult:
    """What one text means. When the text is out of scope (`in_scope` false), `skill` and
    `intent` are null and `slots` empty; `skills` and `intents` still rank the candidates."""

    text: str
    skill: Annotated[
        SkillChoice | None, Field(description="The chosen skill; null when out of scope.")
    ]
    intent: Annotated[Scored | None, Field(description="The intent; null when out of scope.")]
    intents: Annotated[
        list[Scored], Field(description="Top-k intents of the (best) skill, best first.")
    ]
    slots: list[SlotValue]
    truncated: Annotated[
        bool, Field(description="The text was longer than the model's max_length.")
    ]
    in_scope: Annotated[
        bool,
        Field(
            description="False: the text is like nothing the model was trained on (its "
            "out-of-scope score is above the threshold); a forced skill is always in scope."
        ),
    ] = True
    oos_score: Annotated[
        float | None,
        Field(
            description="Out-of-scope score (higher: less like the training data); null when "
            "the model has no out-of-scope detector."
        ),
    ] = None
    skills: Annotated[
        list[Scored], Field(description="Top-k skills by router probability, best first.")
    ] = field(default_factory=list)
    hypothesis: Annotated[
        int | None,
        Field(
            description="For an ASR n-best request: the index of the hypothesis whose parse "
            "this is (`text` and the slot offsets are that hypothesis'); null otherwise."
        ),
    ] = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> ParseResult:
        """The inverse of `to_dict` (and of the server's JSON answer)."""
        return cls(
            text=row["text"],
            skill=SkillChoice(**row["skill"]) if row.get("skill") is not None else None,
            intent=Scored(**row["intent"]) if row.get("intent") is not None else None,
            intents=[Scored(**i) for i in row["intents"]],
            slots=[SlotValue(**s) for s in row["slots"]],
            truncated=bool(row["truncated"]),
            in_scope=bool(row.get("in_scope", True)),
            oos_score=row.get("oos_score"),
            skills=[Scored(**s) for s in row.get("skills", [])],
            hypothesis=row.get("hypothesis"),
        )
