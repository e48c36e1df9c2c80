"""The grammar engine behind built-in slot kinds: Duckling (facebook/duckling, BSD-3-Clause),
through its native Python binding `pyduckling-native-phihos` (MIT; wheels for Linux x86_64,
CPython 3.8-3.14; about half a millisecond a call here).

Only this module talks to the engine: `entities` returns its readings of one text as plain
dicts, relative to a `Reference`. Everything that decides what a reading means for a slot is
in `nlu.resolve.kinds`.

The engine runs in a child process, not in the server's: the binding keeps about 0.4 KB of
every call for good (measured: 80,000 calls of one text, +33 MB, linear), which a server
answering for weeks cannot afford, and native code that crashes takes only the child with
it. The child is replaced by a fresh one every `RECYCLE_CALLS` calls (started beside the old
one, so no request waits for it) and when it dies; a call costs a pipe round trip more (about
0.05 ms), and `nlu.resolve.kinds` caches readings, so the engine sees each value once a minute.
"""

from __future__ import annotations

import calendar
import contextlib
import functools
import json
import logging
import subprocess
import sys
import threading
from typing import Any

from nlu.resolve.reference import Reference, zone_directory

log = logging.getLogger(__name__)

RECYCLE_CALLS = 50_000  # about 20 MB kept by the binding, then a fresh child


class EngineUnavailable(RuntimeError):
    """The engine cannot load on this machine; the message says what to install."""


# -- the parent: the child is `python -m nlu.resolve.engine_child`, one JSON line per request
# and per answer (multiprocessing's spawn would import the caller's main script again there)


class _Process:
    """One child and the pipes to it."""

    def __init__(self) -> None:
        directory = zone_directory()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nlu.resolve.engine_child", str(directory or "")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin, self.stdout = self.process.stdin, self.process.stdout
        greeting = self.stdout.readline().strip()
        if greeting != "ready":
            self.close()
            raise EngineUnavailable(greeting or "the slot value engine exited at start")
        self.calls = 0

    def ask(self, request: tuple[Any, ...]) -> str:
        self.stdin.write(json.dumps(request) + "\n")
        self.stdin.flush()
        self.calls += 1
        reply = self.stdout.readline()
        if not reply:
            raise EOFError("the engine process ended")
        return reply

    def close(self) -> None:
        with contextlib.suppress(OSError):  # the child may have gone already
            self.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class _Engine:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: _Process | None = None
        self.next: _Process | None = None
        self.starting = False

    def ask(self, request: tuple[Any, ...]) -> str:
        with self.lock:
            if self.next is not None:  # the fresh child is ready: retire the old one
                old, self.current, self.next = self.current, self.next, None
                if old is not None:
                    threading.Thread(target=old.close, daemon=True).start()
            if self.current is None:
                self.current = _Process()
            try:
                reply = self.current.ask(request)
            except (EOFError, OSError):  # the child died: one fresh try
                log.warning("the slot value engine stopped; starting it again")
                self.current = _Process()
                reply = self.current.ask(request)
            if self.current.calls >= RECYCLE_CALLS and not self.starting:
                self.starting = True
                threading.Thread(target=self._prepare, daemon=True).start()
            return reply

    def _prepare(self) -> None:
        try:
            fresh = _Process()
        except EngineUnavailable as err:
            log.warning("could not replace the slot value engine: %s", err)
            fresh = None
        with self.lock:
            self.next, self.starting = fresh, False


_ENGINE = _Engine()


@functools.cache
def unavailable() -> str | None:
    """Why the engine cannot run here, or None when it can (asked once per process)."""
    try:
        _ENGINE.ask(("now", ("time",), "UTC", 0, "", False))
    except EngineUnavailable as err:
        return str(err)
    return None


def load() -> None:
    """Start the engine now (about half a second), not on the first request;
    EngineUnavailable says why it cannot."""
    problem = unavailable()
    if problem:
        raise EngineUnavailable(problem)


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
    moment = reference.moment
    offset = moment.utcoffset()
    assert offset is not None
    wall = calendar.timegm(moment.timetuple()[:6])
    if reference.zone:
        zone, timestamp = reference.zone, wall - int(offset.total_seconds())
    else:
        # A zone known only by its offset: the engine reckons in UTC on the wall clock's
        # numbers, so every value it returns carries the user's wall-clock time.
        zone, timestamp = "UTC", wall
    found = json.loads(_ENGINE.ask((text, dims, zone, timestamp, locale, latent)))
    return found if isinstance(found, list) else []
