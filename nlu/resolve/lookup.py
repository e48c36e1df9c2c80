"""A slot span to the value an application acts on, as the Alexa Skills Kit's entity
resolution does. A skill's slot type may list values with synonyms (`skill.yaml`) and may
declare a built-in kind (`nlu.resolve.kinds`). For one span, in this order:

1. `exact` / `synonym`: the span (case and spacing ignored) is a listed value or one of its
   synonyms: the listed value; for a built-in kind, read as that kind where it reads as one
   ("noon" -> "12:00"), else as listed ("weekdays").
2. `parsed` / `ambiguous`: the slot type has a built-in kind and the engine reads the span as
   one (`nlu.resolve.kinds`), or reads it in several ways (`candidates`, no value).
3. `fuzzy`: the closest listed form by `rapidfuzz` (`fuzz.ratio` >= 85 of 100: misspellings,
   "livng room"; not partial matches such as "steak" for "tea"): its value.
4. `no_match`: the slot type has values or a kind, and none of the above fits (value null).
A slot type with neither (free text, e.g. a benchmark's) is not resolved: `resolution` null.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from nlu.resolve.kinds import interpret
from nlu.resolve.reference import Reference, make_reference
from nlu.resolve.resolution import Resolution, Status

FUZZY_CUTOFF = 85.0


@dataclass(frozen=True)
class SlotCatalog:
    """What one slot can resolve to: listed forms (case-folded form -> value) and a kind."""

    values: Mapping[str, str]
    kind: str | None = None

    @functools.cached_property
    def forms(self) -> list[str]:
        return list(self.values)


def normalise(text: str) -> str:
    return " ".join(text.casefold().split())


def resolve(
    text: str, catalog: SlotCatalog, *, reference: Reference | datetime | None = None
) -> Resolution:
    """The value of span `text` in a slot of `catalog`; dates and times relative to
    `reference` (a datetime: as `make_reference` takes it; default: now, this machine's zone)."""
    if catalog.kind and not isinstance(reference, Reference):
        reference = make_reference(reference)

    def listed_value(value: str, status: Status) -> Resolution:
        if catalog.kind:
            assert isinstance(reference, Reference)
            read = interpret(catalog.kind, value, reference)
            if read.value is not None:
                return Resolution(read.value, status, read.grain)
        return Resolution(value, status)

    key = normalise(text)
    listed = catalog.values.get(key)
    if listed is not None:
        return listed_value(listed, "exact" if normalise(listed) == key else "synonym")
    if catalog.kind:
        assert isinstance(reference, Reference)
        read = interpret(catalog.kind, text, reference)
        if read.status != "no_match":
            return read
    if catalog.values:
        from rapidfuzz import fuzz, process

        best = process.extractOne(key, catalog.forms, scorer=fuzz.ratio, score_cutoff=FUZZY_CUTOFF)
        if best is not None:
            return listed_value(catalog.values[best[0]], "fuzzy")
    return Resolution(None, "no_match")


def parse_kind(kind: str, text: str, reference: Reference | datetime | None = None) -> str | None:
    """`text` read as a value of `kind`, or None (no value, or ambiguous)."""
    if not isinstance(reference, Reference):
        reference = make_reference(reference)
    return interpret(kind, text, reference).value
