"""`nlu serve`: the server's command. The flags become `ServeSettings` through the one config
loader, so a bad value is the same one-line error as in a config file."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path

from nlu.console import Subparsers
from nlu.model.modeldir import BACKENDS, DEFAULT_MODEL
from nlu.serve.settings import LOCAL_HOSTS, ServeSettings


def serve_command(args: argparse.Namespace) -> None:
    from nlu.config import build
    from nlu.serve.run import serve

    names = {f.name for f in dataclasses.fields(ServeSettings)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    values["api_key"] = api_key(args)
    if args.allow_host:
        local = args.host in LOCAL_HOSTS
        values["trusted_hosts"] = [*LOCAL_HOSTS, *args.allow_host] if local else args.allow_host
    serve(build(ServeSettings, values, source="nlu serve"))


def api_key(args: argparse.Namespace) -> str | None:
    """From --api-key-file or NLU_API_KEY (neither shows in `ps`), or --api-key (it does)."""
    if args.api_key_file:
        try:
            key = Path(args.api_key_file).read_text(encoding="utf-8").strip()
        except OSError as err:
            raise FileNotFoundError(f"--api-key-file {args.api_key_file}: {err.strerror}") from err
        if not key:
            raise FileNotFoundError(f"--api-key-file {args.api_key_file} is empty")
        return key
    if args.api_key:
        logging.getLogger("nlu").warning(
            "--api-key on the command line is visible to every local user (ps); prefer "
            "--api-key-file or the NLU_API_KEY environment variable"
        )
        return str(args.api_key)
    return os.environ.get("NLU_API_KEY") or None


def register(sub: Subparsers) -> None:
    defaults = ServeSettings()
    p = sub.add_parser("serve", help="HTTP endpoint: /parse, /skills, /health, /metrics")
    p.add_argument(
        "model_dir", nargs="?", metavar="model", default=os.environ.get("NLU_MODEL", DEFAULT_MODEL)
    )
    p.add_argument("--backend", default=defaults.backend, choices=BACKENDS)
    p.add_argument("--host", default=defaults.host)
    p.add_argument("--port", type=int, default=defaults.port)
    p.add_argument("--workers", type=int, default=defaults.workers, help="server processes")
    p.add_argument(
        "--max-batch", type=int, default=defaults.max_batch, help="texts per micro-batch"
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=defaults.max_wait_ms,
        help="extra wait to grow micro-batches (requests queued during a pass are batched anyway)",
    )
    p.add_argument(
        "--fill-wait-ms",
        type=float,
        default=defaults.fill_wait_ms,
        help="under heavy load only (the last micro-batch at least half of --max-batch): wait "
        "this long for the next one to fill; a lone request never waits (0: off)",
    )
    p.add_argument(
        "--threads", type=int, help="inference threads per worker (default: cores / workers)"
    )
    p.add_argument(
        "--oos-threshold",
        type=float,
        help="out-of-scope threshold instead of the one saved in the model (texts scoring above "
        "it are rejected; msp/temperature methods: in [0, 1])",
    )
    p.add_argument(
        "--timezone",
        metavar="ZONE",
        help="IANA time zone (Europe/Berlin) of dates and times in slot values when a request "
        "gives neither `timezone` nor an offset in `reference_time` (default: this machine's)",
    )
    p.add_argument(
        "--api-key-file",
        help="require the X-API-Key header to equal the key in this file (or set NLU_API_KEY)",
    )
    p.add_argument(
        "--api-key",
        help="the key itself; visible to other local users in `ps`: prefer --api-key-file or "
        "NLU_API_KEY",
    )
    p.add_argument(
        "--trust-network",
        action="store_true",
        default=None,
        help="serve a non-loopback --host without an API key (refused otherwise): only where "
        "no untrusted client can reach the address",
    )
    p.add_argument(
        "--allow-host",
        action="append",
        metavar="NAME",
        help="also answer requests whose Host header is NAME (a local bind answers only "
        "127.0.0.1, localhost and ::1, against DNS rebinding); repeatable",
    )
    _limits(p, defaults)
    p.set_defaults(func=serve_command)


def _limits(p: argparse.ArgumentParser, defaults: ServeSettings) -> None:
    """What one client can hold of the server (docs/guide/serving.md)."""
    p.add_argument(
        "--max-queue",
        type=int,
        default=defaults.max_queue,
        help="requests waiting for a forward pass before new ones get 503",
    )
    p.add_argument(
        "--body-timeout",
        dest="body_timeout_s",
        type=float,
        default=defaults.body_timeout_s,
        help="seconds a request body may take to arrive (slow clients get 408)",
    )
    p.add_argument(
        "--header-timeout",
        dest="header_timeout_s",
        type=float,
        default=defaults.header_timeout_s,
        help="seconds a request line and headers may take to arrive (slow clients get 408)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=defaults.max_connections,
        help="open connections per worker; one more is answered 503 and closed",
    )
