"""`nlu train --from MODEL`: each fine-tuning mode moves exactly the parameters it should."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from nlu.model import modeldir
from nlu.model.joint import JointModel
from nlu.model.modeldir import WEIGHTS_FILE as MODEL_FILE
from nlu.schema import DataError
from nlu.training.engine import TrainResult
from nlu.training.train import train
from tests.helpers import FIXTURES


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """Every weight under the model's own names (`encoder.`, `router.`, heads)."""
    weights = modeldir.load(model_dir, "torch").weights
    assert weights is not None
    return weights


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    assert before.keys() == after.keys()
    return {k for k in before if not torch.equal(before[k], after[k])}


def _finetune(
    make_config: Callable[..., Any], trained: TrainResult, out: Path, **changes: Any
) -> TrainResult:
    cfg = make_config(out, init_from=str(trained.model_dir), epochs=2, **changes)
    return train(cfg)


def test_heads_mode_leaves_the_encoder_alone(
    make_config: Callable[..., Any], trained: TrainResult, tmp_path: Path
) -> None:
    result = _finetune(make_config, trained, tmp_path, finetune="heads")
    changed = _changed(_weights(trained.model_dir), _weights(result.model_dir))
    assert changed and not any(k.startswith("encoder.") for k in changed)
    # One skill in the data: the router cannot learn anything useful, so it stays frozen.
    assert not any(k.startswith("router.") for k in changed)


def test_top_layers_mode_trains_only_the_top_layers(
    make_config: Callable[..., Any], trained: TrainResult, tmp_path: Path
) -> None:
    result = _finetune(make_config, trained, tmp_path, finetune="top_layers", unfreeze_layers=1)
    changed = _changed(_weights(trained.model_dir), _weights(result.model_dir))
    encoder = {k for k in changed if k.startswith("encoder.")}
    assert encoder and all(".layer.1." in k for k in encoder)  # the tiny encoder has 2 layers


def test_full_mode_moves_the_encoder(
    make_config: Callable[..., Any], trained: TrainResult, tmp_path: Path
) -> None:
    result = _finetune(make_config, trained, tmp_path, finetune="full")
    changed = _changed(_weights(trained.model_dir), _weights(result.model_dir))
    assert any(".layer.0." in k for k in changed) and any("embeddings" in k for k in changed)


def test_lora_merged_mode_saves_a_plain_model_and_a_small_adapter(
    make_config: Callable[..., Any], trained: TrainResult, tmp_path: Path
) -> None:
    result = _finetune(make_config, trained, tmp_path, finetune="lora_merged", lora_rank=4)
    changed = _changed(_weights(trained.model_dir), _weights(result.model_dir))
    encoder = {k for k in changed if k.startswith("encoder.")}
    # The adapter is merged into the attention query/value weights only.
    assert encoder and all(k.endswith(("query.weight", "value.weight")) for k in encoder), encoder
    model, _ = JointModel.load(result.model_dir)  # an ordinary model directory
    assert model.index.names == ["lights"]
    adapter = result.model_dir / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4
    size = (adapter / "adapter_model.safetensors").stat().st_size
    assert size < 0.05 * (result.model_dir / MODEL_FILE).stat().st_size


def test_data_outside_the_models_labels_is_refused(
    make_config: Callable[..., Any], trained: TrainResult, tmp_path: Path
) -> None:
    with pytest.raises(DataError, match=r"skill 'timer' is not in the model.*add-skill"):
        _finetune(make_config, trained, tmp_path, data=[str(FIXTURES / "timer.jsonl")])
