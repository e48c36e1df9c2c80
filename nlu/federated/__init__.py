"""Federated training on Flower: skill owners train one joint model without sharing data.

Rooms: `config` (the federation's keys), `partition` (simulated clients' data, the merged label
space), `messages` (what travels, per-owner averaging, the strategy), `router` (the server's
fitted router), `client` and `server` (the Flower apps' code), `apps` (the apps Flower's
deployment engine loads), `simulation` (`nlu federated`).
"""

from nlu._aliases import forward_names

# `from nlu.federated import federated` (nlu.federated was one module before 0.2).
__getattr__ = forward_names(
    "nlu.federated",
    [
        f"nlu.federated.{m}"
        for m in (
            "simulation",
            "config",
            "partition",
            "messages",
            "router",
            "arrays",
            "client",
            "server",
        )
    ],
)
