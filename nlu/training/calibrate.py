"""The run's last stage: fit out-of-scope rejection and confidence calibration on a trained
model in memory, without retraining (`finish_run` saves them inside its folder); and
`nlu calibrate`, which refits a saved model's.

From the training set: the Mahalanobis statistics (one mean per intent, a shared covariance) of
the pooled sentence vectors. From the dev set: the router's and the intent heads' temperatures
(calibrated confidences), and for every method of `nlu.model.ood` the threshold that keeps
`target_recall` of the in-scope dev texts in scope; with out-of-scope dev texts also what each
method would reject and its AUROC. The configured method is saved; the others are reported in
`ood.json` so a user can compare them on their own data.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nlu.config import OodConfig
from nlu.inference.parser import Forward, torch_forward
from nlu.labels import LabelIndex
from nlu.model import modeldir
from nlu.model.alignment import Tokenizer, encode, pad_id
from nlu.model.features import encodings_inputs
from nlu.model.joint import JointModel
from nlu.model.ood import (
    METHODS,
    OutOfScope,
    auroc,
    expected_calibration_error,
    fit_mahalanobis,
    fit_temperature,
    log_softmax,
    score,
    threshold_for_recall,
)
from nlu.schema import Example

logger = logging.getLogger(__name__)

MAX_FIT_EXAMPLES = 20_000  # training texts for the Mahalanobis statistics (a random sample)


@dataclass
class Outputs:
    router: np.ndarray  # [N, skills]
    intents: np.ndarray  # [N, all intents]
    pooled: np.ndarray  # [N, hidden]


def model_outputs(
    forward: Forward, tokenizer: Tokenizer, texts: Sequence[str], max_length: int
) -> Outputs:
    router, intents, pooled = [], [], []
    for start in range(0, len(texts), 64):
        chunk = texts[start : start + 64]
        logits = forward(encodings_inputs(encode(tokenizer, chunk, max_length), pad_id(tokenizer)))
        if logits.pooled is None:
            raise ValueError("the model's forward pass returns no pooled features")
        router.append(logits.router)
        intents.append(logits.intents)
        pooled.append(logits.pooled)
    return Outputs(np.concatenate(router), np.concatenate(intents), np.concatenate(pooled))


def intent_classes(index: LabelIndex, examples: Sequence[Example]) -> np.ndarray:
    """Each in-scope example's intent as one id over all skills' intents."""
    offsets = {s.name: index.intent_slices[i].start for i, s in enumerate(index.skills)}
    return np.array(
        [offsets[e.skill] + index.intent_ids[e.skill][e.intent] for e in examples if e.skill]  # type: ignore[index]
    )


def intent_logits_of_own_skill(
    index: LabelIndex, intents: np.ndarray, examples: Sequence[Example]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per skill: its intent logits on its own dev texts, and their intent ids."""
    groups = []
    for k, skill in enumerate(index.skills):
        rows = [i for i, e in enumerate(examples) if e.skill == skill.name]
        if rows:
            ids = np.array([index.intent_ids[skill.name][examples[i].intent] for i in rows])  # type: ignore[index]
            groups.append((intents[rows][:, index.intent_slices[k]], ids))
    return groups


def fit_out_of_scope(
    cfg: OodConfig,
    model: JointModel,
    tokenizer: Tokenizer,
    max_length: int,
    train: Sequence[Example],
    dev: Sequence[Example],
    *,
    seed: int,
) -> OutOfScope | None:
    """The detector for `model` as it is in memory (the caller puts it into the folder)."""
    if cfg.oos_method == "none":
        return None
    dev_in = [e for e in dev if e.in_scope]
    dev_oos = [e for e in dev if not e.in_scope]
    if not dev_in:
        logger.warning("no in-scope dev examples: no out-of-scope threshold can be chosen")
        return None
    training = model.training
    model.eval()
    try:
        return _fit(cfg, model, tokenizer, max_length, train, dev_in, dev_oos, seed=seed)
    finally:
        model.train(training)


def _fit(
    cfg: OodConfig,
    model: JointModel,
    tokenizer: Tokenizer,
    max_length: int,
    train: Sequence[Example],
    dev_in: list[Example],
    dev_oos: list[Example],
    *,
    seed: int,
) -> OutOfScope:
    index, forward = model.index, torch_forward(model)
    # Dev labels the model never saw cannot calibrate it (they count as errors elsewhere).
    dev_in = [
        e for e in dev_in if e.skill in index.position and e.intent in index.intent_ids[e.skill]
    ]
    fit_on = [e for e in train if e.in_scope]
    if len(fit_on) > MAX_FIT_EXAMPLES:
        fit_on = random.Random(seed).sample(fit_on, MAX_FIT_EXAMPLES)
    seen = model_outputs(forward, tokenizer, [e.text for e in fit_on], max_length)
    means, precision = fit_mahalanobis(seen.pooled, intent_classes(index, fit_on))

    outputs = model_outputs(forward, tokenizer, [e.text for e in dev_in], max_length)
    skills = np.array([index.position[e.skill] for e in dev_in])  # type: ignore[index]
    intent_groups = intent_logits_of_own_skill(index, outputs.intents, dev_in)
    # A dev set the model gets entirely right (template-generated skill data often is) carries
    # no evidence of miscalibration: fitting would only sharpen every confidence to 1.
    router_t = (
        fit_temperature(outputs.router, skills)
        if (outputs.router.argmax(-1) != skills).any()
        else 1.0
    )
    intent_t = (
        _fit_grouped_temperature(intent_groups)
        if any((logits.argmax(-1) != ids).any() for logits, ids in intent_groups)
        else 1.0
    )
    oos_outputs = (
        model_outputs(forward, tokenizer, [e.text for e in dev_oos], max_length)
        if dev_oos
        else None
    )

    report: dict[str, Any] = {
        "dev_in_scope": len(dev_in),
        "dev_out_of_scope": len(dev_oos),
        "calibration": {
            "router_temperature": round(router_t, 4),
            "intent_temperature": round(intent_t, 4),
            "router_ece_before": _ece([(outputs.router, skills)], 1.0),
            "router_ece_after": _ece([(outputs.router, skills)], router_t),
            "intent_ece_before": _ece(intent_groups, 1.0),
            "intent_ece_after": _ece(intent_groups, intent_t),
        },
    }
    report["methods"] = method_figures(
        outputs, oos_outputs, cfg.target_recall, router_t, means, precision
    )
    method = report.setdefault("chosen", choose_method(cfg.oos_method, report["methods"]))["method"]
    chosen = report["methods"][method]
    detector = OutOfScope(
        method=method,
        threshold=chosen["threshold"],
        target_recall=cfg.target_recall,
        router_temperature=router_t,
        intent_temperature=intent_t,
        # Kept whatever the method, so every method can be scored again later.
        means=means,
        precision=precision,
        report=report,
    )
    _warn_if_weak(method, chosen, len(dev_oos))
    logger.info(
        "out-of-scope detector (%s, threshold %.4g for %.1f%% in-scope dev recall); dev: %s",
        method,
        detector.threshold,
        100 * cfg.target_recall,
        report["methods"],
    )
    return detector


# `auto` without out-of-scope dev texts: the best method on CLINC150's held-out out-of-scope
# texts (benchmarks/results/studies/out-of-scope.md).
FALLBACK_METHOD = "mahalanobis"
WEAK_RECALL = 50.0  # % of dev out-of-scope texts rejected below which training warns


def choose_method(configured: str, figures: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The detector's method and the rule that chose it. `auto`: with out-of-scope dev texts,
    the method that rejects most of them at the target in-scope recall; without them, the
    fallback. Ties (common: a few dozen dev negatives, often all caught) go to energy, which
    kept more real in-scope requests than msp at the same dev figures in every demo run
    (benchmarks/results/studies/imported-rejection.md; Liu et al. 2020), then to higher AUROC."""
    if configured != "auto":
        return {"method": configured, "rule": "configured"}
    rows = {m: f for m, f in figures.items() if "out_of_scope_recall" in f}
    if not rows:
        return {"method": FALLBACK_METHOD, "rule": "auto: no out-of-scope dev texts"}
    best = max(
        rows,
        key=lambda m: (rows[m]["out_of_scope_recall"], m == "energy", rows[m]["auroc"]),
    )
    return {"method": best, "rule": "auto: most out-of-scope dev texts rejected at the target"}


def _warn_if_weak(method: str, figures: dict[str, Any], n_out_of_scope: int) -> None:
    recall = figures.get("out_of_scope_recall")
    if n_out_of_scope == 0:
        # On skill folders the fallback accepted 82-100 % of unrelated texts (the study in
        # benchmarks/results/studies/imported-rejection.md): untested is not safe.
        logger.warning(
            "no out-of-scope texts in dev, so the %s rejection threshold is untested and may "
            "accept most requests no skill handles; add texts to refuse (out_of_scope.yaml, or "
            "rows with skill null), or set oos_method=none to accept everything knowingly",
            method,
        )
    elif recall is not None and recall < WEAK_RECALL:
        logger.warning(
            "out-of-scope rejection is weak: %s rejects %.0f%% of the %d out-of-scope dev texts, "
            "so most requests no skill handles will be accepted; add texts to refuse to "
            "out_of_scope.yaml (beside the skills or in a skill folder) and retrain",
            method,
            recall,
            n_out_of_scope,
        )


def middle_of_gap(edge: float, oos_scores: np.ndarray) -> float:
    """The threshold halfway between the in-scope dev texts (`edge`: the score at the target
    recall) and the nearest out-of-scope dev text above them. Both dev recalls are the same
    anywhere in that gap, but template-generated dev texts score lower than what people say:
    at the edge, real in-scope requests fall over it (the demo rejected 2 % or 12 % of its
    hand-written tests from one retraining to the next); the middle leaves them room."""
    above = oos_scores[oos_scores > edge]
    return float((edge + above.min()) / 2) if above.size else edge


def method_figures(
    outputs: Outputs,
    oos_outputs: Outputs | None,
    target_recall: float,
    router_temperature: float,
    means: np.ndarray,
    precision: np.ndarray,
) -> dict[str, dict[str, Any]]:
    """Every method's threshold for `target_recall` of the in-scope dev texts, and, with
    out-of-scope dev texts, what it would reject of them and its AUROC."""
    figures: dict[str, dict[str, Any]] = {}
    kwargs: dict[str, Any] = {
        "temperature": router_temperature,
        "means": means,
        "precision": precision,
    }
    for method in METHODS:
        in_scores = score(method, outputs.router, outputs.pooled, **kwargs)
        threshold = threshold_for_recall(in_scores, target_recall)
        oos_scores = (
            score(method, oos_outputs.router, oos_outputs.pooled, **kwargs)
            if oos_outputs is not None
            else None
        )
        if oos_scores is not None:
            threshold = middle_of_gap(threshold, oos_scores)
        row: dict[str, Any] = {
            "threshold": round(threshold, 6),
            "in_scope_recall": round(100 * float((in_scores <= threshold).mean()), 2),
        }
        if oos_scores is not None:
            row["out_of_scope_recall"] = round(100 * float((oos_scores > threshold).mean()), 2)
            row["auroc"] = round(auroc(in_scores, oos_scores), 4)
        figures[method] = row
    return figures


def recalibrate(model_dir: Path, ood_cfg: OodConfig) -> OutOfScope | None:
    """`nlu calibrate`: refit a saved model's detector (another method or target) on the data
    recorded in its training config, without retraining."""
    from nlu.config import parse_config
    from nlu.data.loaders import load_train_dev

    model_dir = modeldir.locate(model_dir)
    saved = modeldir.read_training_config(model_dir)
    if saved is None:
        raise modeldir.ModelDirError(
            f"{model_dir} has no {modeldir.TRAINING_CONFIG_FILE}: the training data to fit on is "
            "unknown"
        )
    cfg = parse_config(saved, source=str(model_dir / modeldir.TRAINING_CONFIG_FILE))
    data = load_train_dev(cfg.data, seed=cfg.seed)
    model, folder = JointModel.load(model_dir, calibrated=False)  # this fits the last stage
    detector = fit_out_of_scope(
        ood_cfg,
        model,
        folder.tokenizer,
        folder.meta.max_length,
        data.train,
        data.dev,
        seed=cfg.seed,
    )
    if detector is None and ood_cfg.oos_method != "none" and folder.ood is not None:
        return folder.ood  # nothing to fit on (said above): the saved detector stays
    folder.ood = detector
    if detector is None:  # asked for none, or nothing to fit on: said, not a missing stage
        reason = (
            "nlu calibrate oos_method=none"
            if ood_cfg.oos_method == "none"
            else ("no in-scope dev texts to fit a detector on")
        )
        folder.meta = dataclasses.replace(folder.meta, ood_skipped=reason)
    modeldir.save(model_dir, folder)
    return detector


def _fit_grouped_temperature(groups: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """One temperature for all skills' intent heads (each row against its own skill's)."""
    if not groups:
        return 1.0
    width = max(g[0].shape[1] for g in groups)
    # Pad every skill's logits to one matrix with -inf columns: they add nothing to a softmax.
    logits = np.concatenate(
        [np.pad(g, ((0, 0), (0, width - g.shape[1])), constant_values=-np.inf) for g, _ in groups]
    )
    return fit_temperature(logits, np.concatenate([t for _, t in groups]))


def _ece(groups: list[tuple[np.ndarray, np.ndarray]], temperature: float) -> float:
    """ECE (%) of the top softmax confidence over (logits, targets) groups."""
    confidences: list[float] = []
    correct: list[bool] = []
    for logits, targets in groups:
        probs = np.exp(log_softmax(logits.astype(np.float64) / temperature))
        confidences += probs.max(-1).tolist()
        correct += (probs.argmax(-1) == targets).tolist()
    return round(100 * expected_calibration_error(confidences, correct), 2)
