"""`router_input: layers`: the router reads the mean of every transformer layer's pooled vector.
It must be what the router really reads in every path that computes router logits or router
features: training, the saved folder, ONNX, add-skill and the federated router's statistics."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nlu.config import ConfigError, replace
from nlu.labels import SkillLabels
from tests.helpers import FIXTURES


def two_skills() -> list[SkillLabels]:
    return [
        SkillLabels(name="a", intents=["x", "y"], slots=["s"]),
        SkillLabels(name="b", intents=["z"], slots=[]),
    ]


def layers_model(tiny_encoder: str) -> Any:
    """(model, tokenizer): two skills on the tiny encoder, routing on the layers, eval mode."""
    from nlu.model.joint import build_model

    torch.manual_seed(0)
    model, tokenizer = build_model(
        encoder=tiny_encoder,
        skills=two_skills(),
        pooling="mean",
        dropout=0.1,
        router_input="layers",
    )
    return model.eval(), tokenizer


def test_the_router_reads_the_mean_of_the_layers_and_only_it(tiny_encoder: str) -> None:
    model, tokenizer = layers_model(tiny_encoder)
    batch = tokenizer(["turn on the lights", "set a timer"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        states = model.encoder(**batch, output_hidden_states=True).hidden_states
        mask = batch["attention_mask"].unsqueeze(-1).float()
        per_layer = [(h * mask).sum(1) / mask.sum(1) for h in states[1:]]
        expected = torch.stack(per_layer).mean(0)
        assert len(per_layer) == model.encoder_config.num_hidden_layers
        assert out.routed is not None and out.pooled is not None
        torch.testing.assert_close(out.routed, expected)
        torch.testing.assert_close(out.router_logits, model.router(expected))
        # The intent heads and the out-of-scope detector keep the last layer's vector.
        torch.testing.assert_close(out.pooled, per_layer[-1])
        assert not torch.allclose(out.routed, out.pooled, atol=1e-3)


def test_the_sentence_router_reads_the_pooled_vector(tiny_encoder: str) -> None:
    from nlu.model.joint import build_model

    model, tokenizer = build_model(
        encoder=tiny_encoder, skills=two_skills(), pooling="mean", dropout=0.1
    )
    model.eval()
    batch = tokenizer(["turn on the lights"], return_tensors="pt")
    with torch.inference_mode():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert out.routed is out.pooled


@pytest.fixture(scope="module")
def layered(make_config: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Two skills (lights, timer) trained with router_input=layers."""
    from nlu.training.train import train

    cfg = replace(
        make_config(tmp_path_factory.mktemp("layers")),
        data=[str(FIXTURES / "skills"), str(FIXTURES / "timer.jsonl")],
        epochs=12,
        router_input="layers",
    )
    return cfg, train(cfg)


@pytest.mark.slow
def test_a_layers_model_learns_saves_and_exports_the_same(layered: Any, tmp_path: Path) -> None:
    from nlu.data.loaders import load_train_dev
    from nlu.inference.parser import Parser
    from nlu.model.alignment import encode
    from nlu.model.export import export_onnx
    from nlu.model.features import encodings_inputs
    from nlu.model.joint import JointModel

    cfg, layered = layered
    meta = json.loads((layered.model_dir / "nlu.json").read_text())
    assert meta["router_input"] == "layers"
    model, _ = JointModel.load(layered.model_dir)
    assert model.router_input == "layers"
    data = load_train_dev(cfg.data, seed=cfg.seed)
    parser = Parser.from_pretrained(layered.model_dir)
    texts = [e.text for e in data.dev]
    results = parser.parse(texts)
    routed = [r.skill.name if r.skill else None for r in results]
    assert routed == [e.skill for e in data.dev]

    export_onnx(model_dir=layered.model_dir, out_dir=tmp_path / "onnx")
    onnx = Parser.from_pretrained(tmp_path / "onnx")
    batch = encodings_inputs(encode(parser.tokenizer, texts[:8], parser.max_length), 0)
    a, b = parser.forward(batch), onnx.forward(batch)
    np.testing.assert_allclose(a.router, b.router, atol=1e-4)
    assert [r.skill.name if r.skill else None for r in onnx.parse(texts)] == routed


def test_add_skill_trains_the_new_router_rows_on_the_layers(
    make_config: Callable[..., Any], tmp_path: Path
) -> None:
    from nlu.data.formats import read_jsonl
    from nlu.inference.parser import Parser
    from nlu.model.joint import JointModel
    from nlu.training.add_skill import _cache, add_skill
    from nlu.training.train import train

    lights = train(replace(make_config(tmp_path / "lights"), router_input="layers"))
    timer = FIXTURES / "timer.jsonl"
    result = add_skill(
        model_dir=lights.model_dir, skill_data=[str(timer)], out_dir=tmp_path / "ext"
    )
    model, _ = JointModel.load(result.model_dir)
    assert model.router_input == "layers"
    parser = Parser.from_pretrained(result.model_dir)
    texts = [e.text for e in read_jsonl(timer)]
    routed = [r.skill.name if r.skill else None for r in parser.parse(texts)]
    assert routed.count("timer") >= 0.9 * len(texts), routed
    old = ["turn on the kitchen lights", "switch the bedroom light off"]
    assert [r.skill.name if r.skill else None for r in parser.parse(old)] == ["lights", "lights"]
    # The new router rows train on the vectors the router reads when serving.
    examples = read_jsonl(timer)[:4]
    cached = _cache(model, parser.tokenizer, examples, parser.max_length)
    batch = parser.tokenizer([e.text for e in examples], padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert out.routed is not None and out.pooled is not None
    torch.testing.assert_close(cached.routed, out.routed, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(cached.routed, cached.pooled, atol=1e-3)


def test_federated_router_statistics_are_the_router_input(tiny_encoder: str) -> None:
    from nlu.federated.client import sentence_vectors
    from nlu.schema import Example

    model, tokenizer = layers_model(tiny_encoder)
    train = [
        Example(text="a x one", skill="a", intent="x"),
        Example(text="b z", skill="b", intent="z"),
    ]
    vectors, skills = sentence_vectors(train, model, tokenizer, 16)
    batch = tokenizer([e.text for e in train], padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert out.routed is not None and out.pooled is not None
    np.testing.assert_allclose(vectors, out.routed.double().numpy(), atol=1e-5)
    assert not np.allclose(vectors, out.pooled.double().numpy(), atol=1e-3)
    assert skills.tolist() == [0, 1]


def test_a_folder_from_before_the_option_routes_on_the_sentence(
    trained: Any, tmp_path: Path
) -> None:
    import shutil

    from nlu.model.joint import JointModel

    old = tmp_path / "old"
    shutil.copytree(trained.model_dir, old)
    meta = json.loads((old / "nlu.json").read_text())
    meta.pop("router_input")
    (old / "nlu.json").write_text(json.dumps(meta))
    assert JointModel.load(old)[0].router_input == "sentence"


def test_layers_with_soft_sharing_is_a_config_error(
    make_config: Callable[..., Any], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="router_input=layers needs one encoder"):
        replace(make_config(tmp_path), router_input="layers", sharing="sluice")
