"""Federated training on Flower: skill owners train the shared model without handing over data.

`nlu federated CONFIG.yaml [key=value ...]` runs Flower's simulation engine: one ClientApp per
client on this machine. The same ServerApp and ClientApp run in Flower's deployment engine
(SuperLink and SuperNodes as separate processes; `nlu.federated.apps`, docs/guide/federated.md).

What travels (docs/guide/federated.md has the reasons):

- Server -> client: the job (the resolved config and the federation's label space, no data) and
  the global arrays.
- Client -> server: its label names before round 1; per round the arrays it trained (the shared
  encoder, its skills' heads) with example counts, loss and timings; the dev metrics of the
  global model on its held-out part; and for the router, feature statistics (per-skill sums and
  counts of sentence vectors and their summed outer products). Never a text.
- Aggregation is Flower's strategy (FedAvg, FedProx, FedAdam) with one change: each array is
  averaged over the clients that trained it, weighted by their examples of it. A skill's heads
  move only with the clients that hold that skill; the encoder with everyone.
- The router: a client that holds a single skill cannot learn to tell skills apart. With
  `router: lda` (the default) the router is not trained by clients but fitted by the server
  after each round from the clients' feature statistics: a linear discriminant over the shared
  encoder's sentence vectors (per-skill means, pooled within-skill covariance), written into
  the router's linear layer. `router: qda` fits each skill its own covariance as well, shrunk
  towards the pooled one (regularised quadratic discriminant; clients send one matrix of outer
  products per skill they hold), and the router gets a quadratic term (`Router.curvature`).
  `router: trained` is plain FedAvg of a router every client trains on its own examples (the
  naive baseline, measured against it in benchmarks/results/studies/federated.md).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nlu.config import ConfigError, dump

if typing.TYPE_CHECKING:
    pass
from nlu.federated.client import make_client_app
from nlu.federated.config import FederatedConfig, FederationError
from nlu.federated.server import FederatedResult, make_server_app

logger = logging.getLogger(__name__)

# -- the simulation entry point --------------------------------------------------------------------


def _absolute(sources: Sequence[str]) -> list[str]:
    return [str(Path(s).resolve()) if Path(s).exists() else s for s in sources]


def count_clients(cfg: FederatedConfig) -> int:
    """partition=skill with clients=0: one client per skill in the data."""
    if cfg.federation.clients:
        return cfg.federation.clients
    from nlu.data.loaders import load_train_dev

    data = load_train_dev(cfg.student.data, seed=cfg.student.seed)
    return len(data.labels)


def prepare_output(cfg: FederatedConfig) -> FederatedConfig:
    """The config with absolute paths (clients run in other processes, with other working
    directories), its output folder checked and the resolved config written there."""
    from nlu.model.encoders import check_encoder
    from nlu.training.rundir import setup_run

    student = cfg.student
    run = setup_run(student.output)
    if run.resume_from:
        raise ConfigError("federated runs do not resume yet: start again without resume=")
    check_encoder(student.model.encoder)
    cfg = dataclasses.replace(
        cfg,
        student=dataclasses.replace(
            student,
            data=dataclasses.replace(
                student.data,
                data=_absolute(student.data.data),
                dev_data=_absolute(student.data.dev_data),
            ),
            output=dataclasses.replace(
                student.output, output_dir=str(Path(student.output.output_dir).resolve())
            ),
        ),
    )
    out = Path(cfg.student.output.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump(cfg))
    return cfg


def federated(cfg: FederatedConfig) -> FederatedResult:
    """Train with Flower's simulation engine: every client on this machine, one after another
    (or `client_cpus` apart), the server in this process."""
    from flwr.simulation import run_simulation

    cfg = prepare_output(cfg)
    clients = count_clients(cfg)
    if clients < 1:
        raise FederationError("no clients: the data holds no skill")
    outcome: dict[str, Any] = {}
    cpus = cfg.federation.client_cpus or os.cpu_count() or 1
    backend = {
        "client_resources": {"num_cpus": cpus, "num_gpus": 0.0},
        "init_args": {"num_cpus": os.cpu_count() or 1, "include_dashboard": False},
    }
    run_simulation(
        server_app=make_server_app(cfg, clients, outcome),
        client_app=make_client_app(),
        num_supernodes=clients,
        backend_config=backend,  # type: ignore[arg-type]
    )
    if "error" in outcome:
        raise outcome["error"]
    if "result" not in outcome:
        raise FederationError("the federation stopped without a result (see the log above)")
    result: FederatedResult = outcome["result"]
    return result
