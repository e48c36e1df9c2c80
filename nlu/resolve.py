"""Slot value resolution: from the span a model found to the value an application acts on, as
the Alexa Skills Kit's entity resolution does.

A skill's slot type may list values with synonyms (`skill.yaml`) and may declare a built-in
kind (`number`, `duration`, `time`, `date`). The model folder keeps both (`SkillLabels`), so
the server resolves without the skill files. For one span, in this order:

1. `exact` / `synonym`: the span (case and spacing ignored) is a listed value or one of its
   synonyms: the listed value. For a built-in kind, that value is then normalised as in 2.
2. `parsed`: the slot type has a built-in kind and the span parses as one: numbers by
   `text2num` (spoken numbers, "seventy" -> "70"), durations as ISO 8601 ("PT5M"), dates
   ("2026-11-27") and times ("06:30") by `dateparser`, relative to the request's reference time.
3. `fuzzy`: the closest listed form by `rapidfuzz` (`fuzz.ratio` >= 85 of 100: misspellings
   and small variations, "livng room"; not partial matches such as "steak" for "tea"): its
   value.
4. `no_match`: the slot type has values or a kind, and none of the above fits (`value` null).
A slot type with neither (free text, e.g. a benchmark's) is not resolved: `resolution` null.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

KINDS = ("number", "duration", "time", "date")
Kind = Literal["number", "duration", "time", "date"]
Status = Literal["exact", "synonym", "parsed", "fuzzy", "no_match"]
FUZZY_CUTOFF = 85.0


@dataclass(frozen=True, slots=True)
class Resolution:
    value: str | None
    status: Status


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


def resolve(text: str, catalog: SlotCatalog, *, reference: datetime | None = None) -> Resolution:
    def listed_value(value: str) -> str:
        # A listed value of a built-in kind is normalised like a parsed one ("noon" -> "12:00").
        return (parse_kind(catalog.kind, value, reference) if catalog.kind else None) or value

    key = normalise(text)
    listed = catalog.values.get(key)
    if listed is not None:
        status: Status = "exact" if normalise(listed) == key else "synonym"
        return Resolution(listed_value(listed), status)
    if catalog.kind:
        parsed = parse_kind(catalog.kind, text, reference)
        if parsed is not None:
            return Resolution(parsed, "parsed")
    if catalog.values:
        from rapidfuzz import fuzz, process

        best = process.extractOne(key, catalog.forms, scorer=fuzz.ratio, score_cutoff=FUZZY_CUTOFF)
        if best is not None:
            return Resolution(listed_value(catalog.values[best[0]]), "fuzzy")
    return Resolution(None, "no_match")


# -- built-in kinds --------------------------------------------------------------------------------


def parse_kind(kind: str, text: str, reference: datetime | None) -> str | None:
    """`text` normalised as a built-in kind, or None. Cached: dateparser costs milliseconds a
    call (more than the int8 forward pass), and a voice assistant hears the same values ("7
    am", "tomorrow") again and again. Dates and times are relative to `reference` (default: now),
    to the minute."""
    if kind in ("time", "date"):
        moment = (reference or datetime.now()).replace(second=0, microsecond=0, tzinfo=None)
        return _parse_kind(kind, text, moment)
    return _parse_kind(kind, text, None)


def warm_up() -> None:
    """dateparser builds its language data on first use (about half a second): do it at load."""
    parse_kind("date", "tomorrow at noon", None)


@functools.lru_cache(maxsize=8192)
def _parse_kind(kind: str, text: str, reference: datetime | None) -> str | None:
    if kind == "number":
        return parse_number(text)
    if kind == "duration":
        return parse_duration(text)
    if kind == "time":
        clock = _clock(text)
        # A date alone ("friday") has no time of day; dateparser would answer midnight.
        if not re.search(r"\d|noon|midnight|morning|afternoon|evening|night", clock):
            return None
        moment = parse_moment(clock, reference)
        return None if moment is None else moment.strftime("%H:%M")
    if kind == "date":
        moment = parse_moment(text, reference)
        return None if moment is None else moment.date().isoformat()
    raise ValueError(f"unknown slot kind {kind!r}; one of {', '.join(KINDS)}")


def _clock(text: str) -> str:
    """English clock idioms dateparser does not read, as h:mm ("quarter to seven" -> "6:45")."""
    t = _digits(text.casefold())
    t = re.sub(r"\b(\d{1,2}) o'?clock\b", r"\1:00", t)
    t = re.sub(r"\bhalf past (\d{1,2})\b", r"\1:30", t)
    t = re.sub(r"\bquarter past (\d{1,2})\b", r"\1:15", t)
    t = re.sub(r"\bquarter to (\d{1,2})\b", lambda m: f"{(int(m[1]) - 2) % 12 + 1}:45", t)
    return re.sub(r"^(\d{1,2}) (\d{2})\b", r"\1:\2", t)  # "nine fifteen" -> "9 15" -> 9:15


_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)?")


def _digits(text: str) -> str:
    from text_to_num import alpha2digit

    # "a hundred" is not a number to text2num's English rules; "one hundred" is.
    text = re.sub(r"\ban?\b(?= (hundred|thousand|million))", "one", text)
    return str(alpha2digit(text, "en", threshold=0))


def parse_number(text: str) -> str | None:
    """The one number in `text` ("seventy percent" -> "70", "2.5" -> "2.5"), or None."""
    found = _NUMBER.findall(_digits(text.casefold()))
    if len(found) != 1:
        return None
    value = float(found[0].replace(",", "."))
    return str(int(value)) if value.is_integer() else repr(value)


_SECONDS = {"sec": 1, "min": 60, "hou": 3600, "hr": 3600, "day": 86400, "wee": 604800}
_DURATION = re.compile(
    r"(?P<n>\d+(?:\.\d+)?|half an?|an?)\s*(?P<unit>seconds?|secs?|minutes?|mins?|hours?|hrs?"
    r"|days?|weeks?)\b"
)


def parse_duration(text: str) -> str | None:
    """ISO 8601 ("10 minutes" -> "PT10M", "an hour and a half" -> "PT1H30M"), or None."""
    spoken = re.sub(r"(\d+) and a half\b", r"\1.5", _digits(text.casefold()))
    total, unit = 0.0, 0
    for m in _DURATION.finditer(spoken):
        n = m.group("n")
        amount = 0.5 if n.startswith("half") else 1.0 if n in ("a", "an") else float(n)
        unit = _SECONDS[m.group("unit")[:3] if m.group("unit")[:2] != "hr" else "hr"]
        total += amount * unit
    if not unit:
        return None
    if re.search(r"\band a half\b", spoken):  # "an hour and a half": half of the last unit
        total += 0.5 * unit
    return _iso_duration(round(total))


def _iso_duration(total: int) -> str:
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    date = f"{days}D" if days else ""
    time = "".join(f"{v}{u}" for v, u in ((hours, "H"), (minutes, "M"), (secs, "S")) if v)
    return "P" + date + ("T" + time if time else "") if (date or time) else "PT0S"


def parse_moment(text: str, reference: datetime | None) -> datetime | None:
    import dateparser

    settings: dict[str, Any] = {"PREFER_DATES_FROM": "future", "RETURN_AS_TIMEZONE_AWARE": False}
    if reference is not None:
        settings["RELATIVE_BASE"] = reference.replace(tzinfo=None)
    for candidate in (text, _digits(text.casefold())):
        moment = dateparser.parse(candidate, languages=["en"], settings=settings)
        if moment is not None:
            return moment
    return None
