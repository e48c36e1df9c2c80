"""The grammar engine behind built-in slot kinds: Duckling (facebook/duckling, BSD-3-Clause),
through its native Python binding `pyduckling-native-phihos` (MIT; wheels for Linux x86_64,
CPython 3.8-3.14; about half a millisecond a call here).

Only this module talks to the engine: `entities` returns its readings of one text as plain
dicts, relative to a `Reference`. Everything that decides what a reading means for a slot is
in `nlu.resolve.kinds`.
"""

from __future__ import annotations

import calendar
import functools
import json
import logging
from typing import Any

from nlu.resolve.reference import Reference, zone_directory

log = logging.getLogger(__name__)

INSTALL = "pip install pyduckling-native-phihos (Linux x86_64)"


class EngineUnavailable(RuntimeError):
    """The engine cannot load on this machine; the message says what to install."""


@functools.cache
def _engine() -> tuple[Any, Any]:
    try:
        import duckling  # type: ignore[import-untyped]  # the wheel ships no type marker
    except ImportError as err:
        raise EngineUnavailable(
            f"slot kinds (time, date, duration, number, ordinal) need the Duckling engine: "
            f"{INSTALL}; without it their values are null ({err})"
        ) from None
    directory = zone_directory()
    if directory is None:
        raise EngineUnavailable(
            "slot kinds need a time zone database: install the tzdata package or the "
            "system's tzdata; without it their values are null"
        )
    return duckling, duckling.load_time_zones(str(directory))


def load() -> None:
    """Load the engine and its time zones now (about 0.2 s), not on the first request;
    EngineUnavailable says why it cannot."""
    _engine()
    entities("tomorrow at 7", ("time",), _WARM, latent=True)


@functools.cache
def unavailable() -> str | None:
    """Why the engine cannot load here, or None when it can (asked once per process)."""
    try:
        _engine()
    except EngineUnavailable as err:
        return str(err)
    return None


@functools.lru_cache(maxsize=256)
def _context(zone: str, wall: tuple[int, ...], offset_s: int, locale: str) -> Any:
    duckling, zones = _engine()
    if zone:
        timestamp = calendar.timegm(wall) - offset_s
    else:
        # A zone known only by its offset: the engine reckons in UTC on the wall clock's
        # numbers, so every value it returns carries the user's wall-clock time.
        zone, timestamp = "UTC", calendar.timegm(wall)
    language = duckling.default_locale_lang(duckling.parse_lang("EN"))
    chosen = duckling.parse_locale(locale.upper(), language) if locale else language
    return duckling.Context(duckling.parse_ref_time(zones, zone, timestamp), chosen)


@functools.lru_cache(maxsize=32)
def _dimensions(dims: tuple[str, ...]) -> Any:
    duckling, _ = _engine()
    return duckling.parse_dimensions(list(dims))


def entities(
    text: str,
    dims: tuple[str, ...],
    reference: Reference,
    *,
    latent: bool = False,
    locale: str = "",
) -> list[dict[str, Any]]:
    """The engine's readings of `text` in dimensions `dims` ("time", "duration", "number",
    "ordinal", "temperature"): dicts with `dim`, `start`, `end`, `latent` and `value`."""
    duckling, _ = _engine()
    moment = reference.moment
    offset = moment.utcoffset()
    assert offset is not None
    wall = moment.timetuple()[:6]
    context = _context(reference.zone, wall, int(offset.total_seconds()), locale)
    found = duckling.parse_text(text, context, _dimensions(dims), latent)
    return list(json.loads(found))


def _warm_reference() -> Reference:
    from datetime import UTC, datetime

    return Reference(datetime(2026, 1, 1, 12, tzinfo=UTC), "UTC")


_WARM = _warm_reference()
