from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nlu.config import (
    ConfigError,
    TrainConfig,
    dump,
    dump_config,
    load_config,
    parse_config,
    replace,
)


def test_yaml_plus_overrides_are_typed(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 3\ndata: [skills]\nlearning_rate: 1e-4\n")
    cfg = load_config(
        path, ["epochs=5", "learning_rate=3e-5", "data=a,b", "resume=null", "head_learning_rate=1"]
    )
    assert cfg.optim.epochs == 5 and cfg.optim.learning_rate == 3e-5
    assert cfg.data.data == ["a", "b"]
    assert cfg.output.resume is None and cfg.optim.head_learning_rate == 1.0
    assert yaml.safe_load(dump_config(cfg))["optim"]["epochs"] == 5


def test_nested_groups_and_dotted_keys_equal_flat_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  epochs: 3\nmtl:\n  sampling: uniform\nseed: 7\n")
    nested = load_config(path, ["model.dropout=0.2", "finetune=heads"])
    flat = load_config(None, ["epochs=3", "sampling=uniform", "seed=7", "dropout=0.2"])
    assert nested == replace(flat, finetune="heads")
    assert nested.finetune.finetune == "heads" and nested.model.dropout == 0.2


def test_the_saved_config_reads_back_identically() -> None:
    cfg = load_config(None, ["epochs=2", "data=x.jsonl", "loss_weighting=dwa", "init_from=m"])
    assert parse_config(dump_config(cfg), source="saved") == cfg
    # Model folders written before the config was grouped hold flat keys.
    flat = "epochs: 2\ndata: [x.jsonl]\nloss_weighting: dwa\ninit_from: m\n"
    assert parse_config(flat, source="old") == cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["epoch=3"], "unknown key 'epoch'; did you mean 'epochs'?"),
        (["optim.dropout=0.1"], "unknown key 'optim.dropout'"),
        (["epochs=three"], "epochs must be int"),
        (["epochs=true"], "epochs must be int"),
        (["epochs"], "must look like key=value"),
        (["sampling=random"], "sampling='random'; choose one of proportional, temperature"),
        (["label_smoothing=1.5"], "label_smoothing=1.5; use a value in [0, 1)"),
    ],
)
def test_bad_config_is_an_error(overrides: list[str], message: str) -> None:
    import re

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, overrides)


def test_unknown_key_in_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 3\nlearning_rat: 0.1\n")
    with pytest.raises(
        ConfigError, match=r"unknown key 'learning_rat'; did you mean 'learning_rate'"
    ):
        load_config(path)


def test_every_key_is_reachable_flat_and_unique() -> None:
    import dataclasses

    from nlu.config import GROUPS, KEYS

    names = [f.name for cls in GROUPS.values() for f in dataclasses.fields(cls)]
    assert len(names) == len(set(names)), "a key name is used in two groups"
    assert set(KEYS) == {*names, "seed"}
    assert TrainConfig() == load_config(None, [])


def test_optional_mpnet_encoder_says_how_to_fetch_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nlu.model.encoders import resolve_encoder
    from nlu.model.modeldir import ModelDirError

    monkeypatch.setenv("NLU_MODELS", str(tmp_path))
    with pytest.raises(ModelDirError, match=r"scripts/get_mpnet\.sh"):
        resolve_encoder("mpnet")
    (tmp_path / "all-mpnet-base-v2").mkdir()
    (tmp_path / "all-mpnet-base-v2" / "config.json").write_text("{}")
    assert resolve_encoder("mpnet") == str(tmp_path / "all-mpnet-base-v2")
    assert resolve_encoder("bert-base-uncased") == "bert-base-uncased"


def test_one_loader_reads_every_recipes_config(tmp_path: Path) -> None:
    """Flat, dotted and grouped keys mean the same in the distillation and federated configs as
    in the training config, and each saved config reads back as it was."""
    from nlu.config import build, load
    from nlu.distill.config import DistillConfig
    from nlu.federated.config import FederatedConfig

    teachers = [{"name": "a", "kind": "nlu", "path": "m"}]
    flat = build(DistillConfig, {"teachers": teachers, "alpha": 0.7, "epochs": 2}, source="t")
    dotted = build(
        DistillConfig, {"teachers": teachers, "kd.alpha": 0.7, "optim.epochs": 2}, source="t"
    )
    nested = build(
        DistillConfig,
        {"teachers": teachers, "kd": {"alpha": 0.7}, "student": {"optim": {"epochs": 2}}},
        source="t",
    )
    assert flat == dotted == nested and flat.student.optim.epochs == 2
    assert flat.student.data.data == []  # a distillation student's gold data is optional
    path = tmp_path / "d.yaml"
    path.write_text(dump(flat))
    assert load(DistillConfig, path) == flat

    fed = build(FederatedConfig, {"rounds": 3, "federation.clients": 0, "seed": 5}, source="t")
    assert (fed.federation.rounds, fed.student.seed) == (3, 5)
    path.write_text(dump(fed))
    assert load(FederatedConfig, path) == fed


def test_the_loader_names_what_is_wrong_in_every_config() -> None:
    from nlu.config import build
    from nlu.distill.config import DistillConfig
    from nlu.serve.settings import ServeSettings

    with pytest.raises(ConfigError, match=r"teacher a: missing key 'kind'"):
        build(DistillConfig, {"teachers": [{"name": "a"}]}, source="t")
    with pytest.raises(ConfigError, match=r"teachers\[0\] must be a mapping"):
        build(DistillConfig, {"teachers": ["a"]}, source="t")
    with pytest.raises(ConfigError, match="must list at least one teacher"):
        build(DistillConfig, {"teachers": []}, source="t")
    with pytest.raises(ConfigError, match=r"nlu serve: port must be int, got 'eighty'"):
        build(ServeSettings, {"port": "eighty"}, source="nlu serve")
    with pytest.raises(ConfigError, match=r"unknown key 'max_bach'; did you mean 'max_batch'"):
        build(ServeSettings, {"max_bach": 8}, source="nlu serve")
    hosts = build(ServeSettings, {"trusted_hosts": ["a", "b"]}, source="nlu serve")
    assert hosts.trusted_hosts == ("a", "b")


def test_command_line_flags_go_through_the_loader(tmp_path: Path) -> None:
    """`--encoder` and the other flags are values for the loader, not key=value strings, and
    win over the file and the overrides."""
    from nlu.config import load

    path = tmp_path / "c.yaml"
    path.write_text("encoder: default\nepochs: 3\n")
    cfg = load(TrainConfig, path, ["epochs=4"], flags={"encoder": "x=y", "resume": None})
    assert (cfg.model.encoder, cfg.optim.epochs, cfg.output.resume) == ("x=y", 4, None)
    with pytest.raises(ConfigError, match="finetune='fast'; choose one of full"):
        load(TrainConfig, None, [], flags={"finetune": "fast"})
