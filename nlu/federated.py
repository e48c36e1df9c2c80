"""Federated training on Flower: skill owners train the shared model without handing over data.

`nlu federated CONFIG.yaml [key=value ...]` runs Flower's simulation engine: one ClientApp per
client on this machine. The same ServerApp and ClientApp run in Flower's deployment engine
(SuperLink and SuperNodes as separate processes; `nlu.flower_app`, docs/federated.md).

What travels (docs/federated.md has the reasons):

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
  naive baseline, measured against it in docs/experiments.md).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import time
import typing
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import yaml

from nlu.config import ConfigError, TrainConfig, make_config, read_values, typed_value
from nlu.labels import SkillLabels
from nlu.ood import shared_precision
from nlu.schema import Example

if typing.TYPE_CHECKING:
    import torch
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg, Strategy

    from nlu.alignment import Tokenizer
    from nlu.data.loaders import TrainData
    from nlu.model import JointModel

logger = logging.getLogger(__name__)

T = TypeVar("T")
E = TypeVar("E")

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
    dirichlet_alpha: float = 0.5
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
    round_timeout_s: float = 3600.0
    # How long the server waits for the expected clients to connect before round 1.
    connect_timeout_s: float = 300.0
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
    dp_noise_multiplier: float = 0.1
    dp_clipping_norm: float = 1.0
    # Simulation: CPUs per client (clients run one after another when it is all the CPUs).
    client_cpus: int = 0  # 0: all of this machine's


@dataclass
class FederatedConfig:
    federation: FederationConfig = field(default_factory=FederationConfig)
    # The model and each client's local training: encoder, optimiser, multi-task ... as for
    # `nlu train` (its `epochs` is unused: rounds and local_epochs set the passes), and `data`:
    # the data the simulated clients split among themselves.
    student: TrainConfig = field(default_factory=TrainConfig)


FED_KEYS = {f.name for f in dataclasses.fields(FederationConfig)}


def make_federated_config(values: Mapping[str, Any], *, source: str) -> FederatedConfig:
    values = dict(values)
    fed_values = dict(values.pop("federation", None) or {})
    for key in list(values):
        if key in FED_KEYS:
            fed_values[key] = values.pop(key)
        elif key.startswith("federation."):
            fed_values[key.partition(".")[2]] = values.pop(key)
    unknown = sorted(set(fed_values) - FED_KEYS)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key federation.{unknown[0]}; known: {', '.join(sorted(FED_KEYS))}"
        )
    fed = FederationConfig(
        **{k: typed_value(FederationConfig, k, v, source=source) for k, v in fed_values.items()}
    )
    problems = [
        f"{name}={value} (at least {low})"
        for name, value, low in (
            ("rounds", fed.rounds, 1),
            ("local_epochs", fed.local_epochs, 1),
            ("head_refit_epochs", fed.head_refit_epochs, 0),
            ("local_parts", fed.local_parts, 1),
            ("min_clients", fed.min_clients, 1),
            ("clients", fed.clients, 0),
        )
        if value < low
    ]
    if fed.dirichlet_alpha <= 0:
        problems.append(f"dirichlet_alpha={fed.dirichlet_alpha} (above 0, e.g. 0.5)")
    if fed.shared_server_lr <= 0:
        problems.append(f"shared_server_lr={fed.shared_server_lr} (above 0; 1.0 is plain FedAvg)")
    if fed.strategy == "fedadam" and fed.shared_server_lr != 1.0:
        problems.append(
            "shared_server_lr applies to fedavg and fedprox; fedadam steps by server_learning_rate"
        )
    if fed.strategy == "fedadam" and fed.head_refit_epochs:
        # FedAdam's server step would move the heads by its own rule, and the encoder by its
        # momentum, in a round meant to fit the heads to a fixed encoder.
        problems.append("head_refit_epochs works with fedavg and fedprox, not fedadam")
    if not 0.0 <= fed.router_shrinkage <= 1.0:
        problems.append(f"router_shrinkage={fed.router_shrinkage} (between 0 and 1, e.g. 0.95)")
    if fed.dp_noise_multiplier < 0:
        problems.append(f"dp_noise_multiplier={fed.dp_noise_multiplier} (0 or more)")
    if fed.dp_clipping_norm <= 0:
        problems.append(f"dp_clipping_norm={fed.dp_clipping_norm} (above 0)")
    if fed.partition != "skill" and fed.clients < 2:
        problems.append(f"partition={fed.partition} needs clients=N (2 or more shards)")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    student = make_config(values, source=source)
    if student.model.sharing != "hard":
        raise ConfigError(f"{source}: federated training shares one encoder (sharing=hard)")
    return FederatedConfig(federation=fed, student=student)


def load_federated_config(path: str | Path, overrides: Sequence[str] = ()) -> FederatedConfig:
    return make_federated_config(read_values(path, overrides), source=str(path))


def dump_federated_config(cfg: FederatedConfig) -> str:
    # Student keys at the top level, as `nlu train` saves them, so the model folder's config
    # reads back with nlu.config.parse_config (which skips `federation`).
    return yaml.safe_dump(
        {**dataclasses.asdict(cfg.student), "federation": dataclasses.asdict(cfg.federation)},
        sort_keys=False,
    )


def parse_federated_config(text: str, *, source: str) -> FederatedConfig:
    values = yaml.safe_load(text) or {}
    return make_federated_config(values, source=source)


# -- partitions (simulation) -----------------------------------------------------------------------


def partition(
    examples: Sequence[Example], fed: FederationConfig, clients: int, client: int, seed: int
) -> list[Example]:
    """Client `client`'s share of `examples`; a pure function of the examples' labels, so the
    train and dev splits of a source are cut alike and every run cuts the same."""
    if fed.partition == "skill":
        skills = sorted({e.skill for e in examples if e.skill is not None})
        mine = {s for j, s in enumerate(skills) if j % clients == client}
    groups: dict[tuple[str, str], list[int]] = {}
    for i, e in enumerate(examples):
        groups.setdefault((e.skill or "", e.intent or ""), []).append(i)
    out: list[int] = []
    for key in sorted(groups):
        rows = groups[key]
        if fed.partition == "skill" and key[0]:
            out += rows if key[0] in mine else []
            continue
        # One generator per intent: its shares do not depend on which other intents exist.
        rng = np.random.default_rng([seed, zlib.crc32("/".join(key).encode())])
        if fed.partition == "dirichlet":
            shares = rng.dirichlet([fed.dirichlet_alpha] * clients)
        else:  # iid, and the out-of-scope examples of skill partitions
            shares = np.full(clients, 1.0 / clients)
        order = rng.permutation(len(rows))
        cuts = np.concatenate([[0], np.round(np.cumsum(shares) * len(rows)).astype(int)])
        out += [rows[j] for j in order[cuts[client] : cuts[client + 1]]]
    return [examples[i] for i in sorted(out)]


# -- labels ----------------------------------------------------------------------------------------


def merge_labels(
    reported: Mapping[str, Sequence[SkillLabels]],
    *,
    owned: bool,
    fixed: Sequence[SkillLabels] | None = None,
    fixed_from: str = "",
) -> list[SkillLabels]:
    """The federation's label space from each client's label names, checked before round 1.

    `fixed` (a model the federation starts from): every client label must be in it. Else the
    union; where clients own their data (`owned`: deployment, or skill partitions) a skill on
    several clients must carry the same intents and slots on each (its owners share one
    definition), while shards of one data set may miss rare labels."""
    problems: list[str] = []
    if fixed is not None:
        known = {s.name: s for s in fixed}
        for client, skills in reported.items():
            for s in skills:
                if s.name not in known:
                    problems.append(
                        f"{client}: skill {s.name!r} is not in the federation's label space "
                        f"({fixed_from}: {', '.join(sorted(known))})"
                    )
                    continue
                for kind, mine, theirs in (
                    ("intent", s.intents, known[s.name].intents),
                    ("slot", s.slots, known[s.name].slots),
                ):
                    for label in sorted(set(mine) - set(theirs)):
                        problems.append(
                            f"{client}: {kind} {s.name}/{label} is not in the federation's "
                            f"label space ({fixed_from})"
                        )
        if problems:
            raise FederationError("; ".join(problems[:10]))
        return list(fixed)
    first: dict[str, tuple[str, SkillLabels]] = {}
    merged: dict[str, SkillLabels] = {}
    for client, skills in sorted(reported.items()):
        for skill in skills:
            if skill.name not in merged:
                first[skill.name] = (client, skill)
                merged[skill.name] = dataclasses.replace(skill)
                continue
            other, first_labels = first[skill.name]
            if owned:
                for kind, a, b in (
                    ("intents", skill.intents, first_labels.intents),
                    ("slots", skill.slots, first_labels.slots),
                ):
                    if set(a) != set(b):
                        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
                        problems.append(
                            f"skill {skill.name!r} has different {kind} on {client} and {other}: "
                            f"only {client}: {only_a or '-'}, only {other}: {only_b or '-'}"
                        )
            m = merged[skill.name]
            m.intents = sorted(set(m.intents) | set(skill.intents))
            m.slots = sorted(set(m.slots) | set(skill.slots))
    if problems:
        raise FederationError(
            "; ".join(problems[:10])
            + ". A skill's owners must share one label set: give every owner the same skill "
            "definition, or rename one of the skills"
        )
    if not merged:
        raise FederationError("no client holds any labelled example")
    return [merged[name] for name in sorted(merged)]


def labels_to_json(labels: Sequence[SkillLabels]) -> str:
    return json.dumps([s.to_dict() for s in labels])


def labels_from_json(text: str) -> list[SkillLabels]:
    return [SkillLabels.from_dict(row) for row in json.loads(text)]


# -- what travels ----------------------------------------------------------------------------------


def number(record: Mapping[str, Any], key: str) -> float:
    """A numeric entry of a Flower record (they hold several value types)."""
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FederationError(f"record entry {key!r} is {value!r}, not a number")
    return float(value)


def configs(message: Message, key: str) -> ConfigRecord:
    from flwr.app import ConfigRecord

    record = message.content[key]
    if not isinstance(record, ConfigRecord):
        raise FederationError(f"message entry {key!r} is not a ConfigRecord")
    return record


def arrays_of(message: Message, key: str) -> ArrayRecord:
    from flwr.app import ArrayRecord

    record = message.content[key]
    if not isinstance(record, ArrayRecord):
        raise FederationError(f"message entry {key!r} is not an ArrayRecord")
    return record


def reason(message: Message) -> str:
    """The last line of a failed reply's error (the exception, not Ray's traceback)."""
    text = (message.error.reason or "unknown error").strip().splitlines()
    return f"node {message.metadata.src_node_id}: {text[-1][:300] if text else 'unknown error'}"


def owner_of(key: str) -> str | None:
    """The skill whose heads an array belongs to; None for shared arrays (encoder, router)."""
    for prefix in ("intent_heads.", "slot_heads."):
        if key.startswith(prefix):
            return key[len(prefix) :].rsplit(".", 1)[0]
    return None


def count_key(skill: str) -> str:
    return f"examples:{skill}"


def owned_only(arrays: Mapping[str, T], counts: Mapping[str, float]) -> dict[str, T]:
    """The arrays a client sends back: the shared ones and the heads of the skills it has
    examples of. The other skills' heads come back unchanged and the server would not count
    them (`average_by_owner`): with LoRA updates they were most of the bytes."""
    return {
        k: v for k, v in arrays.items() if (s := owner_of(k)) is None or counts[count_key(s)] > 0
    }


def average_by_owner(
    replies: Sequence[RecordDict], current: Mapping[str, np.ndarray], shared_lr: float = 1.0
) -> dict[str, np.ndarray]:
    """Each array averaged over the clients that trained it, weighted by their examples of it
    (a skill's heads: the client's examples of that skill; shared arrays: all its examples).
    An array no client trained keeps its current value. Shared arrays then move `shared_lr`
    times their averaged update from their current value (1.0: the average itself)."""
    totals: dict[str, np.ndarray] = {}
    weights: dict[str, float] = {}
    for content in replies:
        metrics = next(iter(content.metric_records.values()))
        arrays = next(iter(content.array_records.values()))
        for key, array in arrays.items():
            skill = owner_of(key)
            w = number(metrics, count_key(skill) if skill else "num-examples")
            if w <= 0:
                continue
            value = array.numpy().astype(np.float64) * w
            totals[key] = totals[key] + value if key in totals else value
            weights[key] = weights.get(key, 0.0) + w
    out = {}
    for key, value in current.items():
        if key not in totals:
            out[key] = value
            continue
        mean = totals[key] / weights[key]
        if shared_lr != 1.0 and owner_of(key) is None:
            mean = value + shared_lr * (mean - value)
        out[key] = mean.astype(value.dtype)
    return out


def sum_train_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Counts add up; loss and seconds: the example-weighted mean and the slowest client."""
    from flwr.app import MetricRecord

    rows = [next(iter(r.metric_records.values())) for r in records]
    total = sum(number(m, weight_key) for m in rows)
    loss = sum(number(m, "loss") * number(m, weight_key) for m in rows) / max(total, 1.0)
    slowest = max(number(m, "seconds") for m in rows)
    return MetricRecord({"num-examples": total, "loss": loss, "seconds_max": slowest})


def make_strategy(fed: FederationConfig, clients: int) -> Strategy:
    """Flower's strategy for `fed.strategy`, averaging each array over the clients that trained
    it (`average_by_owner`) where Flower averages every array over every client; wrapped in
    Flower's differential-privacy strategy when `dp` asks for it."""
    from flwr.serverapp.strategy import (
        DifferentialPrivacyClientSideFixedClipping,
        DifferentialPrivacyServerSideFixedClipping,
        FedAdam,
        FedAvg,
        FedProx,
    )

    class OwnedFedAvg(FedAvg):
        current: dict[str, np.ndarray]

        def configure_train(
            self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
        ) -> Iterable[Message]:
            self.current = {k: a.numpy() for k, a in arrays.items()}
            return super().configure_train(server_round, arrays, config, grid)

        def aggregate_train(
            self, server_round: int, replies: Iterable[Message]
        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
            from flwr.app import Array, ArrayRecord

            # Flower's own check wants the same arrays from every client; ours send all of
            # theirs (untouched heads too) but carry per-skill example counts.
            valid, _ = self._check_and_log_replies(replies, is_train=True, validate=False)
            if not valid:
                return None, None
            contents = [m.content for m in valid]
            averaged = average_by_owner(contents, self.current, fed.shared_server_lr)
            arrays = ArrayRecord({k: Array(v) for k, v in averaged.items()})
            return arrays, self.train_metrics_aggr_fn(contents, self.weighted_by_key)

    class OwnedFedProx(FedProx, OwnedFedAvg):
        pass

    class OwnedFedAdam(FedAdam, OwnedFedAvg):
        pass

    common: dict[str, Any] = {
        "fraction_train": 1.0,
        "fraction_evaluate": 1.0,
        "min_train_nodes": fed.min_clients,
        "min_evaluate_nodes": fed.min_clients,
        "min_available_nodes": fed.min_clients,
        "train_metrics_aggr_fn": sum_train_metrics,
    }
    strategy: FedAvg
    if fed.strategy == "fedprox":
        strategy = OwnedFedProx(proximal_mu=fed.proximal_mu, **common)
    elif fed.strategy == "fedadam":
        # Adam on the averaged update; eta_l is only reported (clients use their own rates).
        strategy = OwnedFedAdam(eta=fed.server_learning_rate, beta_1=0.9, beta_2=0.99, **common)
    else:
        strategy = OwnedFedAvg(**common)
    # Gaussian noise of std noise_multiplier · clipping_norm / clients on the averaged update,
    # each client's update clipped to clipping_norm first: by the server, or by the client
    # before it sends (`clip_when_asked`), so the server never sees an unclipped update.
    wrapper = {
        "server": DifferentialPrivacyServerSideFixedClipping,
        "client": DifferentialPrivacyClientSideFixedClipping,
    }.get(fed.dp)
    if wrapper is None:
        return strategy
    return wrapper(strategy, fed.dp_noise_multiplier, fed.dp_clipping_norm, clients)


def clip_when_asked(msg: Message, context: Context, call_next: Any) -> Message:
    """Flower's client-side clipping mod, for runs whose server asks for it (`dp: client`):
    the same ClientApp serves runs with and without it."""
    from flwr.clientapp.mod import fixedclipping_mod

    asked = any("clipping_norm" in c for c in msg.content.config_records.values())
    return fixedclipping_mod(msg, context, call_next) if asked else call_next(msg, context)


def nbytes(arrays: ArrayRecord) -> int:
    return sum(len(a.data) for a in arrays.values())


# -- the router: a linear discriminant fitted from the clients' feature statistics ----------------


def pack_symmetric(matrix: np.ndarray) -> np.ndarray:
    """The upper triangle of a symmetric matrix in float32: what a client sends of its summed
    outer products (a quarter of the float64 matrix)."""
    return matrix[np.triu_indices(len(matrix))].astype(np.float32)


def unpack_symmetric(packed: np.ndarray, dim: int) -> np.ndarray:
    matrix = np.zeros((dim, dim))
    matrix[np.triu_indices(dim)] = packed
    return matrix + np.triu(matrix, 1).T


def fit_router(
    sums: np.ndarray, counts: np.ndarray, outer: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) of a linear router from per-skill sums (S×d) and counts (S) of sentence
    vectors and their summed outer products (d×d): Gaussian classes with one shared
    covariance, priors from the counts. A skill no client holds gets -inf-like bias."""
    counts = counts.astype(np.float64)
    total = float(counts.sum())
    seen = counts > 0
    means = np.zeros_like(sums, dtype=np.float64)
    means[seen] = sums[seen] / counts[seen, None]
    within = outer - (means[seen].T * counts[seen]) @ means[seen]
    # The Mahalanobis detector's precision (nlu/ood.py), from the summed statistics.
    precision = shared_precision(within / max(total - seen.sum(), 1.0))
    weight = means @ precision
    bias = -0.5 * np.einsum("sd,sd->s", weight, means)
    bias = np.where(seen, bias + np.log(np.maximum(counts, 1.0) / max(total, 1.0)), -1e4)
    return weight, bias


def fit_quadratic_router(
    sums: np.ndarray, counts: np.ndarray, outers: np.ndarray, shrinkage: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weight, bias, curvature) of a quadratic router from per-skill sums (S×d), counts (S)
    and summed outer products (S×d×d): regularised discriminant analysis (Friedman 1989). Each
    skill is a Gaussian whose covariance is (1 - shrinkage) · its own + shrinkage · the pooled
    within-skill one. Logits: weight·x + bias - 1/2 · xᵀ curvature_s x, where curvature_s is the
    skill's precision less the pooled precision (a term every skill shares cancels in the
    softmax, so shrinkage 1 gives the linear discriminant's decisions and zero curvature).
    Skills spread differently (on MASSIVE, weather's vectors about half as wide as qa's): one
    shared covariance misjudges the narrow and the broad alike."""
    counts = counts.astype(np.float64)
    total = float(counts.sum())
    seen = counts > 0
    dim = sums.shape[1]
    means = np.zeros_like(sums, dtype=np.float64)
    means[seen] = sums[seen] / counts[seen, None]
    scatter = outers - counts[:, None, None] * np.einsum("sd,se->sde", means, means)
    pooled = scatter[seen].sum(0) / max(total - seen.sum(), 1.0)
    shared = shared_precision(pooled)
    weight = np.zeros_like(means)
    bias = np.full(len(counts), -1e4)
    curvature = np.zeros((len(counts), dim, dim))
    for s in np.flatnonzero(seen):
        own = scatter[s] / max(counts[s] - 1.0, 1.0)
        precision = shared_precision((1.0 - shrinkage) * own + shrinkage * pooled)
        precision = (precision + precision.T) / 2
        weight[s] = precision @ means[s]
        bias[s] = (
            -0.5 * means[s] @ weight[s]
            + 0.5 * np.linalg.slogdet(precision)[1]
            + np.log(counts[s] / total)
        )
        curvature[s] = precision - shared
    return weight, bias, curvature


# -- the client ------------------------------------------------------------------------------------


@dataclass
class Job:
    """What the server tells each client: the resolved config and the federation's labels."""

    config: FederatedConfig
    text: str
    labels: list[SkillLabels]
    frozen_digest: str = ""  # see `frozen_digest`

    @classmethod
    def from_record(cls, record: ConfigRecord) -> Job:
        text = str(record["job-config"])
        cfg = parse_federated_config(text, source="the server's job")
        labels = labels_from_json(str(record["job-labels"])) if "job-labels" in record else []
        return cls(cfg, text, labels, str(record.get("frozen-digest", "")))


@dataclass
class ClientData:
    name: str
    train: list[Example]
    dev: list[Example]
    owned: bool  # its own data (deployment) rather than a simulated share


_SOURCES: dict[str, TrainData] = {}


def client_data(cfg: FederatedConfig, node_config: Mapping[str, Any]) -> ClientData:
    """A deployment SuperNode's own data (`--node-config "data='PATH[,PATH]'"`), or in
    simulation this client's share of the configured data."""
    from nlu.data.loaders import load_train_dev

    student = cfg.student
    if "data" in node_config:
        sources = [s for s in str(node_config["data"]).split(",") if s]
        name = str(node_config.get("name", f"client {sources[0]}"))
        data = load_train_dev(dataclasses.replace(student.data, data=sources), seed=student.seed)
        return ClientData(name, data.train, data.dev, owned=True)
    if "partition-id" not in node_config:
        raise FederationError(
            "this SuperNode has no data: start it with --node-config \"data='PATH'\" "
            "(skill folders, JSONL files or benchmark folders)"
        )
    client = int(node_config["partition-id"])
    clients = int(node_config["num-partitions"])
    # One simulation process serves many clients of the same data: read it once.
    key = json.dumps([dataclasses.asdict(student.data), student.seed])
    if key not in _SOURCES:
        _SOURCES.clear()
        _SOURCES[key] = load_train_dev(student.data, seed=student.seed)
    data = _SOURCES[key]
    fed = cfg.federation
    return ClientData(
        name=f"client {client}",
        train=partition(data.train, fed, clients, client, student.seed),
        dev=partition(data.dev, fed, clients, client, student.seed),
        owned=fed.partition == "skill",
    )


@dataclass
class ClientState:
    """A client's data and model, kept between rounds in the process that runs it."""

    data: ClientData
    network: tuple[JointModel, Tokenizer] | None = None  # built on the first message
    # Which parameters the federation trains (the refit round freezes more for a while).
    trainable: dict[str, bool] = field(default_factory=dict)
    max_length: int = 64


_STATES: dict[tuple[int, str], ClientState] = {}


def _state(job_text: str, context: Context) -> ClientState:
    key = (zlib.crc32(job_text.encode()), json.dumps(dict(context.node_config), sort_keys=True))
    if key not in _STATES:
        import datasets

        datasets.disable_progress_bars()  # many clients share one log
        cfg = parse_federated_config(job_text, source="the server's job")
        # One federation at a time per process; in simulation one process serves many clients.
        for old in [k for k in _STATES if k[0] != key[0]]:
            del _STATES[old]
        _STATES[key] = ClientState(client_data(cfg, context.node_config))
    return _STATES[key]


def federation_model(
    cfg: FederatedConfig, labels: Sequence[SkillLabels]
) -> tuple[JointModel, Tokenizer]:
    """The network the server and every client build alike (the arrays then travel into it):
    `init_from`'s model, or a new one on the encoder; with a LoRA adapter for `updates: lora`."""
    from nlu.model import JointModel, build_model

    student = cfg.student
    tokenizer: Tokenizer
    if student.finetune.init_from:
        model, folder = JointModel.load(student.finetune.init_from)
        tokenizer = folder.tokenizer
    else:
        import torch

        # The heads' initial weights: the same for the same seed, whatever ran before here.
        with torch.random.fork_rng():
            torch.manual_seed(student.seed)
            model, tokenizer = build_model(
                encoder=student.model.encoder,
                skills=labels,
                pooling=student.model.pooling,
                dropout=student.model.dropout,
                router_input=student.model.router_input,
            )
    if cfg.federation.updates in ("lora", "lora_b"):
        import torch

        from nlu import adapters

        # Seeded: with lora_b the A matrices never travel, so each machine must build the same.
        with torch.random.fork_rng():
            torch.manual_seed(student.seed)
            adapters.wrap_for_training(
                model, rank=student.finetune.lora_rank, modules=student.finetune.lora_modules
            )
        if cfg.federation.updates == "lora_b":
            for name, param in model.encoder.named_parameters():
                if ".lora_A." in name:
                    param.requires_grad_(False)
    return model, tokenizer


def frozen_digest(model: JointModel) -> str:
    """A fingerprint of the LoRA A matrices that lora_b keeps at home ("" without them): the
    server sends its own, so a machine that built different ones stops instead of averaging
    B matrices that mean something else there."""
    import hashlib

    frozen = [
        (name, param)
        for name, param in sorted(model.named_parameters())
        if ".lora_A." in name and not param.requires_grad
    ]
    if not frozen:
        return ""
    digest = hashlib.sha256()
    for name, param in frozen:
        digest.update(name.encode())
        digest.update(param.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def _model(state: ClientState, job: Job) -> tuple[JointModel, Tokenizer]:
    if state.network is None:
        model, tokenizer = federation_model(job.config, job.labels)
        if frozen_digest(model) != job.frozen_digest:
            raise FederationError(
                "this client's frozen LoRA A matrices differ from the server's: a lora_b "
                "federation needs the same torch version on every machine (they are built "
                "from the seed)"
            )
        model.label_smoothing = job.config.student.optim.label_smoothing
        state.network, state.max_length = (model, tokenizer), job.config.student.model.max_length
        state.trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    return state.network


HEAD_PREFIXES = ("router.", "intent_heads.", "slot_heads.")


def shared_arrays(model: JointModel) -> dict[str, torch.Tensor]:
    """The arrays that travel: every floating-point tensor of the model (buffers of token ids
    stay home); with LoRA updates only the adapters that train and the heads (the frozen
    encoder, and lora_b's frozen A matrices, are the same on every machine)."""
    state = {k: v.detach() for k, v in model.state_dict().items() if v.is_floating_point()}
    if any(".lora_" in k for k in state):
        frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
        state = {
            k: v
            for k, v in state.items()
            if (".lora_" in k and k not in frozen) or k.startswith(HEAD_PREFIXES)
        }
    return state


def _load(model: JointModel, arrays: ArrayRecord) -> None:
    import torch

    state = {k: torch.from_numpy(a.numpy().copy()) for k, a in arrays.items()}
    # A quadratic router's curvature comes with the arrays to evaluate, not those to train.
    model.router.set_curvature(state.pop("router.curvature", None))
    missing = set(shared_arrays(model)) - set(state) - {"router.curvature"}
    if missing:
        raise FederationError(f"the server's arrays lack {sorted(missing)[:3]}")
    model.load_state_dict(state, strict=False)


def client_labels(msg: Message, context: Context) -> Message:
    from flwr.app import ConfigRecord, Message, RecordDict

    from nlu.labels import labels_from_examples

    job = Job.from_record(configs(msg, "config"))
    state = _state(job.text, context)
    labels = labels_from_examples(state.data.train)
    reply = ConfigRecord(
        {
            "name": state.data.name,
            "labels": labels_to_json(labels),
            "owned": state.data.owned,
            "train": len(state.data.train),
            "dev": len(state.data.dev),
        }
    )
    return Message(RecordDict({"labels": reply}), reply_to=msg)


def local_part(examples: Sequence[E], *, parts: int, round_: int, seed: int) -> list[E]:
    """The part of a client's examples that round `round_` trains on: one of `parts` disjoint
    slices of a shuffle that is the same every round, in turn (`local_parts`). One part: the
    examples as they are (the batches are shuffled anyway)."""
    if parts == 1:
        return list(examples)
    order = random.Random(seed).sample(range(len(examples)), len(examples))
    return [examples[i] for i in order[(round_ - 1) % parts :: parts]]


def client_train(msg: Message, context: Context) -> Message:
    """One round of local training: the recipe's batches, loss weighting and training pass."""
    import torch
    from accelerate import Accelerator
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    from nlu.mtl import LossWeighting
    from nlu.train import ModelSetup, param_groups, run_epoch, setup_batches

    config = configs(msg, "config")
    job = Job.from_record(config)
    state = _state(job.text, context)
    model, tokenizer = _model(state, job)
    _load(model, arrays_of(msg, "arrays"))
    cfg, fed = job.config.student, job.config.federation
    round_, rounds = int(number(config, "server-round")), fed.rounds
    heads_only = "heads-only" in config
    epochs = fed.head_refit_epochs if heads_only else fed.local_epochs
    train_router = fed.router == "trained" and not heads_only
    # The refit round moves the heads alone; the federation's flags go back after it (and
    # before any round, should one have failed mid-way): `shared_arrays` reads them.
    for name, param in model.named_parameters():
        param.requires_grad_(owner_of(name) is not None if heads_only else state.trainable[name])
    model.router.requires_grad_(train_router)
    # Dropout draws from the global generator, which other clients in this process (and
    # earlier federations) have used: seeded per client and round, a federation repeats.
    torch.manual_seed(cfg.seed + 1009 * round_ + zlib.crc32(state.data.name.encode()) % 1009)
    model.train()
    if heads_only:
        model.encoder.eval()  # the features the final model will read: no dropout
    setup = ModelSetup(model, tokenizer, state.max_length, save=lambda *_: None)
    # With a fitted router the out-of-scope examples would train nothing here.
    examples = [e for e in state.data.train if train_router or e.in_scope]
    if not heads_only:
        examples = local_part(examples, parts=fed.local_parts, round_=round_, seed=cfg.seed)
    loader, _ = setup_batches(
        examples,
        setup,
        batch_size=cfg.optim.batch_size,
        mtl=cfg.mtl,
        epochs=epochs,
        seed=cfg.seed + round_,
    )
    weighting = LossWeighting.from_config(
        cfg.mtl,
        model.task_names(),
        train_router=train_router,
        negatives=any(not e.in_scope for e in examples),
    )
    groups = param_groups(
        model,
        learning_rate=cfg.optim.learning_rate,
        head_learning_rate=cfg.optim.head_learning_rate,
        weight_decay=cfg.optim.weight_decay,
        layer_lr_decay=cfg.optim.layer_lr_decay,
    )
    optimizer = torch.optim.AdamW(groups)
    steps = max(1, len(loader) * epochs)

    # One linear decay over the whole federation: round r starts where round r-1 stopped.
    # The refit round decays on its own, from the heads' full rate.
    def decay(step: int) -> float:
        if heads_only:
            return max(0.0, 1.0 - step / steps)
        return max(0.0, 1.0 - ((round_ - 1) + step / steps) / rounds)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, decay)
    accelerator = Accelerator(gradient_accumulation_steps=1)
    model_p, optimizer_p, batches, scheduler_p = accelerator.prepare(
        model, optimizer, loader, scheduler
    )
    loss_hook = None
    mu = number(config, "proximal-mu") if "proximal-mu" in config else 0.0
    if mu > 0:
        anchor = [p.detach().clone() for p in model.parameters() if p.requires_grad]

        def loss_hook(output: Any, soft: Any, loss: torch.Tensor) -> torch.Tensor:
            trained = [p for p in model.parameters() if p.requires_grad]
            drift = torch.stack(
                [((p - a) ** 2).sum() for p, a in zip(trained, anchor, strict=True)]
            )
            return loss + 0.5 * mu * drift.sum()

    losses: list[float] = []
    seconds = 0.0
    for epoch in range(epochs):
        batches.set_epoch(epoch)
        loss, _, s = run_epoch(
            accelerator,
            model_p,
            batches,
            optimizer_p,
            scheduler_p,
            weighting,
            weighting,
            max_grad_norm=cfg.optim.max_grad_norm,
            desc=f"{state.data.name} round {round_}/{rounds}",
            distill=loss_hook,
            progress=False,  # many clients share one log: the server logs each round
        )
        losses.append(loss)
        seconds += s
    model.eval()
    counts = {count_key(s.name): 0.0 for s in job.labels}
    for e in state.data.train:
        if e.skill is not None:
            counts[count_key(e.skill)] += 1.0
    for name, param in model.named_parameters():
        param.requires_grad_(state.trainable[name])
    # Flower's DP clipping compares whole models, array by array: under DP, every array.
    sent = shared_arrays(model)
    if fed.dp == "none":
        sent = owned_only(sent, counts)
        if heads_only:  # nothing else moved
            sent = {k: v for k, v in sent.items() if owner_of(k) is not None}
    arrays = ArrayRecord(sent)
    metrics = MetricRecord(
        {
            "num-examples": float(len(state.data.train)),
            "loss": float(losses[-1]),
            "seconds": round(seconds, 2),
            **counts,
        }
    )
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


def sentence_vectors(
    train: Sequence[Example], model: JointModel, tokenizer: Tokenizer, max_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """(router input vectors, skill ids) of the client's in-scope training examples."""
    import torch

    from nlu.alignment import pad_id
    from nlu.features import collate, featurize

    examples = [e for e in train if e.in_scope]
    features = featurize(examples, tokenizer=tokenizer, index=model.index, max_length=max_length)
    padding = pad_id(tokenizer)
    vectors, skills = [], []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(features), 64):
            rows = [features[i] for i in range(start, min(start + 64, len(features)))]
            batch = collate(rows, pad_id=padding)
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            vectors.append(out.routed.double().numpy())
            skills.append(batch["skill_ids"].numpy())
    if not vectors:
        return np.zeros((0, model.encoder_config.hidden_size)), np.zeros(0, dtype=int)
    return np.concatenate(vectors), np.concatenate(skills)


def client_stats(msg: Message, context: Context) -> Message:
    """Feature statistics for the router: sums, counts, summed outer products. Aggregates over
    a client's examples, not the examples."""
    from flwr.app import ArrayRecord, Message, RecordDict

    job = Job.from_record(configs(msg, "config"))
    state = _state(job.text, context)
    model, tokenizer = _model(state, job)
    _load(model, arrays_of(msg, "arrays"))
    vectors, skills = sentence_vectors(state.data.train, model, tokenizer, state.max_length)
    n_skills, dim = len(job.labels), vectors.shape[1]
    sums = np.zeros((n_skills, dim))
    np.add.at(sums, skills, vectors)
    counts = np.bincount(skills, minlength=n_skills).astype(np.float64)
    if job.config.federation.router == "qda":
        # One matrix per skill this client holds, in the skills' order (the server reads the
        # counts to place them); none for the skills it lacks.
        held = np.flatnonzero(counts)
        outer = np.array(
            [pack_symmetric(vectors[skills == s].T @ vectors[skills == s]) for s in held],
            dtype=np.float32,
        ).reshape(len(held), dim * (dim + 1) // 2)
    else:
        outer = pack_symmetric(vectors.T @ vectors)
    stats = ArrayRecord([sums.astype(np.float32), counts, outer])
    return Message(RecordDict({"stats": stats}), reply_to=msg)


def client_evaluate(msg: Message, context: Context) -> Message:
    """The global model on the client's held-out examples, through the serving code path."""
    from flwr.app import Message, MetricRecord, RecordDict

    from nlu.evaluate import score
    from nlu.predict import Parser, torch_forward

    job = Job.from_record(configs(msg, "config"))
    state = _state(job.text, context)
    model, tokenizer = _model(state, job)
    _load(model, arrays_of(msg, "arrays"))
    model.eval()
    dev = state.data.dev
    parser = Parser(
        forward=torch_forward(model),
        skills=model.skills,
        tokenizer=tokenizer,
        max_length=state.max_length,
        backend="torch",
    )
    predictions = parser.parse([e.text for e in dev])
    keys = ("intent_accuracy", "slot_f1", "exact_match", "router_accuracy")
    overall = score(dev, predictions, tokenizer=tokenizer)["overall"] if dev else {}
    metrics = MetricRecord(
        {"num-examples": float(len(dev)), **{k: float(overall.get(k, 0.0)) for k in keys}}
    )
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


def make_client_app() -> ClientApp:
    from flwr.clientapp import ClientApp

    app = ClientApp()
    app.query("labels")(client_labels)
    app.query("stats")(client_stats)
    app.train(mods=[clip_when_asked])(client_train)
    app.evaluate()(client_evaluate)
    return app


# -- the server ------------------------------------------------------------------------------------


@dataclass
class FederatedResult:
    model_dir: Path
    history: list[dict[str, Any]]
    labels: list[str]
    clients: dict[str, dict[str, Any]]
    seconds: float


def _wait_for_clients(grid: Grid, expected: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(nodes := list(grid.get_node_ids())) < expected:
        if time.monotonic() > deadline:
            raise FederationError(
                f"{len(nodes)} of {expected} clients connected in {timeout:.0f} s; start the "
                "missing SuperNodes or lower clients="
            )
        time.sleep(0.5)
    return nodes


def _ask(
    grid: Grid, nodes: Sequence[int], kind: str, content: RecordDict, timeout: float
) -> tuple[list[Message], list[str]]:
    """Send one message to each node; (answers, a line per client that failed)."""
    from flwr.app import Message

    messages = [Message(content, message_type=kind, dst_node_id=n) for n in nodes]
    return _exchange(grid, messages, timeout)


def _exchange(
    grid: Grid, messages: Sequence[Message], timeout: float
) -> tuple[list[Message], list[str]]:
    """Send the messages and wait; (answers, a line per client that failed or did not answer)."""
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    ok = [r for r in replies if not r.has_error()]
    failed = [reason(r) for r in replies if r.has_error()]
    answered = {r.metadata.src_node_id for r in replies}
    failed += [
        f"node {m.metadata.dst_node_id}: no answer in {timeout:.0f} s"
        for m in messages
        if m.metadata.dst_node_id not in answered
    ]
    return ok, failed


def _fit_router_round(
    grid: Grid, arrays: ArrayRecord, job: ConfigRecord, fed: FederationConfig, round_: int
) -> tuple[ArrayRecord, np.ndarray | None, int, int]:
    """The router fitted from every client's feature statistics under `arrays`' encoder:
    (arrays with the fitted router, its curvature with router: qda, bytes down, bytes up).
    The curvature stays out of the arrays that train: clients do not train a fitted router,
    so only the evaluation and the saved model need it."""
    from flwr.app import Array, ConfigRecord, MessageType, RecordDict

    content = RecordDict({"config": ConfigRecord(dict(job)), "arrays": arrays})
    got, missed = _ask(
        grid, list(grid.get_node_ids()), f"{MessageType.QUERY}.stats", content, fed.round_timeout_s
    )
    if not got:
        raise FederationError(f"round {round_}: no client sent router statistics: {missed}")
    parts = [arrays_of(r, "stats").to_numpy_ndarrays() for r in got]
    sums, counts = (np.sum([p[i].astype(np.float64) for p in parts], axis=0) for i in range(2))
    dim = sums.shape[1]
    curvature = None
    if fed.router == "qda":
        outers = np.zeros((len(counts), dim * (dim + 1) // 2))
        for part in parts:
            outers[np.flatnonzero(part[1])] += part[2].astype(np.float64)
        full = np.stack([unpack_symmetric(row, dim) for row in outers])
        weight, bias, curvature = fit_quadratic_router(sums, counts, full, fed.router_shrinkage)
    else:
        packed = np.sum([p[2].astype(np.float64) for p in parts], axis=0)
        weight, bias = fit_router(sums, counts, unpack_symmetric(packed, dim))
    arrays["router.weight"] = Array(weight.astype(np.float32))
    arrays["router.bias"] = Array(bias.astype(np.float32))
    down = nbytes(arrays) * len(got)
    up = sum(nbytes(arrays_of(r, "stats")) for r in got)
    return arrays, None if curvature is None else curvature.astype(np.float32), down, up


def with_curvature(arrays: ArrayRecord, curvature: np.ndarray | None) -> ArrayRecord:
    """The arrays a client evaluates and the saved model holds: the trained ones, plus a
    quadratic router's curvature (`router: qda`), which the training rounds leave out."""
    from flwr.app import Array, ArrayRecord

    if curvature is None:
        return arrays
    return ArrayRecord({**arrays, "router.curvature": Array(curvature)})


def run_server(
    grid: Grid, cfg: FederatedConfig, expected: int, output_dir: Path
) -> FederatedResult:
    """Label check, then rounds of train -> aggregate -> fit the router -> evaluate (and the
    heads' refit round, if asked); the model folder and the per-round history at the end
    (history also after each round)."""
    from flwr.app import ArrayRecord, ConfigRecord, MessageType, RecordDict

    from nlu import modeldir

    fed, student = cfg.federation, cfg.student
    started = time.perf_counter()
    text = dump_federated_config(cfg)
    nodes = _wait_for_clients(grid, expected, fed.connect_timeout_s)

    # Before round 1: every client's label names (no data), checked and merged.
    ask = RecordDict({"config": ConfigRecord({"job-config": text})})
    answers, failed = _ask(grid, nodes, f"{MessageType.QUERY}.labels", ask, fed.round_timeout_s)
    if failed:
        raise FederationError("clients failed before round 1: " + "; ".join(failed))
    info: dict[str, ConfigRecord] = {}
    for r in answers:
        name = str(configs(r, "labels")["name"])
        if name in info:  # two SuperNodes with one name: keep both, told apart by node id
            name = f"{name} (node {r.metadata.src_node_id})"
        info[name] = configs(r, "labels")
    reported = {name: labels_from_json(str(row["labels"])) for name, row in info.items()}
    owned = all(bool(row["owned"]) for row in info.values())
    if student.finetune.init_from:
        # Only its labels here (federation_model loads the weights once, below); a missing or
        # damaged folder is still named before any client trains.
        init_dir = modeldir.locate(student.finetune.init_from)
        modeldir.check(init_dir, "torch")
        base = modeldir.read_meta(init_dir).skills
        labels = merge_labels(
            reported, owned=owned, fixed=base, fixed_from=student.finetune.init_from
        )
    else:
        labels = merge_labels(reported, owned=owned)
    model, tokenizer = federation_model(cfg, labels)
    clients = {
        name: {
            "train": int(number(row, "train")),
            "dev": int(number(row, "dev")),
            "skills": [s.name for s in reported[name]],
        }
        for name, row in info.items()
    }
    logger.info("%d clients, %d skills: %s", len(clients), len(labels), clients)
    few = [
        f"{name} ({number(row, 'train'):.0f})"
        for name, row in info.items()
        if number(row, "train") < fed.local_parts
    ]
    if few:
        raise FederationError(
            f"local_parts={fed.local_parts} splits each client's training data into that many "
            f"parts, but these clients hold fewer examples: {', '.join(few)}; lower local_parts"
        )
    job = ConfigRecord(
        {
            "job-config": text,
            "job-labels": labels_to_json(labels),
            "frozen-digest": frozen_digest(model),
        }
    )
    arrays = ArrayRecord(shared_arrays(model))
    strategy = make_strategy(fed, len(nodes))
    history: list[dict[str, Any]] = []
    curvature: np.ndarray | None = None  # router: qda's, fitted after each round
    # The rounds, then (head_refit_epochs) one more in which the clients refit their heads on
    # the final encoder.
    for round_ in range(1, fed.rounds + 1 + (fed.head_refit_epochs > 0)):
        t0 = time.perf_counter()
        heads_only = round_ > fed.rounds
        train_config = ConfigRecord(dict(job) | ({"heads-only": True} if heads_only else {}))
        messages = list(strategy.configure_train(round_, arrays, train_config, grid))
        ok, failures = _exchange(grid, messages, fed.round_timeout_s)
        if len(ok) < fed.min_clients:
            raise FederationError(
                f"round {round_}: {len(ok)} of {len(messages)} clients answered, min_clients="
                f"{fed.min_clients}: {'; '.join(failures) or 'no answers'}"
            )
        if failures:
            logger.warning("round %d goes on without: %s", round_, "; ".join(failures))
        down = nbytes(arrays) * len(messages)
        up = sum(nbytes(arrays_of(r, "arrays")) for r in ok)
        new_arrays, train_metrics = strategy.aggregate_train(round_, ok)
        if new_arrays is not None:
            arrays = new_arrays
        train_seconds = time.perf_counter() - t0
        router_seconds = 0.0
        # In the refit the encoder stays put (unless DP's noise moved it): the router holds.
        if fed.router != "trained" and not (heads_only and fed.dp == "none"):
            t1 = time.perf_counter()
            arrays, curvature, router_down, router_up = _fit_router_round(
                grid, arrays, job, fed, round_
            )
            down, up = down + router_down, up + router_up
            router_seconds = time.perf_counter() - t1
        eval_messages = list(
            strategy.configure_evaluate(
                round_, with_curvature(arrays, curvature), ConfigRecord(dict(job)), grid
            )
        )
        # Counted since it is the router's: the evaluation's other arrays are not.
        down += int(curvature.nbytes if curvature is not None else 0) * len(eval_messages)
        evaluated, eval_failures = _exchange(grid, eval_messages, fed.round_timeout_s)
        if eval_failures:
            logger.warning("round %d: dev scores without: %s", round_, "; ".join(eval_failures))
        dev = strategy.aggregate_evaluate(round_, evaluated)
        per_client = {
            str(r.metadata.src_node_id): dict(r.content.metric_records["metrics"])
            for r in evaluated
        }
        record = {
            "round": round_,
            "phase": "heads" if heads_only else "train",
            "clients_trained": len(ok),
            "failures": failures,
            "eval_failures": eval_failures,
            "train": dict(train_metrics) if train_metrics else {},
            "dev": {k: round(number(dev, k), 2) for k in dev} if dev else {},
            "dev_per_node": per_client,
            "bytes_down": down,
            "bytes_up": up,
            "seconds": round(time.perf_counter() - t0, 1),
            "train_seconds": round(train_seconds, 1),
            "router_seconds": round(router_seconds, 1),
        }
        history.append(record)
        logger.info("round %d: %s", round_, json.dumps({k: record[k] for k in ("dev", "seconds")}))
        write_history(output_dir, history, clients)

    _load(model, with_curvature(arrays, curvature))  # the model the clients evaluated last
    if fed.updates != "full":  # an ordinary model folder: the adapter merged into the encoder
        from nlu import adapters

        model = adapters.merged_copy(model)
    model.eval()
    folder = model.to_folder(
        tokenizer=tokenizer, max_length=student.model.max_length, training_config=text
    )
    folder.metrics = {"rounds": fed.rounds, "dev": history[-1]["dev"] if history else None}
    model_dir = output_dir / "model"
    modeldir.save(model_dir, folder)
    plot_history(history, output_dir / PLOT_FILE)
    return FederatedResult(
        model_dir=model_dir,
        history=history,
        labels=[s.name for s in labels],
        clients=clients,
        seconds=round(time.perf_counter() - started, 1),
    )


def write_history(output_dir: Path, history: list[dict[str, Any]], clients: dict[str, Any]) -> None:
    path = output_dir / HISTORY_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"clients": clients, "rounds": history}, indent=2) + "\n")
    os.replace(tmp, path)


def plot_history(history: Sequence[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [h["round"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in ("exact_match", "intent_accuracy", "slot_f1", "router_accuracy"):
        ax.plot(rounds, [h["dev"].get(key, math.nan) for h in history], marker="o", label=key)
    ax.set_xlabel("round")
    ax.set_ylabel("clients' dev (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def make_server_app(cfg: FederatedConfig, expected: int, outcome: dict[str, Any]) -> ServerApp:
    from flwr.serverapp import ServerApp

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        # The simulation engine logs and swallows a ServerApp's exceptions: keep it for the
        # caller, who raises it.
        try:
            outcome["result"] = run_server(grid, cfg, expected, Path(cfg.student.output.output_dir))
        except BaseException as err:
            outcome["error"] = err

    return app


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
    from nlu.model import check_encoder
    from nlu.train import setup_run

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
    (out / "config.yaml").write_text(dump_federated_config(cfg))
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
