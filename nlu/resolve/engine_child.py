"""The slot value engine's child process (`nlu.resolve.engine` starts and replaces it):
`python -m nlu.resolve.engine_child ZONE_DIR` reads one JSON request per line on stdin and
writes Duckling's answer, one JSON line each, on stdout; its first line is "ready" or why not.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any

INSTALL = "pip install pyduckling-native-phihos (Linux x86_64)"


def _child(directory: str) -> None:
    """The child process: load the engine, say so, then answer requests until stdin closes."""
    out = sys.stdout
    try:
        import duckling  # type: ignore[import-untyped]  # the wheel ships no type marker
    except ImportError as err:
        out.write(
            f"slot kinds (time, date, duration, number, ordinal) need the Duckling engine: "
            f"{INSTALL}; without it their values are null ({err})\n"
        )
        return
    if not directory:
        out.write(
            "slot kinds need a time zone database: install the tzdata package or the system's "
            "tzdata; without it their values are null\n"
        )
        return
    zones = duckling.load_time_zones(directory)

    @functools.lru_cache(maxsize=64)
    def context(zone: str, timestamp: int, locale: str) -> Any:
        language = duckling.default_locale_lang(duckling.parse_lang("EN"))
        chosen = duckling.parse_locale(locale.upper(), language) if locale else language
        return duckling.Context(duckling.parse_ref_time(zones, zone, timestamp), chosen)

    @functools.lru_cache(maxsize=32)
    def dimensions(dims: tuple[str, ...]) -> Any:
        return duckling.parse_dimensions(list(dims))

    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        text, dims, zone, timestamp, locale, latent = json.loads(line)
        try:
            reply = duckling.parse_text(
                text, context(zone, timestamp, locale), dimensions(tuple(dims)), latent
            )
        except Exception as err:  # the binding's own errors: the caller gets no readings
            reply = json.dumps({"error": f"{type(err).__name__}: {err}"})
        out.write(reply.replace("\n", " ") + "\n")
        out.flush()


if __name__ == "__main__":
    _child(sys.argv[1] if len(sys.argv) > 1 else "")
