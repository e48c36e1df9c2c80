"""A model folder is one consistent thing: labels edited after saving, a graph from another
model, a missing last stage, a killed save or export are refused or cleaned, on every backend,
with one line that names the file and the fix (issue 36)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nlu.inference.parser import Parser
from nlu.model import integrity, modeldir
from nlu.model.modeldir import ModelDirError


def _edit_labels(folder: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    meta = json.loads((folder / "nlu.json").read_text())
    edit(meta["skills"][0])
    (folder / "nlu.json").write_text(json.dumps(meta))


EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "intent appended": lambda s: s["intents"].append("dance"),
    "slot type dropped": lambda s: s["slot_types"].pop(),
    "intents swapped": lambda s: s["intents"].reverse(),  # same shapes: only the digest tells
    "skill renamed": lambda s: s.update(name="lamps"),
}


@pytest.fixture(scope="module")
def exported(trained: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nlu.model.export import export_onnx

    out = tmp_path_factory.mktemp("exported") / "onnx"
    export_onnx(model_dir=trained.model_dir, out_dir=out)
    return out


@pytest.mark.parametrize("edit", list(EDITS))
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_a_folder_whose_labels_were_edited_is_refused(
    trained: Any, exported: Path, tmp_path: Path, edit: str, backend: str
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(trained.model_dir if backend == "torch" else exported, folder)
    Parser.from_pretrained(folder, backend=backend)  # as saved: loads
    _edit_labels(folder, EDITS[edit])
    weights = "nlu_heads.safetensors" if backend == "torch" else "model.onnx"
    with pytest.raises(ModelDirError, match=f"{weights}.*(other labels|has \\d+ (rows|columns))"):
        Parser.from_pretrained(folder, backend=backend)
    with pytest.raises(ModelDirError) as err:
        modeldir.check(folder, backend)
    assert "\n" not in str(err.value) and "nlu.json" in str(err.value)


def test_a_graph_exported_before_the_digest_still_has_its_shapes_checked(
    exported: Path, tmp_path: Path
) -> None:
    import onnx

    folder = tmp_path / "onnx"
    shutil.copytree(exported, folder)
    graph = onnx.load_model(str(folder / "model.onnx"), load_external_data=False)
    kept = [p for p in graph.metadata_props if p.key != integrity.DIGEST_KEY]
    assert len(kept) < len(graph.metadata_props)  # the export stamped it
    del graph.metadata_props[:]
    graph.metadata_props.extend(kept)
    onnx.save_model(graph, str(folder / "model.onnx"))
    Parser.from_pretrained(folder)
    _edit_labels(folder, EDITS["intent appended"])
    with pytest.raises(ModelDirError, match=r"intent_logits has \d+ columns"):
        Parser.from_pretrained(folder)


def test_a_model_without_its_detector_is_incomplete_until_calibrated(
    trained: Any, tmp_path: Path
) -> None:
    from nlu.config import OodConfig
    from nlu.training.calibrate import recalibrate

    folder = tmp_path / "model"
    shutil.copytree(trained.model_dir, folder)
    config = (folder / "training_config.yaml").read_text()
    assert "oos_method: none" in config  # the fixture trains without a detector: complete
    Parser.from_pretrained(folder)
    # The same folder from a training that asked for a detector and stopped before fitting it.
    (folder / "training_config.yaml").write_text(
        config.replace("oos_method: none", "oos_method: energy")
    )
    with pytest.raises(ModelDirError, match=f"nlu calibrate {folder}"):
        Parser.from_pretrained(folder)
    recalibrate(folder, OodConfig(oos_method="energy"))
    assert Parser.from_pretrained(folder).ood is not None


def test_a_run_that_did_not_finish_says_how_to_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints" / "epoch_001").mkdir(parents=True)
    (run / "config.yaml").write_text("epochs: 3\n")
    for where in (run, run / "model"):
        with pytest.raises(ModelDirError, match=r"did not finish.*--resume"):
            Parser.from_pretrained(where)


def test_killed_saves_and_exports_leave_nothing_behind_after_the_next(
    trained: Any, tmp_path: Path
) -> None:
    from nlu.model.export import export_onnx

    target = tmp_path / "model"
    shutil.copytree(trained.model_dir, target)
    dead = _dead_pid()
    for leftover in (f".model.saving-{dead}", f".model.replaced-{dead}", f".onnx.exporting-{dead}"):
        (tmp_path / leftover).mkdir()
        (tmp_path / leftover / "model.onnx").write_bytes(b"x" * 1024)
    alive = tmp_path / f".model.saving-{os.getppid()}"  # another process saving: kept
    alive.mkdir()
    export_onnx(model_dir=target, out_dir=tmp_path / "onnx")
    modeldir.save(target, modeldir.load(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model", "onnx", alive.name])


def _dead_pid() -> int:
    """A process id that no running process has."""
    pid = 999_999
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1
