"""Built-in slot kinds: what the engine's readings of a span mean for a slot of that kind.

The rules (docs/guide/slot-values.md has them with examples):
- A reading counts only if it covers the whole span but for filler words ("at", "around",
  "the", ...; for numbers also units: "percent", "degrees"). "two and a half" is not "two".
- `number`: the number ("70", "2.5", "-5"); "X and a half" adds 0.5. `ordinal`: "3".
- `duration`: ISO 8601 in the unit said ("PT1H30M", "PT24H", "P2W"); no unit, no duration.
- `time`: the wall-clock time "HH:MM" in the request's zone, the first reading not yet past:
  a bare hour is the next one on a 12-hour clock ("7" at 15:00 is 19:00); a leading zero is a
  24-hour clock ("0700"). A day without a time of day ("friday") is refused. Intervals are
  "HH:MM/HH:MM" from the start to the stated end ("from 3 to 4 pm" -> "15:00/16:00",
  "tonight" -> "18:00/00:00"); open ones "17:00/" ("after 5 pm") and "/12:00" ("before noon").
- `date`: "YYYY-MM-DD", the next such day ("march 3" in December is next year's). A week,
  month or year, and intervals, are "first/last" with both days included ("this weekend" ->
  Saturday/Sunday; an interval that starts in the evening starts the next day). A bare time
  ("at 7") is not a date.
- Where readings disagree the span is `ambiguous`, with the candidates: "12/11" without a
  locale (US: 11 December; GB: 12 November), "next friday" said on a Wednesday.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

from nlu.resolve import engine
from nlu.resolve.reference import Reference
from nlu.resolve.resolution import KINDS, Resolution

log = logging.getLogger(__name__)

# Words a reading may leave out of a span: "at 7", "for 10 minutes", "around 1030".
FILLERS = frozenset(
    [
        "at",
        "on",
        "in",
        "for",
        "by",
        "around",
        "about",
        "approximately",
        "roughly",
        "exactly",
        "the",
        "a",
        "an",
        "of",
    ]
)
_UNITS = re.compile(
    r"\s*(%|per ?cent|percentage|degrees?|°)?\s*(celsius|centigrade|fahrenheit|c|f)?\s*$"
)
_HALF = re.compile(r"^(?P<base>.*\S)\s+and an? half$")
_HOURS = {
    w: i
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
        ]
    )
}
_AT_NIGHT = re.compile(r"\b(\d{1,2}|" + "|".join(_HOURS) + r")( o'?clock)? at night\b")
_NUMERIC_DATE = re.compile(r"\b\d{1,2}\s*[/.-]\s*\d{1,2}\b")
_RANGE = re.compile(r"\b(to|till|til|until|through|thru|and)\b|-|–")
_MERIDIEM = re.compile(
    r"(?<!\w)(am|pm|a\.m\.?|p\.m\.?|a m|p m|morning|afternoon|evening|night|noon)(?!\w)"
    r"|\d[ap](?!\w)"
)
_TWENTY_FOUR = re.compile(r"(?:at |@ )?(?P<h>[01]\d|2[0-3]):?(?P<m>[0-5]\d)(?: hours| hrs)?")
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_NEXT_WEEKDAY = re.compile(r"^(?:on )?next (" + "|".join(_WEEKDAYS) + r")$")
_ANCHORED = re.compile(
    r"^.+ (?P<relation>from|after|before) (?P<anchor>(?:next |this )?(?:"
    + "|".join(_WEEKDAYS)
    + r"))$"
)
_DATE_WORDS = re.compile(
    r"\b(now|today|tonight|tomorrow|yesterday|day|week|weekend|month|year|morning|afternoon|evening"
    r"|night|mon|tue|wed|thu|fri|sat|sun|jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
    r"|\d{1,2}(st|nd|rd|th)\b|\d{1,2}\s*[/.-]\s*\d{1,2}"
)
_SOON = re.compile(r"\b(sec|second|min|minute|hour|hr)s?\b.*|\b(1/2|1/4|3/4) ?h\b")
_GRAIN = {
    "second": timedelta(seconds=1),
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
}
_warned = False
Reading = tuple[str | None, str | None]  # a value (None: not one) and its grain


def interpret(kind: str, text: str, reference: Reference) -> Resolution:
    """`text` read as a value of `kind` relative to `reference` (cached: a voice assistant
    hears the same values again and again)."""
    if kind not in KINDS:
        raise ValueError(f"unknown slot kind {kind!r}; one of {', '.join(KINDS)}")
    problem = engine.unavailable()
    if problem:
        global _warned
        if not _warned:  # once: the server and `nlu serve` said it at start-up already
            _warned = True
            log.warning("%s", problem)
        return Resolution(None, "no_match")
    return _interpret(kind, " ".join(text.casefold().split()), reference)


@functools.lru_cache(maxsize=4096)  # about 2.5 MB when full
def _interpret(kind: str, text: str, reference: Reference) -> Resolution:
    if kind in ("number", "ordinal"):
        return _number(kind, text, reference)
    if kind == "duration":
        found = _covering(text, ("duration",), reference)
        return _choose([(_iso_duration(e["value"]), None) for e in found])
    if kind == "time":
        return _time(text, reference)
    return _date(text, reference)


def _covering(
    text: str,
    dims: tuple[str, ...],
    reference: Reference,
    *,
    latent: bool = False,
    locale: str | None = None,
) -> list[dict[str, Any]]:
    """The readings that cover all of `text` but filler words; non-latent ones first."""
    found = engine.entities(
        text, dims, reference, latent=latent, locale=locale or reference.locale or "en_US"
    )
    whole = [
        e
        for e in found
        if not set(re.findall(r"[\w%°']+", text[: e["start"]] + " " + text[e["end"] :])) - FILLERS
    ]
    return sorted(whole, key=lambda e: bool(e.get("latent")))


def _choose(readings: Sequence[Reading]) -> Resolution:
    """One value, `ambiguous` between distinct ones, or `no_match`."""
    distinct = [(v, g) for v, g in dict.fromkeys(readings) if v is not None]
    if not distinct:
        return Resolution(None, "no_match")
    if len({v for v, _ in distinct}) == 1:
        return Resolution(distinct[0][0], "parsed", distinct[0][1])
    return Resolution(None, "ambiguous", candidates=tuple(dict.fromkeys(v for v, _ in distinct)))


# -- numbers -----------------------------------------------------------------------------------


def _number(kind: str, text: str, reference: Reference) -> Resolution:
    if kind == "ordinal":
        return _choose(
            [(_plain(e["value"]["value"]), None) for e in _covering(text, ("ordinal",), reference)]
        )
    half = _HALF.match(text)
    if half:
        base = _number("number", half["base"], reference)
        if base.value is None or "." in base.value:
            return Resolution(None, "no_match")
        return Resolution(_plain(float(base.value) + 0.5), "parsed")
    bare = _UNITS.sub("", text) if _UNITS.search(text) else text
    readings = _covering(bare or text, ("number", "temperature"), reference)
    # Non-latent readings only: "seven thirty" is the number 730; its latent time is not.
    return _choose(
        [(_plain(e["value"].get("value")), None) for e in readings if not e.get("latent")]
    )


def _plain(value: Any) -> str | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _iso_duration(value: dict[str, Any]) -> str | None:
    """ISO 8601 in the unit the engine found: "24 hours" is PT24H, not P1D (a day is not
    always 24 hours); "a fortnight" P14D; "an hour and a half" PT1H30M."""
    unit, amount = value.get("unit"), value.get("value")
    if not isinstance(amount, int | float) or isinstance(amount, bool):
        return None
    if unit == "quarter":
        unit, amount = "month", amount * 3
    if unit in ("day", "week", "month", "year"):
        return f"P{_plain(amount)}{unit[0].upper()}"
    seconds = round(value.get("normalized", {}).get("value", 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    clock = "".join(f"{v}{u}" for v, u in ((hours, "H"), (minutes, "M"), (secs, "S")) if v)
    return "PT" + (clock or "0S")


# -- times and dates ---------------------------------------------------------------------------


def _wall(stamp: str, text: str, reference: Reference) -> datetime:
    """The user's wall-clock time of an engine value. The engine answers in the reference's
    zone, but across a daylight-saving change it labels values with the reference's offset:
    its clock times ("tomorrow at 3 am") are right as wall times, and its "in 6 hours" right
    as an instant, which the zone turns into the wall time."""
    moment = datetime.fromisoformat(stamp)
    if reference.zone and _SOON.search(text):
        moment = moment.astimezone(reference.moment.tzinfo)
    return moment.replace(tzinfo=None)


def _spoken(text: str) -> str:
    """Clock idioms the engine does not read, in forms it does: "9 at night" (6-11 at night
    are pm, 12 is midnight, 1-5 am), "twelve noon", "twelve midnight"."""

    def hour(match: re.Match[str]) -> str:
        word = match[1]
        h = int(word) if word.isdigit() else _HOURS[word]
        if h in (0, 12):
            return "midnight"
        return f"{h} pm" if 6 <= h <= 11 else f"{h} am" if h <= 5 else match[0]

    text = re.sub(r"\b(twelve|12) (noon|midnight)\b", r"\2", text)
    return _AT_NIGHT.sub(hour, text)


def _time(text: str, reference: Reference) -> Resolution:
    text = _spoken(text)
    clock = _TWENTY_FOUR.fullmatch(text)
    if clock and (clock["h"].startswith("0") or int(clock["h"]) >= 13):
        # "0700", "07:30", "19:00": a 24-hour clock, not the next 7 o'clock.
        return Resolution(f"{int(clock['h']):02d}:{clock['m']}", "parsed", "minute")
    firm: list[Reading] = []
    latent: list[Reading] = []
    for e in _covering(text, ("time",), reference, latent=True):
        v = e["value"]
        reading: Reading
        if v.get("type") == "value" and v.get("grain") in _GRAIN:
            reading = (f"{_next_time(text, v, reference):%H:%M}", v["grain"])
        elif v.get("type") == "interval":
            reading = _time_interval(text, v, reference)
        else:  # a day, week, month: no time of day
            continue
        (latent if e.get("latent") else firm).append(reading)
    # A latent reading (the hour in a bare "7") counts only where no firm one covers the span.
    return _choose(firm or latent)


def _next_time(text: str, value: dict[str, Any], reference: Reference) -> datetime:
    """The first of the engine's readings that is not yet past: it reads "nine" said at 21:40
    as 21:00, the hour still running; the next nine o'clock is 09:00."""
    now = reference.moment.replace(tzinfo=None)
    moments = [_wall(r["value"], text, reference) for r in [value, *value.get("values", [])]]
    return next((m for m in moments if m >= now), moments[0])


def _time_interval(text: str, value: dict[str, Any], reference: Reference) -> Reading:
    start, end = value.get("from"), value.get("to")
    ends = [x for x in (start, end) if x is not None]
    if not ends or any(x.get("grain") not in _GRAIN for x in ends):
        return None, None
    first = _wall(start["value"], text, reference) if start else None
    last = _wall(end["value"], text, reference) if end else None
    if first is not None and last is not None:
        if _RANGE.search(text):  # a stated range: the engine's end includes the last hour
            last -= _GRAIN[ends[-1]["grain"]]
        if not _MERIDIEM.search(_RANGE.split(text, 1)[0]):
            # "between 10 and 11 am": the start takes the end's half of the day when that
            # puts it before the end (the engine reads a bare "10" as the next 10 o'clock).
            half = 12 if last.hour >= 12 else 0
            anchored = last.replace(hour=first.hour % 12 + half, minute=first.minute)
            if anchored < last:
                first = anchored
        if not timedelta(0) < last - first <= timedelta(hours=24):
            return None, None
    form = f"{first:%H:%M}" if first else ""
    return form + "/" + (f"{last:%H:%M}" if last else ""), ends[0].get("grain")


def _date(text: str, reference: Reference) -> Resolution:
    anchored = _ANCHORED.match(text)
    if anchored:
        return _from_weekday(text, anchored, reference)
    found = _covering(text, ("time",), reference)
    result = _choose([_date_value(text, e["value"], reference) for e in found])
    if reference.locale is None and _NUMERIC_DATE.search(text) and result.status != "ambiguous":
        # No locale: "12/11" is 11 December in the US and 12 November in Britain.
        found = _covering(text, ("time",), reference, locale="en_GB")
        british = _choose([_date_value(text, e["value"], reference) for e in found])
        if british.value is None:
            return result
        if result.value is None:
            return british
        if british.value != result.value:
            return Resolution(None, "ambiguous", candidates=(result.value, british.value))
    return _next_weekday(text, reference, result)


def _from_weekday(text: str, match: re.Match[str], reference: Reference) -> Resolution:
    """ "a week from monday": the engine counts from the Monday gone by. Counted here from the
    coming one (the first of its readings after that day); "before" a weekday is refused."""
    anchor = _date(match["anchor"], reference)
    if match["relation"] == "before" or anchor.value is None or "/" in anchor.value:
        return Resolution(None, "no_match")
    days = []
    for e in _covering(text, ("time",), reference):
        v = e["value"]
        if v.get("type") == "value" and v.get("grain") == "day":
            days += [_wall(r["value"], text, reference).date() for r in [v, *v.get("values", [])]]
    start = date.fromisoformat(anchor.value)
    later = sorted(d for d in days if d > start)
    return (
        Resolution(later[0].isoformat(), "parsed", "day") if later else Resolution(None, "no_match")
    )


def _next_weekday(text: str, reference: Reference, result: Resolution) -> Resolution:
    """ "next wednesday" said on a Tuesday: tomorrow, or the Wednesday of next week? Both are
    in use (Duckling's own corpus and its current rules disagree), so a weekday later in this
    week is ambiguous; from Sunday on, the next one is next week's either way."""
    match = _NEXT_WEEKDAY.match(text)
    if not match or result.value is None:
        return result
    today = reference.moment.date()
    coming = today + timedelta(days=(_WEEKDAYS.index(match[1]) - today.weekday() - 1) % 7 + 1)
    if coming.isocalendar()[:2] != today.isocalendar()[:2] or coming.isoformat() == result.value:
        return result
    return Resolution(None, "ambiguous", candidates=(result.value, coming.isoformat()))


def _date_value(text: str, value: dict[str, Any], reference: Reference) -> Reading:
    if value.get("type") == "interval":
        start, end = value.get("from"), value.get("to")
        first = _wall(start["value"], text, reference) if start else None
        # The engine's end is exclusive: the last day is the one before it ends.
        last = _wall(end["value"], text, reference) - timedelta(microseconds=1) if end else None
        if first and last and last.date() > first.date() and first.hour >= 12:
            first = datetime.combine(first.date() + timedelta(days=1), datetime.min.time())
        grain = (start or end or {}).get("grain")
        days = _days(first.date() if first else None, last.date() if last else None)
        return days, "day" if grain in _GRAIN else grain
    grain = value.get("grain")
    if grain in _GRAIN:  # "tomorrow at 7" has a date; "at 7" has none
        if not _DATE_WORDS.search(text):
            return None, None
        grain = "day"
    # The engine reads "november 12" said on 26 November as this year's, gone two weeks ago;
    # its later readings (`values`) hold next year's: a date that has passed resolves forward.
    # "yesterday" or "march 3 2015" have no later reading and stay as they are.
    today = reference.moment.date()
    periods = []
    for reading in [value, *value.get("values", [])]:
        day = _wall(reading["value"], text, reference).date()
        periods.append((day, _last_day(day, grain)))
    start, end = next((p for p in periods if p[1] >= today), periods[0])
    return _days(start, end), grain


def _last_day(first: date, grain: str | None) -> date:
    if grain == "week":
        return first + timedelta(days=6)
    months = {"month": 1, "quarter": 3, "year": 12}.get(grain or "")
    if not months:
        return first
    month = first.month - 1 + months
    year, month = first.year + month // 12, month % 12 + 1
    return date(year, month, 1) - timedelta(days=1)


def _days(first: date | None, last: date | None) -> str:
    if first is not None and first == last:
        return first.isoformat()
    return (first.isoformat() if first else "") + "/" + (last.isoformat() if last else "")
