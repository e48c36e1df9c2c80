"""nlu's federated training as a Flower App for the deployment engine.

A SuperLink runs `server` (the same rounds as `nlu federated`), each SuperNode `client` on the
data its owner points it at. The run-book: docs/guide/federated.md; the app folder `flwr run` ships:
deploy/flower (its pyproject.toml names these two objects).

Run config (`flwr run deploy/flower CONNECTION --run-config "config='/abs/fed.yaml' clients=2"`):
`config` is the federated YAML on the SuperLink's machine (its `data` is ignored there: every
SuperNode brings its own), `clients` how many SuperNodes to wait for before round 1.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from nlu.config import load
from nlu.federated.client import make_client_app
from nlu.federated.config import FederatedConfig, FederationError
from nlu.federated.server import run_server
from nlu.federated.simulation import prepare_output

client = make_client_app()
server = ServerApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config.get("config")
    if not config:
        raise FederationError(
            "no federated config: flwr run ... --run-config \"config='/path/to/federated.yaml'\""
        )
    cfg = prepare_output(load(FederatedConfig, str(config)))
    clients = int(str(context.run_config.get("clients", cfg.federation.clients or 1)))
    run_server(grid, cfg, clients, Path(cfg.student.output.output_dir))
