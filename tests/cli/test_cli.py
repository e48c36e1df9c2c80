"""The CLI is a thin layer: it calls the library and turns user errors into clear messages."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from nlu.cli import main


def test_train_then_predict_and_evaluate_through_the_cli(
    tiny_encoder: str, tiny_skill: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = [
        "train",
        f"data={tiny_skill}",
        f"encoder={tiny_encoder}",
        "samples_per_template=3",
        f"output_dir={out}",
        "batch_size=8",
    ]
    assert main([*args, "epochs=2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model_dir"] == str(out / "model")
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["optim"]["epochs"] == 2 and saved["model"]["encoder"] == tiny_encoder  # resolved

    assert main(["predict", "turn on the hall lights", "--model", str(out / "model")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["text"] == "turn on the hall lights" and result["skill"]["name"] == "lights"

    assert (
        main(["evaluate", str(out / "model"), str(tiny_skill), "--out", str(tmp_path / "eval")])
        == 0
    )
    assert "| overall (in scope) | 3 |" in capsys.readouterr().out

    # --resume continues the same run from its last checkpoint: only the third epoch trains.
    assert main([*args, "epochs=3", "--resume"]) == 0
    capsys.readouterr()
    history = json.loads((out / "train_summary.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["predict", "hi", "--model", "/no/such/model"],
            "does not exist; train one with `nlu train`",
        ),
        (["serve", "/no/such/model"], "does not exist"),
        (["serve", "/no/such/model", "--workers", "0"], "--workers must be at least 1"),
        (["serve", "/no/such/model", "--max-batch", "0"], "--max-batch must be at least 1"),
        (["train", "epochz=3"], "unknown key 'epochz'"),
        (
            # Not the default output_dir: a trained demo model there is refused first.
            ["train", "data=/no/such/skills", "epochs=1", "output_dir=/no/such/run"],
            "/no/such/skills: no such file",
        ),
        (["evaluate", "/no/such/model", "skills"], "does not exist"),
    ],
)
def test_user_errors_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_resume_without_a_checkpoint_fails_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "data=skills", f"output_dir={tmp_path / 'run'}", "--resume"]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing written for a run that never started


def test_every_user_error_the_cli_catches_exists() -> None:
    """A class moved to another module must move in USER_ERRORS too, or its message turns
    into a traceback."""
    import importlib

    from nlu.cli import USER_ERRORS

    for module, names in USER_ERRORS.items():
        found = importlib.import_module(module)
        for name in names:
            assert isinstance(getattr(found, name, None), type), f"{module}.{name}"


def test_old_module_paths_still_import_and_warn() -> None:
    """nlu 0.1's flat modules (CHANGELOG.md) answer with the moved module's objects."""
    import importlib
    import sys

    from nlu._aliases import MOVED

    for old, new in MOVED.items():
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
            module = importlib.import_module(old)
        target = importlib.import_module(new)
        public = [n for n in vars(target) if not n.startswith("_")]
        assert public and all(getattr(module, n) is getattr(target, n) for n in public)
    with pytest.warns(DeprecationWarning, match="nlu.model.JointModel moved"):
        from nlu.model import JointModel
    from nlu.model.joint import JointModel as moved

    assert JointModel is moved
    with pytest.warns(DeprecationWarning):
        from nlu.federated import federated
    from nlu.federated.simulation import federated as simulation

    assert federated is simulation


def test_old_config_functions_still_work_and_warn(tmp_path: Path) -> None:
    """0.1's per-recipe loaders answer through the one loader, with a warning that names it."""
    from nlu.config import load

    path = tmp_path / "fed.yaml"
    path.write_text("rounds: 2\nepochs: 1\n")
    with pytest.warns(
        DeprecationWarning, match=r"load_federated_config moved to nlu\.config\.load"
    ):
        from nlu.federated.config import load_federated_config
    from nlu.federated.config import FederatedConfig

    assert load_federated_config(path) == load(FederatedConfig, path)


def test_every_public_name_of_0_1_still_imports() -> None:
    """Every public function, class and constant of nlu 0.1's modules (listed when 0.2 moved
    them) is still reachable by its old import path."""
    import importlib
    import json
    import warnings

    from tests.helpers import FIXTURES

    api = json.loads((FIXTURES / "api_0.1.json").read_text())
    missing = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for module, names in api.items():
            found = importlib.import_module(module)
            missing += [f"{module}.{n}" for n in names if not hasattr(found, n)]
    assert not missing, missing


def test_a_warning_is_printed_once_per_command(
    tmp_path: Path, make_config: Callable[..., Any], tiny_skill: Path
) -> None:
    """Train, dev and test read the same skill file; its warning used to come two or three times."""
    import subprocess
    import sys

    from nlu.config import dump_config

    skills = tmp_path / "skills"
    shutil.copytree(tiny_skill, skills)
    skill = skills / "lights" / "skill.yaml"
    skill.write_text(skill.read_text().replace("[kitchen, bedroom", "[kitchen, Kitchen, bedroom"))
    cfg = make_config(tmp_path / "run", data=[str(skills)], epochs=1)
    (tmp_path / "cfg.yaml").write_text(dump_config(cfg))
    done = subprocess.run(
        [sys.executable, "-m", "nlu.cli", "train", str(tmp_path / "cfg.yaml")],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count("'Kitchen' is listed twice") == 1, done.stderr[-3000:]


def test_predict_takes_the_users_zone_and_names_a_bad_one(
    trained: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(trained.model_dir)
    now = ["--reference-time", "2026-12-06T20:00:00+00:00"]
    assert main(["predict", "lights on", "--model", model, *now, "--timezone", "Asia/Tokyo"]) == 0
    assert json.loads(capsys.readouterr().out)["intent"]["name"] == "turn_on"
    for argv, message in [
        (["--timezone", "Asia/Tokio"], "timezone: unknown time zone 'Asia/Tokio'"),
        (["--reference-time", "tomorrow"], "--reference-time: 'tomorrow' is not an ISO 8601"),
        (["--locale", "en_XX"], "locale: unknown locale 'en_XX'"),
    ]:
        assert main(["predict", "lights on", "--model", model, *argv]) == 2
        assert message in capsys.readouterr().err
