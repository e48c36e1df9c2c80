"""Multi-task controls: skill sampling, loss weighting, layer-wise learning rates."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from nlu.config import ConfigError, load_config
from nlu.model.losses import TaskLosses
from nlu.training.mtl import LossWeighting, SkillSampler, skill_probabilities
from nlu.training.optim import param_groups
from nlu.training.train import train
from tests.helpers import FIXTURES


def test_skill_probabilities_follow_each_strategy() -> None:
    sizes = [900, 100]
    kw: dict[str, Any] = {"temperature": 2.0, "epoch": 0, "epochs": 5}
    assert skill_probabilities(sizes, strategy="proportional", **kw) == pytest.approx([0.9, 0.1])
    assert skill_probabilities(sizes, strategy="uniform", **kw) == pytest.approx([0.5, 0.5])
    # p ∝ sqrt(n) at T = 2: 30 : 10
    assert skill_probabilities(sizes, strategy="temperature", **kw) == pytest.approx([0.75, 0.25])
    first = skill_probabilities(sizes, strategy="annealed", **kw)
    last = skill_probabilities(sizes, strategy="annealed", **{**kw, "epoch": 4})
    assert first == pytest.approx([0.9, 0.1])  # starts proportional
    assert last == pytest.approx(
        skill_probabilities([900**0.2, 100**0.2], strategy="proportional", **kw)
    )
    assert last[1] > first[1]
    with pytest.raises(ValueError, match="sampling must be one of"):
        skill_probabilities(sizes, strategy="bogus", **kw)


def test_sampler_proportional_is_a_shuffle_and_others_rebalance() -> None:
    skill_of = [0] * 900 + [1] * 100
    shuffle = SkillSampler(skill_of, strategy="proportional", temperature=2, epochs=3, seed=1)
    assert sorted(shuffle) == list(range(1000))
    uniform = SkillSampler(skill_of, strategy="uniform", temperature=2, epochs=3, seed=1)
    drawn = list(uniform)
    assert len(drawn) == 1000
    counts = Counter(skill_of[i] for i in drawn)
    assert 430 < counts[1] < 570  # about half, although the skill holds 10% of the data
    # The small skill is cycled through whole: every one of its examples appears.
    assert {i for i in drawn if i >= 900} == set(range(900, 1000))
    again = SkillSampler(skill_of, strategy="uniform", temperature=2, epochs=3, seed=1)
    assert list(again) == drawn  # deterministic for a seed and epoch (resume sees the same)
    again.set_epoch(1)
    assert list(again) != drawn


def _fake_losses(values: dict[str, float]) -> TaskLosses:
    tasks = {k: (torch.tensor(v, requires_grad=True), 0.5) for k, v in values.items()}
    kinds: dict[str, torch.Tensor] = {}
    for task, (loss, share) in tasks.items():
        kind = task.split("/")[0]
        kinds[kind] = kinds.get(kind, torch.zeros(())) + share * loss
    return TaskLosses(by_task=tasks, by_kind=kinds)


def test_static_weighting_of_unit_weights_is_the_plain_share_weighted_sum() -> None:
    tasks = ["router", "intent/a", "slot/a"]
    weighting = LossWeighting(
        tasks, strategy="static", static={"router": 1.0, "intent": 1.0, "slot": 2.0}
    )
    loss = weighting(_fake_losses({"router": 1.0, "intent/a": 2.0, "slot/a": 3.0}))
    assert loss.item() == pytest.approx(0.5 * (1.0 + 2.0 + 2.0 * 3.0))
    assert weighting.effective_weights() == {"router": 1.0, "intent/a": 1.0, "slot/a": 2.0}


def test_uncertainty_weighting_learns_lower_weight_for_the_noisier_task() -> None:
    weighting = LossWeighting(["router", "slot/a"], strategy="uncertainty", static={})
    optimizer = torch.optim.SGD([weighting.log_vars], lr=0.1)
    for _ in range(200):
        optimizer.zero_grad()
        weighting(_fake_losses({"router": 0.1, "slot/a": 3.0})).backward()
        optimizer.step()
    weights = weighting.effective_weights()
    # The optimum of exp(-s)·L + s is exp(-s) = 1/L.
    assert weights["router"] == pytest.approx(10.0, rel=0.1)
    assert weights["slot/a"] == pytest.approx(1 / 3, rel=0.1)


def test_dwa_raises_the_weight_of_the_task_whose_loss_falls_slowest() -> None:
    weighting = LossWeighting(["router", "slot/a"], strategy="dwa", static={}, period=2)
    for step, (router, slot) in enumerate([(1.0, 1.0)] * 2 + [(0.5, 0.95)] * 2):
        weighting(_fake_losses({"router": router, "slot/a": slot}))
        weighting.step()
        if step < 3:  # weights stay 1 until two periods have been seen
            assert weighting.effective_weights() == {"router": 1.0, "slot/a": 1.0}
    weights = weighting.effective_weights()
    assert weights["slot/a"] > 1.0 > weights["router"]
    assert sum(weights.values()) == pytest.approx(2.0)


def test_layer_lr_decay_gives_lower_layers_smaller_rates(tiny_encoder: str) -> None:
    from nlu.labels import SkillLabels
    from nlu.model.joint import build_model

    skill = SkillLabels(name="s", intents=["a", "b"], slots=["x"])
    model, _ = build_model(encoder=tiny_encoder, skills=[skill], pooling="mean", dropout=0.1)
    groups = param_groups(
        model, learning_rate=1e-3, head_learning_rate=5e-3, weight_decay=0.0, layer_lr_decay=0.5
    )
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    layers = int(model.encoder_config.num_hidden_layers)  # 2
    assert lr_of[id(named["encoder.encoder.layer.1.output.dense.weight"])] == pytest.approx(1e-3)
    assert lr_of[id(named["encoder.encoder.layer.0.output.dense.weight"])] == pytest.approx(5e-4)
    embeddings = named["encoder.embeddings.word_embeddings.weight"]
    assert lr_of[id(embeddings)] == pytest.approx(1e-3 * 0.5**layers)
    assert lr_of[id(named["router.weight"])] == pytest.approx(5e-3)
    assert sum(len(g["params"]) for g in groups) == len(named)


def test_label_smoothing_applies_to_router_intent_and_slot_losses(tiny_encoder: str) -> None:
    import torch.nn.functional as F

    from nlu.labels import SkillLabels
    from nlu.model.joint import build_model

    skills = [
        SkillLabels(name="s", intents=["a", "b", "c"], slots=["x"]),
        SkillLabels(name="t", intents=["d", "e"], slots=["y", "z"]),
    ]
    torch.manual_seed(0)  # the heads' initialisation, whatever ran before
    model, _ = build_model(
        encoder=tiny_encoder,
        skills=skills,
        pooling="mean",
        dropout=0.0,
    )
    model.label_smoothing = 0.2
    model.eval()
    torch.manual_seed(0)
    batch = {
        "input_ids": torch.randint(1000, 2000, (2, 5)),
        "attention_mask": torch.ones(2, 5, dtype=torch.long),
        "skill_ids": torch.tensor([0, 1]),
        "intent_labels": torch.tensor([2, 0]),
        "slot_labels": torch.tensor([[-100, 1, 2, 0, -100], [-100, 3, 4, 1, -100]]),
    }
    out = model(**batch)
    router = F.cross_entropy(out.router_logits, batch["skill_ids"], label_smoothing=0.2)
    # Each row is smoothed over its own skill's labels only (3 intents / 5 tags for skill "t").
    intent_t = F.cross_entropy(
        out.intent_logits[1:, 3:5], batch["intent_labels"][1:], label_smoothing=0.2
    )
    slot_t = F.cross_entropy(
        out.slot_logits[1, 1:4, 3:8], batch["slot_labels"][1, 1:4], label_smoothing=0.2
    )
    assert out.losses is not None
    assert out.losses.by_kind["router"].item() == pytest.approx(router.item(), rel=1e-5)
    assert out.losses.by_task["intent/t"][0].item() == pytest.approx(intent_t.item(), rel=1e-5)
    assert out.losses.by_task["slot/t"][0].item() == pytest.approx(slot_t.item(), rel=1e-5)
    model.label_smoothing = 0.0
    plain = model(**batch)
    unsmoothed = F.cross_entropy(out.router_logits, batch["skill_ids"])
    assert plain.losses is not None
    plain_router = plain.losses.by_kind["router"].item()
    assert plain_router == pytest.approx(unsmoothed.item(), rel=1e-5)
    assert out.losses.by_kind["router"].item() != pytest.approx(plain_router, rel=1e-4)


def test_lora_weights_learn_at_the_heads_rate(tiny_encoder: str) -> None:
    from nlu.labels import SkillLabels
    from nlu.model.adapters import wrap_for_training
    from nlu.model.joint import build_model

    skill = SkillLabels(name="s", intents=["a", "b"], slots=["x"])
    model, _ = build_model(encoder=tiny_encoder, skills=[skill], pooling="mean", dropout=0.1)
    wrap_for_training(model, skill="s", rank=2, start=None)
    groups = param_groups(model, learning_rate=1e-4, head_learning_rate=1e-3, weight_decay=0.0)
    lr_of = {
        name: g["lr"]
        for g in groups
        for name, p in model.named_parameters()
        if any(p is q for q in g["params"])
    }
    lora = [name for name in lr_of if ".lora_" in name]
    assert lora and all(lr_of[name] == pytest.approx(1e-3) for name in lora)
    # The pretrained encoder weights are frozen under LoRA: they are in no group at all.
    assert not any(name.startswith("encoder.") and ".lora_" not in name for name in lr_of)


def test_unknown_choices_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="sampling='bogus'; choose one of proportional"):
        load_config(None, ["sampling=bogus"])
    with pytest.raises(ConfigError, match=r"label_smoothing=1.5; use a value in \[0, 1\)"):
        load_config(None, ["label_smoothing=1.5"])
    with pytest.raises(ConfigError, match="loss_weighting"):
        load_config(None, ["loss_weighting=learned"])


@pytest.mark.parametrize(
    ("changes", "logged"),
    [
        ({"sampling": "annealed", "loss_weighting": "uncertainty"}, "loss_weights"),
        ({"sampling": "temperature", "loss_weighting": "dwa", "dwa_period": 3}, "loss_weights"),
    ],
)
def test_training_with_mtl_controls_learns_and_logs_them(
    make_config: Callable[..., Any],
    tiny_skill: Path,
    tmp_path: Path,
    changes: dict[str, Any],
    logged: str,
) -> None:
    # A second, much smaller skill next to the fixture skill: unequal sizes.
    small = FIXTURES / "timer.jsonl"
    cfg = make_config(tmp_path / "run", data=[str(tiny_skill), str(small)], epochs=12, **changes)
    result = train(cfg)
    last = result.history[-1]
    assert set(last["skill_probabilities"]) == {"lights", "timer"}
    weights = last[logged]
    assert set(weights) == {
        "router",
        "intent/lights",
        "slot/lights",
        "intent/timer",
        "slot/timer",
    }
    assert any(abs(w - 1.0) > 1e-3 for w in weights.values())  # the weights really moved
    assert result.best_dev is not None and result.best_dev["exact_match"] >= 90.0
