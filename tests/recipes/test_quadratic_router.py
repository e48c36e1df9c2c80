"""The quadratic router (`router: qda` in `nlu federated`): regularised discriminant analysis
fitted from the clients' per-skill statistics, served through `Router.curvature`. It must be
the Gaussian classifier it claims to be, reduce to the linear discriminant at shrinkage 1,
and be what every path computes: federation rounds, the saved folder, ONNX and add-skill."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nlu.config import ConfigError, build
from nlu.federated.config import FederatedConfig
from nlu.federated.router import fit_quadratic_router, fit_router
from nlu.model.ood import shared_precision
from tests.helpers import CONFIGS, FIXTURES, fed_config


def spreads(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three skills with nearby means and very different spreads: a narrow one, a broad one,
    and one stretched along a direction."""
    rng = np.random.default_rng(seed)
    dim = 6
    stretch = np.eye(dim)
    stretch[0, 0] = 6.0
    x = np.concatenate(
        [
            rng.normal(size=(300, dim)) * 0.3,
            rng.normal(size=(300, dim)) * 3.0 + 0.5,
            rng.normal(size=(300, dim)) @ stretch - 0.5,
        ]
    )
    return x, np.repeat(np.arange(3), 300)


def statistics(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sums = np.zeros((n, x.shape[1]))
    np.add.at(sums, y, x)
    outers = np.stack([x[y == k].T @ x[y == k] for k in range(n)])
    return sums, np.bincount(y, minlength=n).astype(float), outers


def quadratic_logits(x: np.ndarray, fit: tuple[np.ndarray, ...]) -> np.ndarray:
    weight, bias, curvature = fit
    return x @ weight.T + bias - 0.5 * np.einsum("nd,sde,ne->ns", x, curvature, x)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(1, keepdims=True)


@pytest.mark.parametrize("shrinkage", [0.0, 0.5, 0.95])
def test_the_quadratic_router_is_the_shrunk_gaussian_posterior(shrinkage: float) -> None:
    x, y = spreads()
    fit = fit_quadratic_router(*statistics(x, y, 3), shrinkage=shrinkage)
    # The posterior computed the long way: each skill's Gaussian with its shrunk covariance.
    means = np.stack([x[y == k].mean(0) for k in range(3)])
    own = [np.cov(x[y == k].T) for k in range(3)]
    pooled = sum((x[y == k] - means[k]).T @ (x[y == k] - means[k]) for k in range(3)) / (900 - 3)
    log_density = np.zeros((len(x), 3))
    for k in range(3):
        precision = shared_precision((1 - shrinkage) * own[k] + shrinkage * pooled)
        diff = x - means[k]
        log_density[:, k] = (
            -0.5 * np.einsum("nd,de,ne->n", diff, precision, diff)
            + 0.5 * np.linalg.slogdet(precision)[1]
            + np.log(1 / 3)
        )
    np.testing.assert_allclose(softmax(quadratic_logits(x, fit)), softmax(log_density), atol=1e-6)


def test_shrinkage_one_is_the_linear_discriminant() -> None:
    x, y = spreads()
    sums, counts, outers = statistics(x, y, 3)
    weight, bias, curvature = fit_quadratic_router(sums, counts, outers, shrinkage=1.0)
    assert np.abs(curvature).max() < 1e-9
    w_lda, b_lda = fit_router(sums, counts, outers.sum(0))
    np.testing.assert_allclose(weight, w_lda, rtol=1e-6, atol=1e-9)
    # The same decisions; the bias differs by a constant (the shared log-determinant).
    np.testing.assert_allclose(bias - b_lda, (bias - b_lda)[0], atol=1e-6)


def test_skills_that_differ_in_spread_need_the_quadratic_term() -> None:
    x, y = spreads()
    sums, counts, outers = statistics(x, y, 3)
    test_x, test_y = spreads(seed=1)
    w, b = fit_router(sums, counts, outers.sum(0))
    lda_accuracy = float(((test_x @ w.T + b).argmax(1) == test_y).mean())
    accuracy = {}
    for shrinkage in (0.0, 0.5):
        quadratic = quadratic_logits(test_x, fit_quadratic_router(sums, counts, outers, shrinkage))
        accuracy[shrinkage] = float((quadratic.argmax(1) == test_y).mean())
    # Trusting the skills' own spreads more separates them better here.
    assert accuracy[0.0] > 0.95 and accuracy[0.0] > accuracy[0.5] > lda_accuracy + 0.05, (
        accuracy,
        lda_accuracy,
    )


def test_a_skill_no_client_holds_is_never_chosen() -> None:
    x, y = spreads()
    sums, counts, outers = statistics(x, y, 3)
    sums[1], counts[1], outers[1] = 0, 0, 0
    weight, bias, curvature = fit_quadratic_router(sums, counts, outers, 0.9)
    assert bias[1] < -1e3 and not curvature[1].any() and not weight[1].any()
    assert not (quadratic_logits(x, (weight, bias, curvature)).argmax(1) == 1).any()


def test_router_shrinkage_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"router_shrinkage=1\.5"):
        build(FederatedConfig, {"router": "qda", "router_shrinkage": 1.5}, source="t")
    with pytest.raises(ConfigError, match="router"):
        build(FederatedConfig, {"router": "quadratic"}, source="t")


def test_a_curvature_of_the_wrong_shape_is_refused(tiny_encoder: str) -> None:
    from nlu.labels import SkillLabels
    from nlu.model.joint import build_model

    model, _ = build_model(
        encoder=tiny_encoder,
        skills=[SkillLabels(name="a", intents=["x"], slots=[]), SkillLabels("b", ["y"], [])],
        pooling="mean",
        dropout=0.1,
    )
    with pytest.raises(ValueError, match="expected \\(2, 64, 64\\)"):
        model.router.set_curvature(torch.zeros(3, 64, 64))


@pytest.fixture(scope="module")
def qda_federation(tiny_encoder: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Two skill owners (lights, timer) with the quadratic router."""
    from nlu.federated.simulation import federated

    out = tmp_path_factory.mktemp("qda") / "run"
    cfg = fed_config(tiny_encoder, out, rounds=3, router="qda", router_shrinkage=0.5)
    return cfg, federated(cfg)


@pytest.mark.slow
def test_a_qda_federation_saves_serves_and_exports_its_router(
    qda_federation: Any, tmp_path: Path
) -> None:
    from nlu.data.loaders import load_train_dev
    from nlu.evaluation.metrics import score
    from nlu.federated.client import sentence_vectors
    from nlu.inference.parser import Parser
    from nlu.model.alignment import encode
    from nlu.model.export import export_onnx
    from nlu.model.features import encodings_inputs
    from nlu.model.joint import JointModel

    cfg, result = qda_federation
    last = result.history[-1]["dev"]
    assert last["router_accuracy"] >= 95.0
    model, folder = JointModel.load(result.model_dir)
    curvature = model.router.curvature
    assert curvature is not None and curvature.shape == (2, 64, 64)
    assert curvature.abs().max() > 0  # shrinkage 0.5: the skills keep their own spreads
    # The saved router is the fit of the final encoder's training vectors, by the same
    # function, as if the server had seen them all (up to the float32 statistics that travel).
    data = load_train_dev(cfg.student.data, seed=cfg.student.seed)
    x, s = sentence_vectors(data.train, model, folder.tokenizer, folder.meta.max_length)
    central = quadratic_logits(x, fit_quadratic_router(*statistics(x, s, 2), shrinkage=0.5))
    with torch.inference_mode():
        served = model.router(torch.from_numpy(x).float()).double().numpy()
    np.testing.assert_allclose(softmax(served), softmax(central), atol=1e-3)
    assert (served.argmax(1) == s).all()
    # The clients' last dev scores are the saved model's (the evaluation had the curvature).
    parser = Parser.from_pretrained(result.model_dir)
    texts = [e.text for e in data.dev]
    overall = score(data.dev, parser.parse(texts), tokenizer=parser.tokenizer)["overall"]
    for key in ("intent_accuracy", "exact_match", "router_accuracy"):
        assert overall[key] == pytest.approx(last[key], abs=0.011)
    # Without its curvature the same folder would route differently: the term is used.
    batch = encodings_inputs(encode(parser.tokenizer, texts, parser.max_length), 0)
    quadratic = parser.forward(batch).router
    model.router.set_curvature(None)
    with torch.inference_mode():
        linear = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).router_logits
    assert np.abs(quadratic - linear.numpy()).max() > 1e-2
    # ONNX carries it.
    export_onnx(model_dir=result.model_dir, out_dir=tmp_path / "onnx")
    onnx = Parser.from_pretrained(tmp_path / "onnx")
    np.testing.assert_allclose(onnx.forward(batch).router, quadratic, rtol=1e-4, atol=1e-3)


@pytest.mark.slow
def test_add_skill_keeps_the_old_curvature_and_gives_new_rows_none(
    qda_federation: Any, tmp_path: Path
) -> None:
    from nlu.model.joint import JointModel
    from nlu.schema import Example
    from nlu.training.add_skill import add_skill

    _, result = qda_federation
    old, _ = JointModel.load(result.model_dir)
    extra = tmp_path / "weather.jsonl"
    import json

    rows = [
        Example(text=t, skill="weather", intent="forecast")
        for t in ("will it rain today", "weather tomorrow", "is it sunny", "how cold is it")
    ]
    extra.write_text(
        "".join(
            json.dumps({"text": e.text, "skill": e.skill, "intent": e.intent}) + "\n" for e in rows
        )
    )
    out = add_skill(
        model_dir=result.model_dir,
        skill_data=[str(extra)],
        out_dir=tmp_path / "ext",
        replay=[str(FIXTURES / "skills"), str(FIXTURES / "timer.jsonl")],
    )
    new, _ = JointModel.load(out.model_dir)
    assert old.router.curvature is not None and new.router.curvature is not None
    torch.testing.assert_close(new.router.curvature[:2], old.router.curvature)
    assert not new.router.curvature[2].any()


def test_the_shipped_federated_example_is_a_valid_config_for_skill_owners() -> None:
    from nlu.config import read_values

    example = CONFIGS / "federated_example.yaml"
    cfg = build(FederatedConfig, read_values(example), source=str(example))
    fed = cfg.federation
    assert (fed.partition, fed.router, cfg.student.model.router_input) == ("skill", "qda", "layers")
