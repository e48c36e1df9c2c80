"""The federation's config: `federation:` keys beside the student's training keys."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from nlu._aliases import old_loaders
from nlu.config import TrainConfig

logger = logging.getLogger(__name__)


Partition = Literal["skill", "iid", "dirichlet"]
FedStrategy = Literal["fedavg", "fedprox", "fedadam"]
RouterMode = Literal["lda", "qda", "trained"]
Updates = Literal["full", "lora", "lora_b"]
DpMode = Literal["none", "server", "client"]

HISTORY_FILE = "federated.json"
PLOT_FILE = "federated.png"


class FederationError(ValueError):
    """A federation that cannot start or go on: bad client data, conflicting labels, too few
    clients answering."""


@dataclass
class FederationConfig:
    # Rounds of training: the server sends the model, clients train, the server averages.
    rounds: int = 5
    # Passes over its own data a client makes per round. Centralised training with
    # epochs = rounds · local_epochs sees the same data as often.
    local_epochs: int = 1
    # A round trains on one of this many parts of a client's data (a fixed shuffle), the next
    # round on the next part: local_parts rounds make local_epochs passes. More, shorter
    # rounds at the same passes: the clients drift apart less between averages.
    local_parts: int = 1
    # After the last round, each client refits its own skills' intent and slot heads for this
    # many passes over its data, on the federation's final encoder (frozen, dropout off; the
    # router stays as fitted): a round's heads are fitted to the client's locally moved encoder,
    # and the final model pairs them with the average of everyone's (FedRep/FedBABU-style
    # heads-last). 0: no such round. Costs forward passes only through the encoder.
    head_refit_epochs: int = 0
    # Simulation only (in deployment each SuperNode brings its own data): how the `data`
    # sources are split. skill: each client owns whole skills (skill j -> client j mod clients);
    # iid: every intent spread evenly; dirichlet: each intent's share per client drawn from
    # Dirichlet(dirichlet_alpha) (small alpha: very uneven clients).
    partition: Partition = "skill"
    clients: int = 0  # 0: one client per skill (partition=skill)
    # partition=dirichlet: the concentration (small: very uneven clients).
    dirichlet_alpha: float = 0.5
    # How the server averages: fedavg, fedprox (proximal term, proximal_mu) or fedadam (server
    # optimiser).
    strategy: FedStrategy = "fedavg"
    proximal_mu: float = 0.01  # fedprox: weight of the proximal term
    server_learning_rate: float = 0.01  # fedadam: the server optimiser's step (eta)
    # fedavg/fedprox: the server moves the shared arrays (encoder, router) by this multiple of
    # their averaged update; a skill's heads always take their owners' plain average. Owners
    # that each hold a sliver of the data move the encoder a little each; their average moves
    # it about 1/clients as far as centralised training would (FedAvg with a server learning
    # rate, Reddi et al. 2021). 1.0: plain FedAvg.
    shared_server_lr: float = 1.0
    # A round goes on with the clients that answered if at least this many did (a crashed or
    # timed-out client does not stop training); fewer is an error.
    min_clients: int = 1
    # Seconds the server waits for a round's answers.
    round_timeout_s: float = 3600.0
    # How long the server waits for the expected clients to connect before round 1.
    connect_timeout_s: float = 300.0
    # lda or qda: the server fits the router from the clients' feature statistics; trained: FedAvg
    # of the clients' routers.
    router: RouterMode = "lda"
    # router: qda - each skill's covariance is (1 - shrinkage) · its own + shrinkage · the
    # pooled one. 1.0 is the linear discriminant; lower trusts the skills' own spreads more.
    router_shrinkage: float = 0.95
    # What clients train and send: the whole model ("full"), or a LoRA adapter on the frozen
    # encoder plus the heads ("lora"; its rank: lora_rank), orders of magnitude fewer bytes.
    # "lora_b": only the adapters' B matrices train and travel; every machine builds the same
    # A from the seed and keeps it. Averaging B alone is exact (the mean of B_i·A is mean(B)·A,
    # where averaging A and B apart is not the mean of their products; Sun et al. 2024,
    # FFA-LoRA), and half the adapter bytes.
    updates: Updates = "full"
    # Differential privacy through Flower's fixed-clipping wrappers: "server" clips each update
    # at the server, "client" on the client (Flower's fixedclipping_mod); both add Gaussian
    # noise to the average. No privacy accounting (epsilon) is done here.
    dp: DpMode = "none"
    # dp: the Gaussian noise's standard deviation, in multiples of the clipping norm.
    dp_noise_multiplier: float = 0.1
    # dp: the norm each update is clipped to.
    dp_clipping_norm: float = 1.0
    # Simulation: CPUs per client (clients run one after another when it is all the CPUs).
    client_cpus: int = 0  # 0: all of this machine's

    def problems(self) -> list[str]:
        problems = [
            f"{name}={value} (at least {low})"
            for name, value, low in (
                ("rounds", self.rounds, 1),
                ("local_epochs", self.local_epochs, 1),
                ("head_refit_epochs", self.head_refit_epochs, 0),
                ("local_parts", self.local_parts, 1),
                ("min_clients", self.min_clients, 1),
                ("clients", self.clients, 0),
            )
            if value < low
        ]
        if self.dirichlet_alpha <= 0:
            problems.append(f"dirichlet_alpha={self.dirichlet_alpha} (above 0, e.g. 0.5)")
        if self.shared_server_lr <= 0:
            problems.append(
                f"shared_server_lr={self.shared_server_lr} (above 0; 1.0 is plain FedAvg)"
            )
        if self.strategy == "fedadam" and self.shared_server_lr != 1.0:
            problems.append(
                "shared_server_lr applies to fedavg and fedprox; fedadam steps by "
                "server_learning_rate"
            )
        if self.strategy == "fedadam" and self.head_refit_epochs:
            # FedAdam's server step would move the heads by its own rule, and the encoder by its
            # momentum, in a round meant to fit the heads to a fixed encoder.
            problems.append("head_refit_epochs works with fedavg and fedprox, not fedadam")
        if not 0.0 <= self.router_shrinkage <= 1.0:
            problems.append(
                f"router_shrinkage={self.router_shrinkage} (between 0 and 1, e.g. 0.95)"
            )
        if self.dp_noise_multiplier < 0:
            problems.append(f"dp_noise_multiplier={self.dp_noise_multiplier} (0 or more)")
        if self.dp_clipping_norm <= 0:
            problems.append(f"dp_clipping_norm={self.dp_clipping_norm} (above 0)")
        if self.partition != "skill" and self.clients < 2:
            problems.append(f"partition={self.partition} needs clients=N (2 or more shards)")
        return problems


@dataclass
class FederatedConfig:
    federation: FederationConfig = field(default_factory=FederationConfig)
    # The model and each client's local training: encoder, optimiser, multi-task ... as for
    # `nlu train` (its `epochs` is unused: rounds and local_epochs set the passes), and `data`:
    # the data the simulated clients split among themselves.
    student: TrainConfig = field(default_factory=TrainConfig)

    def problems(self) -> list[str]:
        if self.student.model.sharing != "hard":
            return ["federated training shares one encoder (sharing=hard)"]
        return []


# nlu 0.1's loaders of this config (nlu.config.build, load, dump, parse with FederatedConfig).
__getattr__ = old_loaders(__name__, "federated", FederatedConfig, {"FED_KEYS": FederationConfig})
