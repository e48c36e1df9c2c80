""" "Now" for relative slot values: a wall-clock moment in the user's time zone.

A request may give a `reference_time` (ISO 8601, with or without an offset), a `timezone` (an
IANA name such as "Europe/Berlin") and a `locale` ("en_GB": day before month in "12/11"). The
zone is, in this order: `timezone`; the offset of `reference_time`; the server's default
(`nlu serve --timezone`); this machine's zone. A reference time without an offset is a wall
time in that zone. A zone known only by its offset has no daylight-saving rules: a value a
week away keeps today's offset.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# The English locales the engine (Duckling) has rules for; others read as en_US would.
LOCALES = ("en_AU", "en_BZ", "en_CA", "en_GB", "en_IE", "en_IN", "en_JM", "en_NZ", "en_PH",
           "en_TT", "en_US", "en_ZA")  # fmt: skip


class InvalidReference(ValueError):
    """A time zone, reference time or locale that cannot be used; the message names the field."""


@dataclass(frozen=True, slots=True)
class Reference:
    """`moment`: aware, to the minute, in the zone. `zone`: its IANA name, or "" when only an
    offset is known. `locale`: None when the request gave none (then "12/11" is ambiguous)."""

    moment: datetime
    zone: str
    locale: str | None = None


def make_reference(
    reference_time: datetime | None = None,
    timezone_name: str | None = None,
    locale: str | None = None,
    *,
    default_zone: str | None = None,
) -> Reference:
    """The reference of one request (see the module's docstring for the order of the zone)."""
    if locale is not None:
        locale = check_locale(locale)
    if timezone_name is not None:
        zone = timezone_name
        zone_info: tzinfo = zone_of(zone, "timezone")
    elif reference_time is not None and reference_time.tzinfo is not None:
        offset = reference_time.utcoffset()
        assert offset is not None
        zone, zone_info = "", _fixed(offset)
    else:
        zone = default_zone or local_zone_name()
        zone_info = zone_of(zone, "default time zone") if zone else _local_offset()
    if reference_time is None:
        moment = datetime.now(zone_info)
    elif reference_time.tzinfo is None:
        moment = reference_time.replace(tzinfo=zone_info)
    else:
        moment = reference_time.astimezone(zone_info)
    return Reference(moment.replace(second=0, microsecond=0), zone, locale)


def check_locale(locale: str) -> str:
    """`locale` as the engine spells it ("en-gb" -> "en_GB"), or InvalidReference."""
    match = re.fullmatch(r"([A-Za-z]{2})[-_]([A-Za-z]{2})", locale.strip())
    spelled = f"{match[1].lower()}_{match[2].upper()}" if match else locale
    if spelled not in LOCALES:
        raise InvalidReference(f"locale: unknown locale {locale!r}; one of {', '.join(LOCALES)}")
    return spelled


def zone_of(name: str, field: str = "timezone") -> ZoneInfo:
    """The IANA zone `name`, or InvalidReference naming `field`."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*", name):
        raise InvalidReference(
            f"{field}: {name!r} is not an IANA time zone name such as 'Europe/Berlin'"
        )
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidReference(
            f"{field}: unknown time zone {name!r}; an IANA name such as 'Europe/Berlin' or "
            "'America/New_York'"
        ) from None
    # The engine reads its own copy of the database: a name only Python knows would be UTC there.
    directory = zone_directory()
    if directory is not None and not (directory / name).is_file():
        raise InvalidReference(f"{field}: time zone {name!r} is not in {directory}")
    return zone


@functools.cache
def zone_directory() -> Path | None:
    """The tz database the engine reads: the system's, else the `tzdata` package's."""
    for path in (*_tzpath(), "/usr/share/zoneinfo"):
        if Path(path, "UTC").is_file():
            return Path(path)
    try:
        import tzdata  # type: ignore[import-untyped]  # data only, no type marker
    except ImportError:
        return None
    bundled = Path(tzdata.__file__).parent / "zoneinfo"
    return bundled if (bundled / "UTC").is_file() else None


def _tzpath() -> tuple[str, ...]:
    import zoneinfo

    return tuple(zoneinfo.TZPATH)


@functools.cache
def zone_names() -> tuple[str, ...]:
    """Every name `zone_of` accepts (for the server's OpenAPI schema)."""
    import zoneinfo

    directory = zone_directory()
    names = zoneinfo.available_timezones()
    return tuple(sorted(n for n in names if directory is None or (directory / n).is_file()))


@functools.cache
def local_zone_name() -> str:
    """This machine's IANA zone (TZ, /etc/localtime, /etc/timezone), or "" when it has none."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    localtime = Path("/etc/localtime")
    if localtime.is_symlink():
        target = str(localtime.resolve())
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text(encoding="utf-8").strip())
    for name in candidates:
        if not name:
            continue
        try:
            zone_of(name)
        except InvalidReference:
            continue
        return name
    return ""


def _local_offset() -> tzinfo:
    offset = datetime.now().astimezone().utcoffset()
    return _fixed(offset or timedelta(0))


def _fixed(offset: timedelta) -> tzinfo:
    return UTC if not offset else timezone(offset)
