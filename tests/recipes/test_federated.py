"""Federated training on Flower (nlu.federated): partitions, the label check, per-owner
averaging, the fitted router, and whole federations in Flower's simulation engine."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nlu.config import ConfigError, build
from nlu.data.loaders import load_train_dev
from nlu.evaluation.metrics import score
from nlu.federated.config import (
    FederatedConfig,
    FederationConfig,
    FederationError,
)
from nlu.federated.messages import average_by_owner, count_key, owned_only
from nlu.federated.partition import merge_labels, partition
from nlu.federated.router import fit_router
from nlu.inference.parser import Parser
from nlu.labels import SkillLabels
from nlu.schema import Example
from tests.helpers import FIXTURES, ROOT, TINY, fed_config

TIMER = FIXTURES / "timer.jsonl"


def examples(n_per_intent: int = 40) -> list[Example]:
    rows = []
    for skill, intents in {"a": ["x", "y", "z"], "b": ["u", "v"], "c": ["w"]}.items():
        for intent in intents:
            rows += [
                Example(text=f"{skill} {intent} {i}", skill=skill, intent=intent)
                for i in range(n_per_intent)
            ]
    return rows


# -- partitions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["skill", "iid", "dirichlet"])
def test_partitions_cover_every_example_once(mode: str) -> None:
    data = examples()
    fed = FederationConfig(partition=mode, dirichlet_alpha=0.5)  # type: ignore[arg-type]
    clients = 3
    parts = [partition(data, fed, clients, c, seed=0) for c in range(clients)]
    texts = [e.text for p in parts for e in p]
    assert sorted(texts) == sorted(e.text for e in data)  # each once, none lost
    assert parts == [partition(data, fed, clients, c, seed=0) for c in range(clients)]
    if mode == "skill":
        assert [sorted({e.skill for e in p if e.skill}) for p in parts] == [["a"], ["b"], ["c"]]
    if mode == "iid":  # every intent spread evenly
        for p in parts:
            assert set(Counter(e.intent for e in p).values()) <= {13, 14}  # 40 / 3 each


def test_dirichlet_shares_are_uneven_and_the_same_for_train_and_dev() -> None:
    fed = FederationConfig(partition="dirichlet", dirichlet_alpha=0.1)
    train, dev = examples(200), examples(50)
    clients = 4
    share_train = (
        np.array(
            [
                [sum(e.intent == i for e in partition(train, fed, clients, c, 0)) for i in "xyzuvw"]
                for c in range(clients)
            ]
        )
        / 200
    )
    share_dev = (
        np.array(
            [
                [sum(e.intent == i for e in partition(dev, fed, clients, c, 0)) for i in "xyzuvw"]
                for c in range(clients)
            ]
        )
        / 50
    )
    assert share_train.max() > 0.6  # alpha 0.1: most of an intent on one client
    assert np.abs(share_train - share_dev).max() <= 0.05  # dev follows the client's shares


# -- labels ----------------------------------------------------------------------------------------


def test_local_parts_take_turns_and_cover_the_data_once_per_cycle() -> None:
    from nlu.federated.client import local_part

    data = list(range(11))
    cycle = [local_part(data, parts=3, round_=r, seed=0) for r in (1, 2, 3)]
    assert sorted(x for part in cycle for x in part) == data
    assert [len(p) for p in cycle] == [4, 4, 3]
    # The same shuffle every round: round 4 repeats round 1's part, in the same order.
    assert local_part(data, parts=3, round_=4, seed=0) == cycle[0]
    assert local_part(data, parts=1, round_=5, seed=0) == data


def skill(name: str, intents: list[str], slots: list[str] | None = None) -> SkillLabels:
    return SkillLabels(name=name, intents=intents, slots=slots or [])


def test_owners_of_one_skill_must_agree_on_its_labels() -> None:
    reported = {
        "client 0": [skill("alarm", ["set", "cancel"])],
        "client 1": [skill("alarm", ["set", "snooze"])],
    }
    with pytest.raises(FederationError) as err:
        merge_labels(reported, owned=True)
    message = str(err.value)
    assert "'alarm'" in message and "client 0" in message and "client 1" in message
    assert "snooze" in message and "cancel" in message
    # Shards of one data set may each miss a rare intent: their union is the label space.
    merged = merge_labels(reported, owned=False)
    assert [(s.name, s.intents) for s in merged] == [("alarm", ["cancel", "set", "snooze"])]


def test_a_client_label_outside_a_fixed_label_space_is_named() -> None:
    fixed = [skill("lights", ["on", "off"], ["room"])]
    reported = {
        "client 0": [skill("lights", ["on"], ["room"])],
        "client 1": [skill("lights", ["on", "dim"]), skill("timer", ["set"])],
    }
    with pytest.raises(FederationError) as err:
        merge_labels(reported, owned=True, fixed=fixed, fixed_from="base-model")
    message = str(err.value)
    assert "client 1: skill 'timer'" in message and "client 1: intent lights/dim" in message
    assert "client 0" not in message


# -- aggregation -----------------------------------------------------------------------------------


def reply(arrays: dict[str, np.ndarray], metrics: dict[str, float]) -> Any:
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

    return RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord(metrics),  # type: ignore[arg-type]
        }
    )


def test_heads_average_over_their_owners_and_the_encoder_over_everyone() -> None:
    current = {
        "encoder.w": np.zeros(2, np.float32),
        "intent_heads.a.weight": np.zeros(2, np.float32),
        "intent_heads.b.weight": np.zeros(2, np.float32),
        "slot_heads.c.weight": np.full(2, 7.0, np.float32),
    }
    # Client 1 holds skill a (30 examples), client 2 skill b (10): each sends every array, the
    # other skills' heads untouched.
    one = reply(
        {
            **current,
            "encoder.w": np.ones(2, np.float32),
            "intent_heads.a.weight": np.full(2, 4.0, np.float32),
        },
        {"num-examples": 30.0, count_key("a"): 30.0, count_key("b"): 0.0, count_key("c"): 0.0},
    )
    two = reply(
        {
            **current,
            "encoder.w": np.full(2, 3.0, np.float32),
            "intent_heads.b.weight": np.full(2, 8.0, np.float32),
        },
        {"num-examples": 10.0, count_key("a"): 0.0, count_key("b"): 10.0, count_key("c"): 0.0},
    )
    out = average_by_owner([one, two], current)
    assert np.allclose(out["encoder.w"], (30 * 1 + 10 * 3) / 40)
    assert np.allclose(out["intent_heads.a.weight"], 4.0)  # not diluted by client 2's zeros
    assert np.allclose(out["intent_heads.b.weight"], 8.0)
    assert np.allclose(out["slot_heads.c.weight"], 7.0)  # nobody holds c: unchanged
    assert out["encoder.w"].dtype == np.float32
    # A server learning rate scales the shared arrays' averaged update, never a skill's heads.
    stepped = average_by_owner([one, two], current, shared_lr=3.0)
    assert np.allclose(stepped["encoder.w"], 3.0 * (30 * 1 + 10 * 3) / 40)
    assert np.allclose(stepped["intent_heads.a.weight"], 4.0)
    assert np.allclose(stepped["slot_heads.c.weight"], 7.0)
    # So a client need not send the heads of skills it has no examples of.
    sent = owned_only(
        dict(current), {count_key("a"): 30.0, count_key("b"): 0.0, count_key("c"): 0.0}
    )
    assert sorted(sent) == ["encoder.w", "intent_heads.a.weight"]
    alone = reply(
        sent | {"encoder.w": np.ones(2, np.float32)}, {"num-examples": 30.0, count_key("a"): 30.0}
    )
    assert np.allclose(average_by_owner([alone, two], current)["intent_heads.b.weight"], 8.0)


def test_the_fitted_router_is_additive_over_clients_and_separates_skills() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 3
    x = np.concatenate([c + rng.normal(size=(100, 8)) for c in centres])
    y = np.repeat(np.arange(3), 100)

    def stats(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sums = np.zeros((3, 8))
        np.add.at(sums, y[rows], x[rows])
        return sums, np.bincount(y[rows], minlength=3).astype(float), x[rows].T @ x[rows]

    # Three clients, one skill each: their summed statistics give the router the pooled data
    # would give.
    parts = [stats(np.flatnonzero(y == k)) for k in range(3)]
    summed = [np.sum([p[i] for p in parts], axis=0) for i in range(3)]
    w_fed, b_fed = fit_router(*summed)
    w_all, b_all = fit_router(*stats(np.arange(300)))
    assert np.allclose(w_fed, w_all) and np.allclose(b_fed, b_all)
    accuracy = float(((x @ w_fed.T + b_fed).argmax(1) == y).mean())
    assert accuracy > 0.97
    # What travels: float32 upper triangles, unpacked to the same matrix.
    from nlu.federated.router import pack_symmetric, unpack_symmetric

    packed = pack_symmetric(summed[2])
    assert packed.size == 8 * 9 // 2
    assert np.allclose(unpack_symmetric(packed, 8), summed[2], rtol=1e-5)
    # A skill no client holds is never chosen.
    sums, counts, outer = summed
    counts[2], sums[2] = 0, 0
    _, bias = fit_router(sums, counts, outer - x[y == 2].T @ x[y == 2])
    assert bias[2] < -1e3


# -- config ----------------------------------------------------------------------------------------


def test_federation_keys_are_checked(tmp_path: Path) -> None:
    cfg = build(FederatedConfig, {"rounds": 2, "partition": "iid", "clients": 3}, source="t")
    assert isinstance(cfg, FederatedConfig) and cfg.federation.clients == 3
    with pytest.raises(
        ConfigError, match=r"unknown key 'federation\.round'; did you mean 'rounds'"
    ):
        build(FederatedConfig, {"federation": {"round": 2}}, source="t")
    with pytest.raises(ConfigError, match=r"dp_noise_multiplier=-0.1 \(0 or more\); dp_clip"):
        build(FederatedConfig, {"dp_noise_multiplier": -0.1, "dp_clipping_norm": 0}, source="t")
    with pytest.raises(ConfigError, match="partition=iid needs clients"):
        build(FederatedConfig, {"partition": "iid"}, source="t")
    with pytest.raises(ConfigError, match="strategy="):
        build(FederatedConfig, {"strategy": "fedsgd"}, source="t")
    with pytest.raises(ConfigError, match="shared_server_lr applies to fedavg"):
        build(FederatedConfig, {"strategy": "fedadam", "shared_server_lr": 2.0}, source="t")
    with pytest.raises(ConfigError, match="shared_server_lr=0"):
        build(FederatedConfig, {"shared_server_lr": 0}, source="t")
    with pytest.raises(ConfigError, match="unknown key 'epoch'"):
        build(FederatedConfig, {"epoch": 2}, source="t")
    with pytest.raises(ConfigError, match=r"head_refit_epochs=-1 \(at least 0\); local_parts=0"):
        build(FederatedConfig, {"head_refit_epochs": -1, "local_parts": 0}, source="t")
    with pytest.raises(ConfigError, match="head_refit_epochs works with fedavg and fedprox"):
        build(FederatedConfig, {"head_refit_epochs": 1, "strategy": "fedadam"}, source="t")
    config = tmp_path / "fed.yaml"
    config.write_text("rounds: 0\n")
    out = subprocess.run(
        [sys.executable, "-m", "nlu.cli", "federated", str(config)], capture_output=True, text=True
    )
    assert out.returncode == 2 and "rounds=0 (at least 1)" in out.stderr
    assert "Traceback" not in out.stderr


# -- whole federations (Flower's simulation engine) ------------------------------------------------


@pytest.mark.slow
def test_skill_owners_federate_a_model_that_improves_and_serves(
    tiny_encoder: str, tmp_path: Path
) -> None:
    from nlu.federated.simulation import federated

    cfg = fed_config(tiny_encoder, tmp_path / "run")
    result = federated(cfg)
    rounds = result.history
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    assert sorted(result.clients) == ["client 0", "client 1"]
    assert [c["skills"] for c in result.clients.values()] in (
        [["lights"], ["timer"]],
        [["timer"], ["lights"]],
    )
    first, last = rounds[0]["dev"], rounds[-1]["dev"]
    # One skill per client, yet the fitted router tells them apart.
    assert last["router_accuracy"] >= 95.0
    assert last["exact_match"] > first["exact_match"] + 10
    assert last["intent_accuracy"] >= 80.0
    assert all(r["bytes_up"] > 0 and r["bytes_down"] > 0 and not r["failures"] for r in rounds)
    # The saved model is an ordinary model folder, and it is the model the clients scored last:
    # the clients' dev parts together are the data's dev split.
    data = load_train_dev(cfg.student.data, seed=cfg.student.seed)
    assert len(data.dev) == sum(c["dev"] for c in result.clients.values())
    parser = Parser.from_pretrained(result.model_dir)
    overall = score(data.dev, parser.parse([e.text for e in data.dev]), tokenizer=parser.tokenizer)
    for key in ("intent_accuracy", "exact_match", "router_accuracy"):
        assert overall["overall"][key] == pytest.approx(last[key], abs=0.011)
    saved = json.loads((tmp_path / "run" / "federated.json").read_text())
    assert len(saved["rounds"]) == 4 and (tmp_path / "run" / "federated.png").is_file()


@pytest.mark.slow
def test_the_head_refit_round_moves_the_heads_alone(tiny_encoder: str, tmp_path: Path) -> None:
    import torch

    from nlu.federated.simulation import federated
    from nlu.model.joint import JointModel

    plain = federated(fed_config(tiny_encoder, tmp_path / "plain", rounds=2))
    refit = federated(fed_config(tiny_encoder, tmp_path / "refit", rounds=2, head_refit_epochs=1))
    assert [r["phase"] for r in refit.history] == ["train", "train", "heads"]
    # Only the owners' heads travel up in the refit round.
    assert 0 < refit.history[-1]["bytes_up"] < refit.history[-2]["bytes_up"] / 10
    before = JointModel.load(plain.model_dir)[0].state_dict()
    after = JointModel.load(refit.model_dir)[0].state_dict()
    moved = {
        k
        for k, v in before.items()
        if v.is_floating_point() and not torch.allclose(v, after[k], atol=1e-6)
    }
    assert moved, "the refit trained nothing"
    assert all(k.startswith(("intent_heads.", "slot_heads.")) for k in moved), sorted(moved)[:3]
    # Both owners refit their own skill's heads.
    assert {k.split(".")[1] for k in moved} == {"lights", "timer"}
    assert (
        refit.history[-1]["dev"]["router_accuracy"] == refit.history[-2]["dev"]["router_accuracy"]
    )


@pytest.mark.slow
def test_a_client_skill_outside_the_base_model_stops_before_round_one(
    tiny_encoder: str, trained: Any, tmp_path: Path
) -> None:
    from nlu.federated.simulation import federated

    # The base model knows only "lights"; the timer owner's skill is not in its label space.
    cfg = fed_config(tiny_encoder, tmp_path / "run", init_from=str(trained.model_dir), rounds=1)
    with pytest.raises(FederationError, match=r"client \d: skill 'timer' is not in the federation"):
        federated(cfg)
    assert not (tmp_path / "run" / "model").exists()


@pytest.mark.slow
def test_more_local_parts_than_a_client_has_examples_stops_before_round_one(
    tiny_encoder: str, tmp_path: Path
) -> None:
    from nlu.federated.simulation import federated

    cfg = fed_config(tiny_encoder, tmp_path / "run", local_parts=10_000, rounds=1)
    with pytest.raises(FederationError, match=r"local_parts=10000 .* client \d \(\d+\)"):
        federated(cfg)
    assert not (tmp_path / "run" / "model").exists()


# -- deployment: SuperLink and SuperNodes as separate processes ------------------------------------


@pytest.mark.slow
def test_deployment_goes_on_when_a_supernode_is_killed_mid_run(
    tiny_encoder: str, tmp_path: Path
) -> None:
    """The run-book of docs/guide/federated.md on loopback: a SuperLink, three SuperNodes each with
    its own data, `flwr run deploy/flower`; one SuperNode is killed after round 1 and the
    federation finishes with the other two. Slow-ish (Flower starts a ClientApp process per
    SuperNode and run; the SuperLink notices the dead node after two missed heartbeats)."""
    import contextlib
    import os
    import signal
    import time

    import yaml

    from tests.helpers import free_port

    home = tmp_path / "flwr"
    home.mkdir()
    link = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "test"\n\n[superlink.test]\naddress = "127.0.0.1:{link}"\n'
        "insecure = true\n"
    )
    env = {**os.environ, "FLWR_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    bin_dir = Path(sys.executable).parent
    out = tmp_path / "run"
    config = tmp_path / "federated.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                **TINY,
                "encoder": tiny_encoder,
                "output_dir": str(out),
                "rounds": 2,
                "round_timeout_s": 120,
                "min_clients": 2,
            }
        )
    )
    procs: list[subprocess.Popen[bytes]] = []

    def start(*cmd: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: the ClientApp dies with it
        )
        procs.append(proc)
        return proc

    try:
        start(str(bin_dir / "flower-superlink"), "--insecure", "--port", str(link))
        owners = {
            "lights owner": FIXTURES / "skills",
            "timer owner": TIMER,
            "second timer owner": TIMER,  # the same skill definition: the labels agree
        }
        nodes = [
            start(
                str(bin_dir / "flower-supernode"),
                "--insecure",
                "--superlink",
                f"127.0.0.1:{link}",
                "--port",
                str(free_port()),
                "--node-config",
                f"data='{path}' name='{name}'",
            )
            for name, path in owners.items()
        ]
        time.sleep(3)
        run = subprocess.run(
            [
                str(bin_dir / "flwr"),
                "run",
                str(ROOT / "deploy" / "flower"),
                "test",
                "--run-config",
                f"config='{config}' clients=3",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        history = out / "federated.json"
        deadline = time.time() + 600
        while time.time() < deadline and not (
            history.is_file() and json.loads(history.read_text())["rounds"]
        ):
            time.sleep(0.5)
        assert history.is_file(), "round 1 never finished"
        os.killpg(nodes[2].pid, signal.SIGKILL)
        while time.time() < deadline and not (out / "model").is_dir():
            time.sleep(1)
        assert (out / "model").is_dir(), "the federation did not finish without the killed node"
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    saved = json.loads(history.read_text())
    rounds = saved["rounds"]
    assert sorted(saved["clients"]) == sorted(owners)
    assert [r["clients_trained"] for r in rounds] == [3, 2], json.dumps(rounds)
    assert "Node Unavailable" in " ".join(rounds[1]["failures"])  # the lost client is named
    # Learning goes on without the lost node: the same surviving clients score better on their
    # own dev sets after round 2 (intent accuracy plus slot F1). By any margin: dev sets of five
    # to seven utterances move little after a second round of a tiny encoder (CI saw +3.3 of
    # 200 as well as more than +10). Not the mean training loss: the lost node's share of it
    # goes to the others, whose losses differ.
    survivors = rounds[1]["dev_per_node"]
    assert len(survivors) == 2 and set(survivors) <= set(rounds[0]["dev_per_node"])

    def score(round_: dict[str, Any]) -> float:
        return sum(
            round_["dev_per_node"][node][key]
            for node in survivors
            for key in ("intent_accuracy", "slot_f1")
        )

    assert score(rounds[1]) > score(rounds[0]), json.dumps(rounds)
    assert rounds[-1]["dev"]["router_accuracy"] >= 90.0, json.dumps(rounds)


def test_lora_updates_send_only_adapters_and_heads(tiny_encoder: str) -> None:
    from nlu.federated.arrays import federation_model, shared_arrays

    labels = [skill("lights", ["on", "off"], ["room"]), skill("timer", ["set"], ["length"])]
    values = {"encoder": tiny_encoder, "lora_rank": 4}
    model, _ = federation_model(build(FederatedConfig, values, source="t"), labels)
    full = shared_arrays(model)
    assert any(k.startswith("encoder.") for k in full)
    lora_cfg = build(FederatedConfig, {**values, "updates": "lora"}, source="t")
    lora = shared_arrays(federation_model(lora_cfg, labels)[0])
    assert lora and all(
        ".lora_" in k or k.split(".")[0] in ("router", "intent_heads", "slot_heads") for k in lora
    )
    assert any(".lora_" in k for k in lora)
    size = lambda arrays: sum(v.numel() for v in arrays.values())  # noqa: E731
    assert size(lora) * 20 < size(full)


def test_lora_b_sends_only_b_and_every_machine_builds_the_same_a(tiny_encoder: str) -> None:
    import torch

    from nlu.federated.arrays import federation_model, frozen_digest, shared_arrays

    labels = [skill("lights", ["on", "off"], ["room"]), skill("timer", ["set"], ["length"])]
    values = {"encoder": tiny_encoder, "lora_rank": 4, "updates": "lora_b"}
    server = federation_model(build(FederatedConfig, values, source="t"), labels)[0]
    client = federation_model(build(FederatedConfig, values, source="t"), labels)[0]
    sent = shared_arrays(client)
    assert any(".lora_B." in k for k in sent) and not any(".lora_A." in k for k in sent)
    # A never travels and never trains: the server's and a client's must be equal.
    a_server = {k: v for k, v in server.state_dict().items() if ".lora_A." in k}
    a_client = {k: v for k, v in client.state_dict().items() if ".lora_A." in k}
    assert a_server and all(torch.equal(a_server[k], a_client[k]) for k in a_server)
    assert not any(p.requires_grad for n, p in client.named_parameters() if ".lora_A." in n)
    # The server's fingerprint of A, sent with the job, stops a client that built another A.
    assert frozen_digest(server) == frozen_digest(client) != ""
    with torch.no_grad():
        next(p for n, p in client.named_parameters() if ".lora_A." in n)[0, 0] += 1e-6
    assert frozen_digest(server) != frozen_digest(client)
    both = shared_arrays(
        federation_model(build(FederatedConfig, values | {"updates": "lora"}, source="t"), labels)[
            0
        ]
    )
    assert set(sent) < set(both)


def test_lora_b_server_merges_the_model_a_client_trained(tiny_encoder: str) -> None:
    """What the server saves (its own A, the client's B, merged into the encoder) computes
    what the client's model computed."""
    import torch
    from flwr.app import ArrayRecord

    from nlu.federated.arrays import federation_model, load_arrays, shared_arrays
    from nlu.model import adapters

    labels = [skill("lights", ["on", "off"], ["room"])]
    values = {"encoder": tiny_encoder, "lora_rank": 4, "updates": "lora_b", "lora_modules": "all"}
    server, tokenizer = federation_model(build(FederatedConfig, values, source="t"), labels)
    client = federation_model(build(FederatedConfig, values, source="t"), labels)[0]
    torch.manual_seed(1)
    with torch.no_grad():  # as if trained: B matrices and heads away from their start
        for param in client.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param))
    load_arrays(server, ArrayRecord({k: v.clone() for k, v in shared_arrays(client).items()}))
    batch = tokenizer(["turn on the lights in the kitchen"], return_tensors="pt")
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    saved = adapters.merged_copy(server).eval()
    trained = client.eval()
    with torch.no_grad():
        want = trained(**inputs)
        got = saved(**inputs)
    assert torch.allclose(got.slot_logits, want.slot_logits, atol=1e-4)
    assert torch.allclose(got.intent_logits, want.intent_logits, atol=1e-4)


def test_lora_modules_all_puts_adapters_on_every_linear_layer(tiny_encoder: str) -> None:
    from nlu.federated.arrays import federation_model, shared_arrays

    labels = [skill("lights", ["on", "off"], ["room"])]
    values = {"encoder": tiny_encoder, "lora_rank": 4, "updates": "lora"}
    attention = shared_arrays(
        federation_model(build(FederatedConfig, values, source="t"), labels)[0]
    )
    every = build(FederatedConfig, values | {"lora_modules": "all"}, source="t")
    wrapped = {
        k.split(".lora_")[0].rsplit(".", 1)[-1]
        for k in shared_arrays(federation_model(every, labels)[0])
        if ".lora_" in k
    }
    assert {"query", "value"} == {
        k.split(".lora_")[0].rsplit(".", 1)[-1] for k in attention if ".lora_" in k
    }
    assert {"query", "key", "value", "dense"} <= wrapped
