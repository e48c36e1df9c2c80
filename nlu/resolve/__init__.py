"""Slot value resolution: from the span a model found to the value an application acts on.

Rooms: `lookup` (listed values, synonyms, near misses: the entry point `resolve`), `kinds`
(built-in kinds read by the grammar engine, and the rules that make a reading a value),
`engine` (the engine itself, Duckling), `reference` ("now" and the user's time zone).
"""

from nlu.resolve.engine import EngineUnavailable, load, unavailable
from nlu.resolve.kinds import interpret
from nlu.resolve.lookup import FUZZY_CUTOFF, SlotCatalog, normalise, parse_kind, resolve
from nlu.resolve.reference import LOCALES, InvalidReference, Reference, make_reference, zone_of
from nlu.resolve.resolution import KINDS, Kind, Resolution, Status

__all__ = [
    "FUZZY_CUTOFF",
    "KINDS",
    "LOCALES",
    "EngineUnavailable",
    "InvalidReference",
    "Kind",
    "Reference",
    "Resolution",
    "SlotCatalog",
    "Status",
    "interpret",
    "load",
    "make_reference",
    "normalise",
    "parse_kind",
    "resolve",
    "unavailable",
    "zone_of",
]
