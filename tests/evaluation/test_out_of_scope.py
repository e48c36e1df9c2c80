"""Out-of-scope rejection and calibrated confidence: the numbers, the result shape, every
backend, the server and evaluation."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

from nlu.config import TrainConfig
from nlu.data.loaders import load_split
from nlu.evaluation.evaluate import evaluate
from nlu.inference.parser import OptionError, Parser
from nlu.model import modeldir, ood
from nlu.serve.app import create_app
from nlu.training.engine import TrainResult
from nlu.training.train import train
from tests.helpers import FIXTURES

NEGATIVES = """train:
  - order a pizza
  - what is the capital of france
  - tell me a joke
  - send an email to my boss
  - how tall is mount everest
  - play some jazz music
  - what's the weather tomorrow
  - book a table for two
  - call my mother
  - translate hello into french
  - how many ounces in a cup
  - add eggs to the shopping list
test:
  - who wrote hamlet
  - order sushi for dinner
  - what's the score of the game
  - remind me to call the bank
"""


# -- the numbers ----------------------------------------------------------------------------------


def test_auroc_fpr_and_ece_on_known_cases() -> None:
    assert ood.auroc([0.1, 0.2, 0.3], [0.4, 0.5]) == 1.0
    assert ood.auroc([0.4, 0.5], [0.1, 0.2, 0.3]) == 0.0
    assert ood.auroc([0.1, 0.5], [0.5, 0.9]) == pytest.approx(0.875)  # a tie counts half
    # At 95 % in-scope recall the threshold is 0.95: only the 0.5 text is (wrongly) accepted.
    assert ood.fpr_at_95(list(np.linspace(0, 1, 101)), [0.5, 0.99, 2.0]) == pytest.approx(1 / 3)
    # Perfectly calibrated: 80 % confident and right 80 % of the time.
    assert ood.expected_calibration_error([0.8] * 10, [True] * 8 + [False] * 2) == pytest.approx(0)
    assert ood.expected_calibration_error([0.9] * 10, [True] * 5 + [False] * 5) == pytest.approx(
        0.4
    )


def test_temperature_scaling_recovers_the_temperature_that_made_the_labels() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(20000, 6))
    probs = np.exp(ood.log_softmax(logits / 2.5))
    targets = np.array([rng.choice(6, p=p) for p in probs])
    assert ood.fit_temperature(logits, targets) == pytest.approx(2.5, rel=0.05)


def test_mahalanobis_scores_far_points_higher_and_respects_the_covariance() -> None:
    rng = np.random.default_rng(0)
    # Two classes, stretched along the first axis: far along it is less surprising.
    cov = np.diag([25.0, 0.25])
    a = rng.multivariate_normal([0, 0], cov, 2000)
    b = rng.multivariate_normal([0, 10], cov, 2000)
    means, precision = ood.fit_mahalanobis(np.vstack([a, b]), np.array([0] * 2000 + [1] * 2000))
    router = np.zeros((3, 2))
    points = np.array([[8.0, 0.0], [0.0, 3.0], [0.0, 0.0]])
    d = ood.score("mahalanobis", router, points, means=means, precision=precision)
    assert d[2] < d[0] < d[1]  # 8 along the long axis is nearer than 3 along the short one
    assert d.min() >= 0


def test_thresholds_are_checked_per_method() -> None:
    assert ood.check_threshold("msp", 0.3) is None
    assert "in [0, 1]" in (ood.check_threshold("temperature", 1.5) or "")
    assert ood.check_threshold("mahalanobis", 350.0) is None
    assert "finite" in (ood.check_threshold("energy", float("nan")) or "")


# -- a tiny model with out-of-scope examples -------------------------------------------------------


@pytest.fixture(scope="module")
def skills_with_negatives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("skills")
    shutil.copytree(FIXTURES / "skills" / "lights", root / "lights")
    (root / "out_of_scope.yaml").write_text(NEGATIVES)
    return root


@pytest.fixture(scope="module")
def guarded(
    make_config: Callable[..., TrainConfig],
    skills_with_negatives: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> TrainResult:
    cfg = make_config(
        tmp_path_factory.mktemp("guarded"),
        data=[str(skills_with_negatives)],
        oos_method="mahalanobis",
        target_recall=0.9,
    )
    return train(cfg)


@pytest.fixture(scope="module")
def parser(guarded: TrainResult) -> Parser:
    return Parser.from_pretrained(guarded.model_dir)


def test_negatives_are_read_and_trained_as_their_own_task(
    guarded: TrainResult, skills_with_negatives: Path
) -> None:
    train_split = load_split(skills_with_negatives, "train", samples_per_template=10, seed=0)
    assert sum(not e.in_scope for e in train_split.examples) >= 8
    test_split = load_split(skills_with_negatives, "test").examples
    assert next(e.text for e in test_split if not e.in_scope) == "who wrote hamlet"
    report = guarded.out_of_scope
    assert report is not None and set(report["methods"]) == set(ood.METHODS)
    # The threshold keeps the target share of in-scope dev texts.
    assert report["methods"]["mahalanobis"]["in_scope_recall"] >= 90.0


def test_a_rejected_text_says_so_and_keeps_its_candidates(parser: Parser) -> None:
    assert parser.ood is not None and parser.ood.method == "mahalanobis"
    (result,) = parser.parse(["order a pizza"], oos_threshold=-1.0)  # everything scores above
    assert (result.in_scope, result.skill, result.intent, result.slots) == (False, None, None, [])
    assert result.oos_score is not None and result.oos_score > -1.0
    assert [s.name for s in result.skills] == ["lights"] and result.intents
    (kept,) = parser.parse(["turn on the kitchen lights"], oos_threshold=1e9)
    assert kept.in_scope and kept.skill is not None and kept.skill.name == "lights"
    # A forced skill is never rejected, but still shows its score.
    (forced,) = parser.parse(["order a pizza"], skill="lights", oos_threshold=-1.0)
    assert forced.in_scope and forced.skill is not None and forced.oos_score == result.oos_score


def test_in_scope_texts_score_lower_than_out_of_scope_ones(parser: Parser) -> None:
    inside = parser.parse(["turn on the kitchen lights", "switch off the hall light"])
    outside = parser.parse(["who wrote hamlet", "order sushi for dinner"])
    assert max(r.oos_score or 0 for r in inside) < min(r.oos_score or 0 for r in outside)


@pytest.mark.slow
def test_onnx_and_int8_make_the_same_decisions(guarded: TrainResult, tmp_path: Path) -> None:
    from nlu.model.export import export_onnx

    texts = [
        "turn on the kitchen lights",
        "make the hall blue",
        "who wrote hamlet",
        "order sushi for dinner",
        "what's the score of the game",
        "lights off in the bedroom",
    ]
    torch_results = Parser.from_pretrained(guarded.model_dir, backend="torch").parse(texts)
    for quantize in (None, "int8"):
        out = tmp_path / str(quantize)
        export_onnx(model_dir=guarded.model_dir, out_dir=out, quantize=quantize)
        onnx = Parser.from_pretrained(out, backend="onnx")
        assert onnx.ood is not None and onnx.ood.threshold == pytest.approx(
            Parser.from_pretrained(guarded.model_dir).ood.threshold
        )
        results = onnx.parse(texts)
        if quantize is None:
            assert [r.in_scope for r in results] == [r.in_scope for r in torch_results]
            for a, b in zip(results, torch_results, strict=True):
                assert a.oos_score == pytest.approx(b.oos_score, rel=1e-3, abs=1e-2)
        else:  # int8 moves scores a little; the clear cases stay decided the same way
            assert [r.in_scope for r in results][2:4] == [r.in_scope for r in torch_results][2:4]


@pytest.fixture
def client(parser: Parser) -> Iterator[TestClient]:
    with TestClient(create_app(parser)) as c:
        yield c


def test_the_server_reports_and_overrides_the_threshold(client: TestClient, parser: Parser) -> None:
    health = client.get("/health").json()
    assert health["out_of_scope"]["method"] == "mahalanobis"
    rejected = client.post("/parse", json={"text": "lights on", "oos_threshold": -1}).json()
    assert rejected["in_scope"] is False and rejected["skill"] is None
    assert client.post("/parse", json={"text": "lights on", "oos_threshold": 1e9}).json()[
        "in_scope"
    ]
    bad = client.post("/parse", json={"text": "lights on", "oos_threshold": "high"})
    assert bad.status_code == 422 and "oos_threshold" in json.dumps(bad.json())
    schema = client.get("/openapi.json").json()
    assert "oos_threshold" in schema["components"]["schemas"]["ParseRequest"]["properties"]
    assert "in_scope" in schema["components"]["schemas"]["ParseResult"]["properties"]


def test_a_probability_threshold_outside_0_1_is_refused(parser: Parser) -> None:
    import dataclasses

    assert parser.ood is not None
    msp = dataclasses.replace(parser.ood, method="msp", threshold=0.5)
    as_msp = Parser(
        forward=parser.forward,
        skills=parser.skills,
        tokenizer=parser.tokenizer,
        max_length=parser.max_length,
        backend="torch",
        ood=msp,
    )
    with TestClient(create_app(as_msp)) as c:
        r = c.post("/parse", json={"text": "lights on", "oos_threshold": 1.5})
        assert r.status_code == 422 and "in [0, 1]" in r.json()["error"]
        properties = c.get("/openapi.json").json()["components"]["schemas"]["ParseRequest"]
        assert properties["properties"]["oos_threshold"]["anyOf"][0]["maximum"] == 1
    with pytest.raises(OptionError, match=r"in \[0, 1\]"):
        as_msp.parse(["lights on"], oos_threshold=-0.1)


def test_a_folder_from_before_the_detector_accepts_everything(
    guarded: TrainResult, tmp_path: Path
) -> None:
    old = tmp_path / "old"
    shutil.copytree(guarded.model_dir, old)
    for name in (modeldir.OOD_FILE, modeldir.OOD_ARRAYS_FILE):
        (old / name).unlink()
    # Without ood.json but with a config that asks for a detector, the folder is incomplete
    # (tests/model/test_folder_integrity.py); the configs of that time had no `ood` group.
    config = yaml.safe_load((old / modeldir.TRAINING_CONFIG_FILE).read_text())
    del config["ood"]
    (old / modeldir.TRAINING_CONFIG_FILE).write_text(yaml.safe_dump(config))
    parser = Parser.from_pretrained(old)
    assert parser.ood is None
    results = parser.parse(["who wrote hamlet", "turn on the lights"])
    assert all(r.in_scope and r.oos_score is None and r.skill for r in results)
    with TestClient(create_app(parser)) as c:
        assert c.get("/health").json()["out_of_scope"] is None
        schema = c.get("/openapi.json").json()["components"]["schemas"]["ParseRequest"]
        assert "oos_threshold" not in schema["properties"]
        refused = c.post("/parse", json={"text": "hi", "oos_threshold": 0.5})
        assert refused.status_code == 422
    with pytest.raises(OptionError, match="no out-of-scope detector"):
        parser.parse(["hi"], oos_threshold=0.5)


def test_evaluate_reports_rejection_and_calibration(
    guarded: TrainResult, skills_with_negatives: Path, tmp_path: Path
) -> None:
    metrics = evaluate(model_dir=guarded.model_dir, data=[skills_with_negatives], out_dir=tmp_path)
    oos = metrics["out_of_scope"]
    assert oos["n_out_of_scope"] == 4 and oos["n_in_scope"] == metrics["overall"]["n"]
    assert 0 <= oos["recall"] <= 100 and 0.0 <= oos["auroc"] <= 1.0
    assert set(metrics["calibration"]) >= {"router_ece", "intent_ece"}
    assert set(metrics["calibration_uncalibrated"]) == {"router_ece", "intent_ece"}
    assert (tmp_path / "reliability.png").stat().st_size > 0
    assert "Out of scope:" in (tmp_path / "metrics.md").read_text()


def test_without_a_detector_nothing_changes(trained: TrainResult) -> None:
    parser = Parser.from_pretrained(trained.model_dir)  # trained with oos_method=none
    assert parser.ood is None
    assert not (trained.model_dir / modeldir.OOD_FILE).exists()
    (result,) = parser.parse(["turn on the kitchen lights"])
    assert result.in_scope and result.oos_score is None and result.skill is not None


# -- CLINC150 -------------------------------------------------------------------------------------


def test_clinc150_reader(tmp_path: Path) -> None:
    data = {
        "train": [["freeze my account", "freeze_account"], ["what's my pin", "pin_change"]],
        "val": [["lock my account", "freeze_account"]],
        "test": [["change my pin", "pin_change"], ["book a flight", "book_flight"]],
        "oos_train": [["sing a song", "oos"]],
        "oos_val": [["who are you", "oos"]],
        "oos_test": [["what is love", "oos"], ["walk the dog", "oos"]],
    }
    (tmp_path / "data_full.json").write_text(json.dumps(data))
    domains = {"banking": ["freeze_account", "pin_change"], "travel": ["book_flight"]}
    (tmp_path / "domains.json").write_text(json.dumps(domains))
    train = load_split(tmp_path, "train").examples
    assert [(e.skill, e.intent) for e in train] == [
        ("banking", "freeze_account"),
        ("banking", "pin_change"),
        (None, None),
    ]
    test = load_split(tmp_path / "data_full.json", "test").examples
    assert [e.skill for e in test] == ["banking", "travel", None, None]
    assert len(load_split(tmp_path, "dev").examples) == 2
    bad: dict[str, Any] = {**data, "train": [["x", "no_such_intent"]]}
    (tmp_path / "data_full.json").write_text(json.dumps(bad))
    from nlu.schema import DataError

    with pytest.raises(DataError, match="no_such_intent"):
        load_split(tmp_path, "train")


def test_auto_chooses_the_method_that_rejects_most_dev_negatives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from nlu.training.calibrate import _warn_if_weak, choose_method, middle_of_gap

    figures = {
        "energy": {"threshold": 1.0, "out_of_scope_recall": 90.0, "auroc": 0.95},
        "msp": {"threshold": 0.1, "out_of_scope_recall": 90.0, "auroc": 0.97},
        "mahalanobis": {"threshold": 9.0, "out_of_scope_recall": 40.0, "auroc": 0.99},
    }
    assert choose_method("auto", figures)["method"] == "energy"  # a tie on recall: energy
    figures["energy"]["out_of_scope_recall"] = 85.0
    assert choose_method("auto", figures)["method"] == "msp"  # else the most rejected
    # the threshold moves halfway to the nearest out-of-scope dev text above the in-scope edge
    assert middle_of_gap(1.0, np.array([0.5, 3.0, 5.0])) == 2.0
    assert middle_of_gap(1.0, np.array([0.5, 0.9])) == 1.0  # none above: the edge stays
    assert choose_method("energy", figures) == {"method": "energy", "rule": "configured"}
    no_negatives = {m: {"threshold": f["threshold"]} for m, f in figures.items()}
    assert choose_method("auto", no_negatives)["method"] == "mahalanobis"
    with caplog.at_level(logging.WARNING):
        _warn_if_weak("mahalanobis", figures["mahalanobis"], 20)
        _warn_if_weak("energy", figures["energy"], 20)
        _warn_if_weak("mahalanobis", {"threshold": 9.0}, 0)
    assert caplog.text.count("out-of-scope rejection is weak") == 1
    assert "no out-of-scope texts in dev, so the mahalanobis rejection threshold" in caplog.text
    assert "rejects 40% of the 20 out-of-scope dev texts" in caplog.text


def test_data_without_negatives_is_scored_closed_set_with_rejection_beside(
    guarded: TrainResult, tmp_path: Path
) -> None:
    metrics = evaluate(model_dir=guarded.model_dir, data=[FIXTURES / "skills"], out_dir=tmp_path)
    assert metrics["headline"].startswith("closed set")
    assert metrics["overall"]["n"] == metrics["with_rejection"]["overall"]["n"]
    # Nothing is rejected in the headline, so it is at least as good as with rejection on.
    on = metrics["with_rejection"]["overall"]
    assert metrics["overall"]["intent_accuracy"] >= on["intent_accuracy"]
    rows = [json.loads(r) for r in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert all(r["pred"]["in_scope"] for r in rows)
    oos = metrics["out_of_scope"]
    assert oos is None or oos["precision"] is None  # undefined without negatives: never 0.0
    text = (tmp_path / "metrics.md").read_text()
    assert "Headline: closed set" in text and "precision 0.0" not in text
