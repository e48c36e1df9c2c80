"""The ServerApp: rounds of training, the router's fit, evaluation, and the saved model."""

from __future__ import annotations

import json
import logging
import math
import os
import time
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nlu.config import dump

if typing.TYPE_CHECKING:
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import Strategy

    from nlu.labels import SkillLabels
    from nlu.model.alignment import Tokenizer
    from nlu.model.joint import JointModel

from nlu.federated.arrays import federation_model, frozen_digest, load_arrays, shared_arrays
from nlu.federated.config import (
    HISTORY_FILE,
    PLOT_FILE,
    FederatedConfig,
    FederationConfig,
    FederationError,
)
from nlu.federated.messages import arrays_of, configs, make_strategy, nbytes, number, reason
from nlu.federated.partition import labels_from_json, labels_to_json, merge_labels
from nlu.federated.router import fit_quadratic_router, fit_router, unpack_symmetric

logger = logging.getLogger(__name__)

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
    from flwr.app import ArrayRecord, ConfigRecord

    fed = cfg.federation
    started = time.perf_counter()
    text = dump(cfg)
    nodes = _wait_for_clients(grid, expected, fed.connect_timeout_s)
    labels, clients = federation_labels(grid, nodes, cfg, text)
    model, tokenizer = federation_model(cfg, labels)
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
        arrays, curvature, record = run_round(grid, strategy, arrays, curvature, job, fed, round_)
        history.append(record)
        logger.info("round %d: %s", round_, json.dumps({k: record[k] for k in ("dev", "seconds")}))
        write_history(output_dir, history, clients)

    load_arrays(model, with_curvature(arrays, curvature))  # the model the clients evaluated last
    model_dir = save_model(model, tokenizer, cfg, text, history, output_dir)
    plot_history(history, output_dir / PLOT_FILE)
    return FederatedResult(
        model_dir=model_dir,
        history=history,
        labels=[s.name for s in labels],
        clients=clients,
        seconds=round(time.perf_counter() - started, 1),
    )


def federation_labels(
    grid: Grid, nodes: list[int], cfg: FederatedConfig, text: str
) -> tuple[list[SkillLabels], dict[str, Any]]:
    """Before round 1: every client's label names (no data), checked and merged into the
    federation's label space; and what each client holds."""
    from flwr.app import ConfigRecord, MessageType, RecordDict

    from nlu.model import modeldir

    fed, student = cfg.federation, cfg.student
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
        # Only its labels here (federation_model loads the weights once); a missing or damaged
        # folder is still named before any client trains.
        init_dir = modeldir.locate(student.finetune.init_from)
        modeldir.check(init_dir, "torch")
        base = modeldir.read_meta(init_dir).skills
        labels = merge_labels(
            reported, owned=owned, fixed=base, fixed_from=student.finetune.init_from
        )
    else:
        labels = merge_labels(reported, owned=owned)
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
    return labels, clients


def run_round(
    grid: Grid,
    strategy: Strategy,
    arrays: ArrayRecord,
    curvature: np.ndarray | None,
    job: ConfigRecord,
    fed: FederationConfig,
    round_: int,
) -> tuple[ArrayRecord, np.ndarray | None, dict[str, Any]]:
    """One round: train and aggregate, fit the router, evaluate; the new arrays and curvature
    and the round's record (clients, failures, dev scores, bytes, seconds)."""
    from flwr.app import ConfigRecord

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
    record = {
        "round": round_,
        "phase": "heads" if heads_only else "train",
        "clients_trained": len(ok),
        "failures": failures,
        "eval_failures": eval_failures,
        "train": dict(train_metrics) if train_metrics else {},
        "dev": {k: round(number(dev, k), 2) for k in dev} if dev else {},
        "dev_per_node": {
            str(r.metadata.src_node_id): dict(r.content.metric_records["metrics"])
            for r in evaluated
        },
        "bytes_down": down,
        "bytes_up": up,
        "seconds": round(time.perf_counter() - t0, 1),
        "train_seconds": round(train_seconds, 1),
        "router_seconds": round(router_seconds, 1),
    }
    return arrays, curvature, record


def save_model(
    model: JointModel,
    tokenizer: Tokenizer,
    cfg: FederatedConfig,
    text: str,
    history: list[dict[str, Any]],
    output_dir: Path,
) -> Path:
    """The federation's model as an ordinary model folder (a LoRA adapter merged)."""
    from nlu.model import modeldir

    if cfg.federation.updates != "full":
        from nlu.model import adapters

        model = adapters.merged_copy(model)
    model.eval()
    folder = model.to_folder(
        tokenizer=tokenizer, max_length=cfg.student.model.max_length, training_config=text
    )
    folder.metrics = {
        "rounds": cfg.federation.rounds,
        "dev": history[-1]["dev"] if history else None,
    }
    model_dir = output_dir / "model"
    modeldir.save(model_dir, folder)
    return model_dir


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
