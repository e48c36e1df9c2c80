"""`nlu serve`: check the model folder, then run uvicorn with one or more worker processes."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile

from fastapi import FastAPI

from nlu.inference.parser import OptionError, Parser
from nlu.model import modeldir
from nlu.model.ood import threshold_problem
from nlu.serve.app import MULTIPROCESS_ENV, create_app
from nlu.serve.protocol import protocol_options
from nlu.serve.settings import ENV_VAR, LOCAL_HOSTS, ServeSettings

logger = logging.getLogger(__name__)


def create_app_from_env() -> FastAPI:
    """App factory for uvicorn's workers: the settings come from one environment variable."""
    settings = ServeSettings.from_json(os.environ[ENV_VAR])
    threads = settings.threads or max(1, (os.cpu_count() or 1) // settings.workers)
    parser = Parser.from_pretrained(settings.model_dir, backend=settings.backend, threads=threads)
    return create_app(parser, settings)


def serve(settings: ServeSettings) -> None:
    """Fails before the port opens when the folder is missing or incomplete for the backend;
    the folder is checked, not loaded (each worker loads it once)."""
    import uvicorn

    for name in ("workers", "max_batch", "max_queue", "max_connections"):
        if getattr(settings, name) < 1:
            raise OptionError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("body_timeout_s", "header_timeout_s"):
        if not getattr(settings, name) > 0:
            flag = name.removesuffix("_s").replace("_", "-")
            raise OptionError(f"--{flag} must be more than 0 seconds")
    # A run folder serves its model, as every other command reads it (README).
    settings = dataclasses.replace(settings, model_dir=str(modeldir.locate(settings.model_dir)))
    backend = modeldir.check(settings.model_dir, settings.backend)
    meta = modeldir.read_meta(settings.model_dir)
    if settings.oos_threshold is not None:
        problem = threshold_problem(modeldir.read_ood(settings.model_dir), settings.oos_threshold)
        if problem:
            raise OptionError(f"--oos-threshold: {problem}")
    if settings.timezone is not None:
        from nlu.resolve import InvalidReference, zone_of

        try:
            zone_of(settings.timezone, "--timezone")
        except InvalidReference as err:
            raise OptionError(str(err)) from None
    if any(skill.slot_kinds for skill in meta.skills):
        from nlu.resolve import engine

        try:
            engine.load()
        except engine.EngineUnavailable as err:  # one line now, not a null value later unexplained
            logger.warning("%s", err)
    if settings.host not in LOCAL_HOSTS and not settings.api_key and not settings.trust_network:
        raise OptionError(
            f"binding to {settings.host} without an API key would let anyone who can reach it "
            "use it: set NLU_API_KEY or --api-key-file, or pass --trust-network if only trusted "
            "clients can reach this address"
        )
    logger.info(
        "serving %s (%s, %d skills) on http://%s:%d with %d worker(s)",
        settings.model_dir,
        backend,
        len(meta.skills),
        settings.host,
        settings.port,
        settings.workers,
    )
    hosts = settings.trusted_hosts
    if hosts is None and settings.host in LOCAL_HOSTS:
        hosts = LOCAL_HOSTS  # against DNS rebinding: a web page cannot reach a local server
    resolved = dataclasses.replace(settings, backend=backend, trusted_hosts=hosts)
    os.environ[ENV_VAR] = resolved.to_json()
    shared_metrics = None
    if settings.workers > 1 and not os.environ.get(MULTIPROCESS_ENV):
        # Each worker process counts its own requests; /metrics must report all of them.
        shared_metrics = tempfile.mkdtemp(prefix="nlu-metrics-")
        os.environ[MULTIPROCESS_ENV] = shared_metrics
    try:
        uvicorn.run(
            "nlu.serve.run:create_app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level="warning",
            timeout_graceful_shutdown=30,
            **protocol_options(settings),
        )
    finally:
        if shared_metrics is not None:
            del os.environ[MULTIPROCESS_ENV]
            shutil.rmtree(shared_metrics, ignore_errors=True)
