"""`nlu federated`: the federated room's command."""

from __future__ import annotations

import argparse

from nlu.console import Subparsers, overrides_help, print_json


def federated_command(args: argparse.Namespace) -> None:
    from nlu.config import load
    from nlu.federated.config import FederatedConfig
    from nlu.federated.simulation import federated

    result = federated(load(FederatedConfig, args.config, args.overrides))
    last = result.history[-1] if result.history else {}
    print_json(
        {
            "model_dir": str(result.model_dir),
            "clients": len(result.clients),
            "skills": len(result.labels),
            "rounds": len(result.history),
            "dev": last.get("dev"),
            "seconds": result.seconds,
        }
    )


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "federated",
        help="train a joint model with Flower: clients keep their data (simulation here; "
        "deployment: docs/guide/federated.md)",
    )
    p.add_argument(
        "config", help="YAML with federation keys and model keys (docs/guide/federated.md)"
    )
    p.add_argument("overrides", nargs="*", help=overrides_help("rounds=3 clients=4"))
    p.set_defaults(func=federated_command)
