"""What resolving one slot span gives: the value an application acts on, and how it was found."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

KINDS = ("number", "ordinal", "duration", "time", "date")
Kind = Literal["number", "ordinal", "duration", "time", "date"]
Status = Literal["exact", "synonym", "parsed", "fuzzy", "ambiguous", "no_match"]


@dataclass(frozen=True, slots=True)
class Resolution:
    """`value` is None unless `status` is exact, synonym, parsed or fuzzy. `grain`: the
    precision the engine found for a time or date ("minute", "hour", "day", "week", ...).
    `candidates`: the readings an `ambiguous` span has, most likely first."""

    value: str | None
    status: Status
    grain: str | None = None
    candidates: tuple[str, ...] = ()
