"""Per-skill LoRA adapters (`--finetune lora`): one skill changes, every other is untouched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nlu.data.formats import read_jsonl
from nlu.inference.parser import Parser, torch_forward
from nlu.model.adapters import wrap_for_training
from nlu.model.features import encodings_inputs
from nlu.model.joint import JointModel
from nlu.model.modeldir import ADAPTERS_DIR, adapter_skills
from nlu.model.modeldir import WEIGHTS_FILE as MODEL_FILE
from nlu.training.finetune import FinetuneError
from nlu.training.train import train
from tests.helpers import FIXTURES

TIMER = FIXTURES / "timer.jsonl"
LIGHTS_TEXTS = [
    "turn on the kitchen lights",
    "set the living room lights to warm white",
    "switch off the lights in the bedroom",
]


@pytest.fixture(scope="module")
def adapted(
    make_config: Callable[..., Any], extended: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    cfg = make_config(
        tmp_path_factory.mktemp("adapted"),
        init_from=str(extended),
        finetune="lora",
        lora_rank=4,
        lora_modules="all",  # the federated and sharing tests cover attention-only adapters
        data=[str(TIMER)],
        epochs=3,
    )
    return train(cfg).model_dir


def _texts() -> list[str]:
    return LIGHTS_TEXTS + [e.text for e in read_jsonl(TIMER)][:6]


def test_saves_the_base_unchanged_and_a_small_adapter(extended: Path, adapted: Path) -> None:
    assert (adapted / MODEL_FILE).read_bytes() == (extended / MODEL_FILE).read_bytes()
    assert adapter_skills(adapted) == ["timer"]
    weights = adapted / ADAPTERS_DIR / "timer" / "adapter_model.safetensors"
    assert weights.stat().st_size < 0.05 * (adapted / MODEL_FILE).stat().st_size


def test_other_skills_and_routing_are_bit_identical(extended: Path, adapted: Path) -> None:
    texts = _texts()
    before = Parser.from_pretrained(extended, backend="torch").parse(texts)
    after = Parser.from_pretrained(adapted, backend="torch").parse(texts)
    timer_changed = False
    for a, b in zip(before, after, strict=True):
        assert a.skill == b.skill  # the router runs on the base encoder
        assert a.skill is not None
        if a.skill.name != "timer":
            assert a == b
        else:
            timer_changed |= a.intents != b.intents
    assert timer_changed, "the adapter should change the timer skill's outputs"
    # Forcing the lights skill onto timer texts still uses the base lights heads.
    forced = [t for t in texts if t not in LIGHTS_TEXTS]
    assert Parser.from_pretrained(extended).parse(forced, skill="lights") == Parser.from_pretrained(
        adapted
    ).parse(forced, skill="lights")


def test_timer_logits_come_from_the_adapted_encoder(adapted: Path) -> None:
    from nlu.model.adapters import adapted_model
    from nlu.model.alignment import encode

    parser = Parser.from_pretrained(adapted, backend="torch")
    model, folder = JointModel.load(adapted)
    merged = adapted_model(model, "timer", folder.adapters["timer"])
    texts = [e.text for e in read_jsonl(TIMER)][:4]
    tokenizer = folder.tokenizer
    batch = encodings_inputs(encode(tokenizer, texts, folder.meta.max_length), 0)
    expected = torch_forward(merged)(batch)
    k = model.index.position["timer"]
    results = parser.parse(texts, skill="timer", top_k=10)
    for row, result in enumerate(results):
        logits = expected.intents[row, model.index.intent_slices[k]]
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        best = int(probs.argmax())
        assert result.intent.name == model.skills[k].intents[best]
        assert result.intent.confidence == pytest.approx(float(probs[best]), abs=1e-4)


def test_batch_equals_single(adapted: Path) -> None:
    parser = Parser.from_pretrained(adapted, backend="torch")
    texts = _texts()
    batched = parser.parse(texts)
    for text, together in zip(texts, batched, strict=True):
        (alone,) = parser.parse([text])
        assert alone.intent.name == together.intent.name
        assert [(s.slot, s.start, s.end) for s in alone.slots] == [
            (s.slot, s.start, s.end) for s in together.slots
        ]
        assert alone.intent.confidence == pytest.approx(together.intent.confidence, abs=1e-3)


@pytest.mark.slow
def test_onnx_export_serves_the_adapter(adapted: Path, tmp_path: Path) -> None:
    from nlu.model.export import export_onnx

    export_onnx(model_dir=adapted, out_dir=tmp_path)
    assert (tmp_path / ADAPTERS_DIR / "timer" / "model.onnx").is_file()
    onnx = Parser.from_pretrained(tmp_path, backend="onnx")
    assert list(onnx.adapters) == ["timer"]
    texts = _texts()
    expected = Parser.from_pretrained(adapted, backend="torch").parse(texts)
    for a, b in zip(expected, onnx.parse(texts), strict=True):
        assert (a.skill.name, a.intent.name) == (
            b.skill.name,
            b.intent.name,
        )
        assert [(s.slot, s.start, s.end) for s in a.slots] == [
            (s.slot, s.start, s.end) for s in b.slots
        ]
        assert a.intent.confidence == pytest.approx(b.intent.confidence, abs=1e-3)


def test_continuing_starts_from_the_saved_adapter(adapted: Path) -> None:
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    model, folder = JointModel.load(adapted)
    saved = adapted / ADAPTERS_DIR / "timer"
    wrap_for_training(model, skill="timer", rank=4, start=folder.adapters["timer"])
    state = get_peft_model_state_dict(model.encoder)
    expected = load_file(str(saved / "adapter_model.safetensors"))
    assert state.keys() == expected.keys()
    assert all(np.array_equal(state[k].numpy(), expected[k].numpy()) for k in state)
    assert any(p.requires_grad for p in model.encoder.parameters())


def test_modes_that_would_break_adapters_are_refused(
    make_config: Callable[..., Any], adapted: Path, extended: Path, tmp_path: Path
) -> None:
    def finetune(source: Path, **changes: Any) -> None:
        cfg = make_config(tmp_path, init_from=str(source), epochs=1, **changes)
        train(cfg)

    with pytest.raises(FinetuneError, match="would invalidate them"):
        finetune(adapted, finetune="full")
    with pytest.raises(FinetuneError, match="served by their adapters"):
        finetune(adapted, finetune="heads", data=[str(TIMER)])
    with pytest.raises(FinetuneError, match="covers 2 skills"):
        finetune(extended, finetune="lora", data=[str(FIXTURES / "skills"), str(TIMER)])


def test_server_reports_and_applies_the_adapter(adapted: Path) -> None:
    from fastapi.testclient import TestClient

    from nlu.serve.app import create_app

    parser = Parser.from_pretrained(adapted)
    with TestClient(create_app(parser)) as client:
        skills = {s["name"]: s["adapter"] for s in client.get("/skills").json()["skills"]}
        assert skills == {"lights": False, "timer": True}
        text = read_jsonl(TIMER)[0].text
        answer = client.post("/parse", json={"text": text, "skill": "timer"}).json()
    assert answer == parser.parse([text], skill="timer")[0].to_dict()
