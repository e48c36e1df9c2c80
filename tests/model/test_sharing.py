"""Soft parameter sharing (nlu/sharing.py, nlu/columns.py) beside hard sharing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import BertConfig, BertModel

from nlu.config import ConfigError, replace
from nlu.labels import SkillLabels
from nlu.model.columns import SoftSharedEncoder, initial_mixing
from nlu.model.joint import JointModel
from nlu.model.sharing import Sharing, SharingError, sharing_for
from tests.helpers import FIXTURES, ROOT

IDS = torch.tensor([[2, 5, 7, 9, 3], [2, 11, 3, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
SKILLS = [SkillLabels("a", ["x", "y"], ["s"]), SkillLabels("b", ["z"], ["t", "u"])]


def tiny_bert(seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return BertModel(config, add_pooling_layer=False).eval()


def test_hard_sharing_gives_the_outputs_it_gave_before_soft_sharing_existed() -> None:
    """Recorded from the model before nlu/sharing.py existed (same seed, same torch)."""
    encoder = tiny_bert()
    model = JointModel(encoder=encoder, skills=SKILLS).eval()
    with torch.no_grad():
        out = model(input_ids=IDS, attention_mask=MASK)
    assert out.router_logits is not None and out.intent_logits is not None
    assert out.slot_logits is not None
    assert out.router_logits.flatten().tolist() == pytest.approx(
        [-0.1834, 0.3167, -0.0273, 0.3123], abs=1e-4
    )
    assert out.intent_logits.flatten()[:6].tolist() == pytest.approx(
        [-0.5424, 0.5719, 0.3685, -0.3445, 0.6782, 0.2102], abs=1e-4
    )
    assert float(out.slot_logits.sum()) == pytest.approx(-14.2675, abs=1e-3)


def test_identity_mixing_is_independent_columns_and_other_mixing_is_not() -> None:
    sharing = Sharing(mode="cross_stitch")
    soft = SoftSharedEncoder(tiny_bert(), sharing).eval()
    with torch.no_grad():
        for param in soft.columns[1].parameters():  # make the columns differ
            param.add_(0.05 * torch.randn_like(param))
        soft.mixing.copy_(torch.eye(2).repeat(soft.n_layers, 1, 1))
        states, _ = soft(IDS, MASK)
        for column, state in zip(soft.columns, states, strict=True):
            alone = column(input_ids=IDS, attention_mask=MASK).last_hidden_state
            assert torch.allclose(state[MASK.bool()], alone[MASK.bool()], atol=1e-5)
        soft.mixing.copy_(torch.tensor([[0.5, 0.5], [0.5, 0.5]]).repeat(soft.n_layers, 1, 1))
        mixed, _ = soft(IDS, MASK)
        # Both columns read both halves equally: the second layer's inputs are the same mix.
        assert not torch.allclose(mixed[0], states[0], atol=1e-3)


def test_sluice_mixes_subspaces_and_layers() -> None:
    soft = SoftSharedEncoder(tiny_bert(), Sharing(mode="sluice", subspaces=2)).train()
    assert soft.mixing.shape == (2, 4, 4)  # (layers, columns x subspaces, same)
    assert soft.layer_mixing is not None and soft.layer_mixing.shape == (2, 3)
    states, penalty = soft(IDS, MASK)
    assert float(penalty.detach()) > 0
    (states[0].sum() + states[1].sum() + penalty).backward()
    assert soft.mixing.grad is not None and float(soft.mixing.grad.abs().sum()) > 0
    assert soft.layer_mixing.grad is not None and float(soft.layer_mixing.grad.abs().sum()) > 0


def test_groups_that_do_not_fit_the_skills_are_config_errors() -> None:
    skills = ["alarm", "music", "timer"]
    groups = sharing_for("cross_stitch", ["alarm+timer", "music"], 2, skills)
    assert groups is not None and groups.groups == [["alarm", "timer"], ["music"]]
    assert groups.columns == 2 and groups.subspaces == 1  # subspaces are sluice's
    with pytest.raises(SharingError, match="sharing_groups: music in no group"):
        sharing_for("cross_stitch", ["alarm+timer"], 2, skills)
    with pytest.raises(SharingError, match="sharing_groups: 'radio' is not a skill"):
        sharing_for("sluice", ["alarm+timer", "music+radio"], 2, skills)
    with pytest.raises(SharingError, match="sharing_groups: 'alarm' is in groups 1 and 2"):
        sharing_for("sluice", ["alarm+timer", "music+alarm"], 2, skills)
    assert sharing_for("hard", ["whatever"], 2, skills) is None


def test_a_wrong_group_fails_training_before_it_starts(
    make_config: Callable[..., Any], tmp_path: Path
) -> None:
    from nlu.training.train import train

    cfg = replace(
        make_config(tmp_path),
        sharing="cross_stitch",
        sharing_groups=["lights", "timer"],
        epochs=1,
    )
    with pytest.raises(ConfigError, match="sharing_groups: 'timer' is not a skill"):
        train(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["cross_stitch", "sluice"])
def test_soft_modes_learn_save_export_and_serve_the_same(
    mode: str, make_config: Callable[..., Any], tiny_skill: Path, tmp_path: Path
) -> None:
    """Trains on two skills with one column per skill; the mixing weights move; the saved
    model parses as trained, and its ONNX graph decides the same; evaluation writes the
    learned weights."""
    from nlu.data.loaders import load_split
    from nlu.evaluation.evaluate import evaluate
    from nlu.inference.parser import Parser
    from nlu.model.export import export_onnx
    from nlu.training.train import train

    cfg = replace(
        make_config(tmp_path / "run"),
        data=[str(tiny_skill), str(FIXTURES / "timer.jsonl")],
        sharing=mode,
        sharing_groups=["lights", "timer"],
        epochs=12,
    )
    result = train(cfg)
    model, _ = JointModel.load(result.model_dir)
    soft = model.soft_encoder
    start = initial_mixing(soft.mixing.shape[1], soft.n_layers)
    assert float((soft.mixing - start).abs().max()) > 1e-3, soft.mixing  # the weights learned
    texts = [e.text for e in load_split(tiny_skill, "test").examples]
    texts += ["set a timer for 5 minutes", "how long is left on my timer"]
    torch_results = Parser.from_pretrained(result.model_dir).parse(texts)
    lights = load_split(tiny_skill, "train", samples_per_template=10, seed=0).examples[:20]
    trained = Parser.from_pretrained(result.model_dir).parse([e.text for e in lights])
    right = [
        r.intent is not None and r.intent.name == e.intent
        for r, e in zip(trained, lights, strict=True)
    ]
    assert sum(right) >= 18, right
    export_onnx(model_dir=result.model_dir, out_dir=tmp_path / "onnx")
    onnx_results = Parser.from_pretrained(tmp_path / "onnx").parse(texts)

    def decisions(results: list[Any]) -> list[Any]:
        return [
            (
                r.skill.name if r.skill else None,
                r.intent.name if r.intent else None,
                [(s.slot, s.start, s.end) for s in r.slots],
            )
            for r in results
        ]

    assert decisions(onnx_results) == decisions(torch_results)
    evaluate(model_dir=result.model_dir, data=[str(tiny_skill)], out_dir=tmp_path / "eval")
    report = json.loads((tmp_path / "eval" / "sharing.json").read_text())
    assert report["mode"] == mode and len(report["mixing"]) == 2
    assert (tmp_path / "eval" / "sharing.png").is_file()


def test_add_skill_and_lora_refuse_soft_models(
    make_config: Callable[..., Any], tmp_path: Path
) -> None:
    from nlu.training.add_skill import AddSkillError, add_skill
    from nlu.training.train import train

    result = train(replace(make_config(tmp_path / "run"), sharing="cross_stitch", epochs=1))
    with pytest.raises(AddSkillError, match="shares its encoder softly"):
        add_skill(
            model_dir=result.model_dir,
            skill_data=[str(FIXTURES / "timer.jsonl")],
            out_dir=tmp_path / "more",
        )
    lora = replace(
        make_config(tmp_path / "lora"), init_from=str(result.model_dir), finetune="lora", epochs=1
    )
    with pytest.raises(ConfigError, match="LoRA adapters need one encoder"):
        train(lora)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["hard", "cross_stitch", "sluice"])
def test_every_mode_decides_the_same_in_pytorch_and_onnx_on_the_demo_skills(
    mode: str, make_config: Callable[..., Any], tmp_path: Path
) -> None:
    """The shipped skills (five, with out-of-scope examples): saved, exported to fp32 ONNX,
    every mode makes the same decisions on their hand-written tests in both backends."""
    from nlu.data.loaders import load_split
    from nlu.inference.parser import Parser
    from nlu.model.export import export_onnx
    from nlu.training.train import train

    demo = ROOT / "skills"
    cfg = replace(
        make_config(tmp_path / "run"),
        data=[str(demo)],
        samples_per_template=2,
        epochs=1,
        batch_size=16,
        sharing=mode,
        sharing_groups=["tasks"],
    )
    result = train(cfg)
    texts = [e.text for e in load_split(demo, "test").examples]
    assert len(texts) >= 20
    export_onnx(model_dir=result.model_dir, out_dir=tmp_path / "onnx")

    def decisions(model_dir: Path) -> list[Any]:
        return [
            (
                r.skill.name if r.skill else None,
                r.intent.name if r.intent else None,
                [(s.slot, s.start, s.end) for s in r.slots],
            )
            for r in Parser.from_pretrained(model_dir).parse(texts)
        ]

    assert decisions(tmp_path / "onnx") == decisions(result.model_dir)
