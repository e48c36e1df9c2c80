"""The ClientApp: a client's data, model and job; its label names, training rounds (the
training engine's `run_epoch`), feature statistics and evaluation."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import typing
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from nlu.config import parse
from nlu.labels import SkillLabels
from nlu.schema import Example

if typing.TYPE_CHECKING:
    import torch
    from flwr.app import ConfigRecord, Context, Message
    from flwr.clientapp import ClientApp

    from nlu.data.loaders import TrainData
    from nlu.model.alignment import Tokenizer
    from nlu.model.joint import JointModel
    from nlu.model.modeldir import ModelFolder
    from nlu.training.engine import LossHook

from nlu.federated.arrays import federation_model, frozen_digest, load_arrays, shared_arrays
from nlu.federated.config import FederatedConfig, FederationError
from nlu.federated.messages import (
    arrays_of,
    clip_when_asked,
    configs,
    count_key,
    number,
    owned_only,
    owner_of,
)
from nlu.federated.partition import labels_from_json, labels_to_json, partition
from nlu.federated.router import pack_symmetric

logger = logging.getLogger(__name__)

E = TypeVar("E")

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
        cfg = parse(FederatedConfig, text, source="the server's job")
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
        cfg = parse(FederatedConfig, job_text, source="the server's job")
        # One federation at a time per process; in simulation one process serves many clients.
        for old in [k for k in _STATES if k[0] != key[0]]:
            del _STATES[old]
        _STATES[key] = ClientState(client_data(cfg, context.node_config))
    return _STATES[key]


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


def _no_folder(training_config: str, metrics: dict[str, Any] | None) -> ModelFolder:
    raise RuntimeError("a federated client does not save a model folder; the server does")


def client_train(msg: Message, context: Context) -> Message:
    """One round of local training: the recipe's batches, loss weighting and training pass."""
    from accelerate import Accelerator
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    from nlu.training.engine import ModelSetup, run_epoch, setup_batches
    from nlu.training.mtl import LossWeighting

    config = configs(msg, "config")
    job = Job.from_record(config)
    state = _state(job.text, context)
    model, tokenizer = _model(state, job)
    load_arrays(model, arrays_of(msg, "arrays"))
    cfg, fed = job.config.student, job.config.federation
    round_ = int(number(config, "server-round"))
    heads_only = "heads-only" in config
    epochs = fed.head_refit_epochs if heads_only else fed.local_epochs
    train_router = fed.router == "trained" and not heads_only
    _ready_for_round(model, state, job, round_, heads_only=heads_only, train_router=train_router)
    # A client never saves (the server does), so the setup's folder builder is never called.
    setup = ModelSetup(model, tokenizer, state.max_length, folder=_no_folder)
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
    optimizer, scheduler = round_optimizer(
        model, job, steps=max(1, len(loader) * epochs), round_=round_, heads_only=heads_only
    )
    accelerator = Accelerator(gradient_accumulation_steps=1)
    model_p, optimizer_p, batches, scheduler_p = accelerator.prepare(
        model, optimizer, loader, scheduler
    )
    mu = number(config, "proximal-mu") if "proximal-mu" in config else 0.0
    loss_hook = proximal_term(model, mu) if mu > 0 else None
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
            desc=f"{state.data.name} round {round_}/{fed.rounds}",
            loss_hook=loss_hook,
            progress=False,  # many clients share one log: the server logs each round
        )
        losses.append(loss)
        seconds += s
    model.eval()
    sent, counts = _reply_arrays(model, state, job, heads_only=heads_only)
    metrics = MetricRecord(
        {
            "num-examples": float(len(state.data.train)),
            "loss": float(losses[-1]),
            "seconds": round(seconds, 2),
            **counts,
        }
    )
    return Message(RecordDict({"arrays": ArrayRecord(sent), "metrics": metrics}), reply_to=msg)


def _ready_for_round(
    model: JointModel,
    state: ClientState,
    job: Job,
    round_: int,
    *,
    heads_only: bool,
    train_router: bool,
) -> None:
    """Which parameters train this round, the round's dropout seed, train mode."""
    import torch

    # The refit round moves the heads alone; the federation's flags go back after it (and
    # before any round, should one have failed mid-way): `shared_arrays` reads them.
    for name, param in model.named_parameters():
        param.requires_grad_(owner_of(name) is not None if heads_only else state.trainable[name])
    model.router.requires_grad_(train_router)
    # Dropout draws from the global generator, which other clients in this process (and
    # earlier federations) have used: seeded per client and round, a federation repeats.
    seed = job.config.student.seed
    torch.manual_seed(seed + 1009 * round_ + zlib.crc32(state.data.name.encode()) % 1009)
    model.train()
    if heads_only:
        model.encoder.eval()  # the features the final model will read: no dropout


def round_optimizer(
    model: JointModel, job: Job, *, steps: int, round_: int, heads_only: bool
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over the engine's parameter groups, with one linear decay over the whole
    federation: round r starts where round r-1 stopped. The refit round decays on its own,
    from the heads' full rate."""
    import torch

    from nlu.training.optim import configured_groups

    rounds = job.config.federation.rounds
    groups = configured_groups(job.config.student.optim, model)
    optimizer = torch.optim.AdamW(groups)

    def decay(step: int) -> float:
        if heads_only:
            return max(0.0, 1.0 - step / steps)
        return max(0.0, 1.0 - ((round_ - 1) + step / steps) / rounds)

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, decay)


def proximal_term(model: JointModel, mu: float) -> LossHook:
    """FedProx: the loss plus mu/2 times the squared distance of the trained parameters from
    where the round started."""
    import torch

    anchor = [p.detach().clone() for p in model.parameters() if p.requires_grad]

    def hook(output: Any, soft: Any, loss: torch.Tensor) -> torch.Tensor:
        trained = [p for p in model.parameters() if p.requires_grad]
        drift = torch.stack([((p - a) ** 2).sum() for p, a in zip(trained, anchor, strict=True)])
        return loss + 0.5 * mu * drift.sum()

    return hook


def _reply_arrays(
    model: JointModel, state: ClientState, job: Job, *, heads_only: bool
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The arrays this client sends back (its own skills' heads and the shared ones) and its
    examples per skill, which weigh its heads in the average."""
    counts = {count_key(s.name): 0.0 for s in job.labels}
    for e in state.data.train:
        if e.skill is not None:
            counts[count_key(e.skill)] += 1.0
    for name, param in model.named_parameters():
        param.requires_grad_(state.trainable[name])
    # Flower's DP clipping compares whole models, array by array: under DP, every array.
    sent = shared_arrays(model)
    if job.config.federation.dp == "none":
        sent = owned_only(sent, counts)
        if heads_only:  # nothing else moved
            sent = {k: v for k, v in sent.items() if owner_of(k) is not None}
    return sent, counts


def sentence_vectors(
    train: Sequence[Example], model: JointModel, tokenizer: Tokenizer, max_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """(router input vectors, skill ids) of the client's in-scope training examples."""
    import torch

    from nlu.model.alignment import pad_id
    from nlu.model.features import collate, featurize

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
    load_arrays(model, arrays_of(msg, "arrays"))
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

    from nlu.evaluation.metrics import score
    from nlu.inference.parser import Parser, torch_forward

    job = Job.from_record(configs(msg, "config"))
    state = _state(job.text, context)
    model, tokenizer = _model(state, job)
    load_arrays(model, arrays_of(msg, "arrays"))
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
