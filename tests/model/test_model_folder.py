"""The model folder: loadable by transformers and from a run folder, carded, saved and pushed
symmetrically, and refused with one line when it is damaged."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import nlu
from nlu.cli import main
from nlu.inference.parser import Parser
from nlu.training.engine import TrainResult


def test_automodel_loads_the_trained_encoder(trained: Any) -> None:
    import torch
    from transformers import AutoModel

    from nlu.model.joint import JointModel

    ours, _ = JointModel.load(trained.model_dir)
    theirs = AutoModel.from_pretrained(trained.model_dir, add_pooling_layer=False)
    mine = ours.encoder.state_dict()
    for name, tensor in theirs.state_dict().items():
        assert torch.equal(tensor, mine[name]), name


def test_a_folder_in_the_old_weight_layout_still_loads(trained: Any, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from nlu.model import modeldir

    old = tmp_path / "old"
    shutil.copytree(trained.model_dir, old)
    weights = modeldir.load(trained.model_dir, "torch").weights
    assert weights is not None and any(k.startswith("encoder.") for k in weights)
    (old / modeldir.JOINT_HEADS_FILE).unlink()  # old folders kept every weight in one file
    save_file(dict(weights), str(old / modeldir.WEIGHTS_FILE), {"format": "pt"})  # model names
    assert not any(k.startswith("nlu.") for k in load_file(str(old / modeldir.WEIGHTS_FILE)))
    texts = ["turn on the kitchen lights", "make the hall red"]
    expected = Parser.from_pretrained(trained.model_dir).parse(texts)
    assert Parser.from_pretrained(old).parse(texts) == expected
    # 0.2's first layout: the encoder's names and the heads under "nlu." in model.safetensors
    combined = {**load_file(str(trained.model_dir / modeldir.WEIGHTS_FILE))}
    combined.update(load_file(str(trained.model_dir / modeldir.JOINT_HEADS_FILE)))
    save_file(combined, str(old / modeldir.WEIGHTS_FILE), {"format": "pt"})
    assert Parser.from_pretrained(old).parse(texts) == expected


def test_every_reader_takes_the_run_folder_too(trained: Any) -> None:
    run = Path(trained.model_dir).parent
    assert Parser.from_pretrained(run).parse(["lights on"]) == Parser.from_pretrained(
        trained.model_dir
    ).parse(["lights on"])


def test_every_model_folder_has_a_model_card(trained: Any) -> None:
    card = (Path(trained.model_dir) / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: nlu\n")
    assert "| lights | set_color, turn_off, turn_on | color, room |" in card
    assert "## Metrics (dev split" in card and "exact match" in card
    assert "## Intended use" in card and "tests/fixtures/skills" in card


def test_save_pretrained_and_from_pretrained_are_symmetric(trained: Any, tmp_path: Path) -> None:
    parser = Parser.from_pretrained(trained.model_dir)
    again = Parser.from_pretrained(parser.save_pretrained(tmp_path / "copy"))
    texts = ["turn on the kitchen lights", "make the hall red"]
    assert again.parse(texts) == parser.parse(texts)
    assert (tmp_path / "copy" / "README.md").read_text() == (
        Path(trained.model_dir) / "README.md"
    ).read_text()


class _LocalHub:
    """A stand-in for huggingface_hub.HfApi that stores uploads in a local folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def create_repo(self, repo_id: str, **kwargs: Any) -> object:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        (self.root / repo_id).mkdir(parents=True, exist_ok=True)
        return repo_id

    def upload_folder(self, **kwargs: Any) -> object:
        self.calls.append(("upload_folder", kwargs))
        shutil.copytree(kwargs["folder_path"], self.root / kwargs["repo_id"], dirs_exist_ok=True)
        return f"local://{kwargs['repo_id']}/commit/1"


def test_push_to_hub_uploads_a_loadable_folder(trained: Any, tmp_path: Path) -> None:
    hub = _LocalHub(tmp_path / "hub")
    parser = Parser.from_pretrained(trained.model_dir)
    url = parser.push_to_hub("team/lights-nlu", api=hub)
    assert url == "local://team/lights-nlu/commit/1"
    assert [name for name, _ in hub.calls] == ["create_repo", "upload_folder"]
    assert hub.calls[0][1]["private"] is True and hub.calls[1][1]["repo_type"] == "model"
    pulled = Parser.from_pretrained(tmp_path / "hub" / "team" / "lights-nlu")
    assert pulled.parse(["lights on"]) == parser.parse(["lights on"])


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda d: (d / "model.safetensors").write_bytes(os.urandom(4096)), "model.safetensors"),
        (lambda d: (d / "nlu.json").write_text('{"skills": '), "nlu.json is damaged"),
        (lambda d: (d / "config.json").write_text("[]"), "config.json"),
        (lambda d: (d / "tokenizer.json").write_text("{"), "tokenizer.json"),
    ],
)
def test_a_damaged_model_folder_is_one_line_and_exit_2(
    trained: TrainResult,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[Path], None],
    fragment: str,
) -> None:
    model = tmp_path / "model"
    shutil.copytree(trained.model_dir, model)
    damage(model)
    assert main(["predict", "lights on", "--model", str(model)]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1, err
    # The server fails before opening its port, with the same line.
    assert main(["serve", str(model), "--port", "1"]) == 2
    assert fragment in capsys.readouterr().err


@pytest.mark.slow
def test_a_truncated_onnx_graph_is_named(
    trained: TrainResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nlu.model.export import export_onnx

    target = export_onnx(model_dir=trained.model_dir, out_dir=tmp_path / "onnx")
    with target.open("r+b") as handle:
        handle.truncate(target.stat().st_size // 2)
    assert main(["predict", "lights on", "--model", str(tmp_path / "onnx")]) == 2
    assert "model.onnx is damaged or truncated" in capsys.readouterr().err


def test_loading_reads_the_labels_once(trained: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checking and loading a folder share what they read: nlu.json is read once per load."""
    reads: list[str] = []
    real = Path.read_text

    def counted(self: Path, *args: Any, **kwargs: Any) -> str:
        reads.append(self.name)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counted)
    nlu.load(trained.model_dir)
    assert reads.count("nlu.json") == 1
    assert reads.count("config.json") == 1


def test_transformers_loads_the_encoder_without_a_word_about_our_keys(
    trained: Any, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from transformers import AutoModel

    from nlu.model import modeldir

    with caplog.at_level(logging.INFO):
        AutoModel.from_pretrained(str(trained.model_dir))
    said = capfd.readouterr()
    assert "UNEXPECTED" not in said.out + said.err + caplog.text
    assert (Path(trained.model_dir) / modeldir.JOINT_HEADS_FILE).is_file()
