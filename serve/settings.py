"""Server settings: one object, with the one set of defaults that `nlu serve` shows."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from nlu.model.modeldir import DEFAULT_MODEL

# How uvicorn's worker processes receive the settings (they import the app factory anew).
ENV_VAR = "NLU_SERVE_SETTINGS"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServeSettings:
    # The model folder (or run folder) to serve.
    model_dir: str = DEFAULT_MODEL
    backend: str = "auto"  # auto | torch | onnx (auto: ONNX when the folder has model.onnx)
    # The address to bind (127.0.0.1: this machine only).
    host: str = "127.0.0.1"
    # The port to listen on.
    port: int = 8000
    workers: int = 1  # server processes
    threads: int | None = None  # inference threads per worker (default: cores / workers)
    max_batch: int = 32  # texts per forward pass
    # Extra wait to grow micro-batches (requests queued during a pass are batched anyway).
    max_wait_ms: float = 0.0
    # Under heavy load only (the last pass at least half of max_batch): wait this long for the
    # batch to fill. A lone request never waits.
    fill_wait_ms: float = 3.0
    max_queue: int = 1024  # queued requests before 503
    # Every route but /health needs this key in X-API-Key (nlu serve reads it from --api-key-file or
    # NLU_API_KEY).
    api_key: str | None = None
    # Serve a non-loopback address without an API key (only where the network is trusted:
    # a private network, or a proxy that authenticates); without it `nlu serve` refuses.
    trust_network: bool = False
    # Host header names the server answers to; None: any. `nlu serve` sets the loopback names
    # when it binds to a loopback address, against DNS rebinding.
    trusted_hosts: tuple[str, ...] | None = None
    body_timeout_s: float = 10.0  # a request body must arrive within this
    # A request's line and headers must arrive within this (of the connection opening, or of
    # its first byte after the previous response); else 408 and the connection closes.
    header_timeout_s: float = 10.0
    # Open connections per worker; one more is answered 503 and closed.
    max_connections: int = 512
    # Replaces the model's out-of-scope threshold for every request (a request may still send
    # its own); None: the threshold saved in the model folder.
    oos_threshold: float | None = None
    # The time zone (IANA name) of slot values for requests that give neither `timezone` nor
    # an offset in `reference_time`; None: this machine's zone.
    timezone: str | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        values = json.loads(text)
        hosts = values.get("trusted_hosts")
        return cls(**{**values, "trusted_hosts": tuple(hosts) if hosts is not None else None})
