"""uvicorn's httptools protocol with the limits a public endpoint needs before the app sees a
request: httptools reads request lines and headers of any size and waits for them forever.

- The request line and headers of one request: at most `MAX_HEADER_BYTES` bytes and
  `MAX_HEADERS` fields, else 431 and the connection closes.
- They must arrive within the server's `header_timeout_s` of the connection opening or of the
  first byte after the previous response (an idle kept-alive connection closes after uvicorn's
  keep-alive timeout, 5 s), else 408 (or a silent close when nothing was sent) and the
  connection closes.
- At most `max_connections` open connections per worker: one more is answered 503 and closed.
The body has its own size and time limits (the app's guard, `nlu.serve.app`).
"""

from __future__ import annotations

import asyncio
import functools
import os
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from nlu.serve.settings import ENV_VAR, ServeSettings

MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100


class _Refused(Exception):
    """Raised from a parser callback after the connection was answered and closed."""


@functools.cache
def _settings() -> ServeSettings:
    # Worker processes get the settings through the environment (nlu.serve.run), as the app.
    raw = os.environ.get(ENV_VAR)
    return ServeSettings.from_json(raw) if raw else ServeSettings()


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_bytes = 0
        self._header_count = 0
        self._tail = b""
        self._in_headers = True
        self._answered = False
        self._header_timer: asyncio.TimerHandle | None = None
        if len(self.connections) > _settings().max_connections:
            self._refuse(503, "too many open connections; retry later")
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return
        if self._in_headers:
            self._arm_header_timer()
            # Count the bytes up to the blank line that ends the headers (the rest of the
            # chunk is body): httptools would buffer a header of any size before calling back.
            end = (self._tail + data).find(b"\r\n\r\n")
            self._header_bytes += len(data) if end < 0 else max(0, end - len(self._tail))
            self._tail = (self._tail + data)[-3:]
            if self._header_bytes > MAX_HEADER_BYTES:
                self._refuse(431, f"request line and headers over {MAX_HEADER_BYTES} bytes")
                return
        # uvicorn's data_received, but an error after our own answer stays unanswered (its
        # plain-text 400 would follow ours on the same connection).
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            if not self._answered:
                self._refuse(400, "invalid HTTP request")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > MAX_HEADERS:
            self._refuse(431, f"more than {MAX_HEADERS} header fields")
            raise _Refused  # stops the parser: nothing more of this request is read
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._answered:
            return
        self._in_headers = False
        self._disarm_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # The next request on this connection starts its own header budget and clock (armed
        # by its first byte; until then uvicorn's keep-alive timeout closes an idle one).
        self._in_headers, self._header_bytes, self._header_count, self._tail = True, 0, 0, b""
        super().on_response_complete()

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            timeout = _settings().header_timeout_s
            self._header_timer = self.loop.call_later(timeout, self._header_timeout)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self._header_bytes or self._tail:
            seconds = _settings().header_timeout_s
            self._refuse(408, f"the request headers did not arrive within {seconds:g} s")
        else:  # a connection that never sent a byte gets no answer
            self._answered = True
            self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` with a JSON error, as the app words its errors, and close."""
        self._answered = True
        self._disarm_header_timer()
        body = ('{"error":"' + message + '"}').encode()
        reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}.get(
            status, b"Service Unavailable"
        )
        head = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        head += [b"content-type: application/json\r\n", b"connection: close\r\n"]
        head += [b"content-length: %d\r\n\r\n" % len(body)]
        if not self.transport.is_closing():
            self.transport.write(b"".join(head) + body)
            self.transport.close()


def protocol_options(settings: ServeSettings) -> dict[str, Any]:
    """uvicorn.run's keyword arguments for these limits."""
    return {"http": BoundedHttpToolsProtocol, "limit_concurrency": settings.max_connections}
