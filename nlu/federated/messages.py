"""What travels between server and clients: reading message records, per-owner averaging,
the Flower strategy with its differential-privacy wrappers, byte counts."""

from __future__ import annotations

import logging
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

if typing.TYPE_CHECKING:
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.serverapp import Grid
    from flwr.serverapp.strategy import FedAvg, Strategy

from nlu.federated.config import FederationConfig, FederationError

logger = logging.getLogger(__name__)

T = TypeVar("T")

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
