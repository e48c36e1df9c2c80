"""Out-of-scope rejection and calibrated confidence: numpy only (both backends use it).

Every parse gets an out-of-scope score (higher = less like anything the model was trained on)
from one of these methods:

- `msp`: 1 - the router's maximum softmax probability (the baseline every paper reports);
- `temperature`: the same after temperature scaling fitted on dev (Guo et al. 2017);
- `energy`: -T·logsumexp(router logits / T) (Liu et al. 2020);
- `mahalanobis`: the smallest Mahalanobis distance of the pooled sentence vector to the mean of
  any training intent, with one shared covariance (Podolskiy et al., AAAI 2021), fitted from
  the training set after training, without retraining.

A text is out of scope when its score is above the threshold, chosen on dev so that a target
share of the in-scope dev texts (`target_recall`, e.g. 98 %) stay in scope. The fitted detector
is saved inside the model folder (`nlu.model.modeldir`), with the temperatures that make the served
router and intent confidences calibrated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

METHODS = ("msp", "temperature", "energy", "mahalanobis")
# Methods whose score is 1 - a probability: a threshold outside [0, 1] means nothing.
PROBABILITY_METHODS = ("msp", "temperature")


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    out: np.ndarray = z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
    return out


@dataclass
class OutOfScope:
    """A fitted out-of-scope detector and the calibration temperatures."""

    method: str
    threshold: float
    target_recall: float
    router_temperature: float = 1.0
    intent_temperature: float = 1.0
    # mahalanobis: one mean per training intent [C, H], the shared precision matrix [H, H].
    means: np.ndarray | None = None
    precision: np.ndarray | None = None
    # What fitting measured on dev, per method (thresholds, recalls, AUROC, ECE).
    report: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"out-of-scope method must be one of {METHODS}, not {self.method!r}")
        if self.method == "mahalanobis" and (self.means is None or self.precision is None):
            raise ValueError("the mahalanobis method needs its fitted means and precision")
        self._prepared: Mahalanobis | None = None

    @property
    def needs_features(self) -> bool:
        return self.method == "mahalanobis"

    def scores(self, router_logits: np.ndarray, pooled: np.ndarray | None) -> np.ndarray:
        if self.method == "mahalanobis" and self.means is not None and self.precision is not None:
            # Everything that does not depend on the text is computed once, not per parse.
            if self._prepared is None:
                self._prepared = Mahalanobis.of(self.means, self.precision)
            if pooled is None:
                raise ValueError("mahalanobis scores need the pooled features")
            return self._prepared.distances(pooled)
        return score(
            self.method,
            router_logits,
            pooled,
            temperature=self.router_temperature,
            means=self.means,
            precision=self.precision,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "threshold": self.threshold,
            "target_recall": self.target_recall,
            "router_temperature": self.router_temperature,
            "intent_temperature": self.intent_temperature,
            "report": self.report,
        }

    @classmethod
    def from_json(cls, row: dict[str, Any], arrays: dict[str, np.ndarray]) -> OutOfScope:
        return cls(
            method=row["method"],
            threshold=float(row["threshold"]),
            target_recall=float(row["target_recall"]),
            router_temperature=float(row.get("router_temperature", 1.0)),
            intent_temperature=float(row.get("intent_temperature", 1.0)),
            means=arrays.get("means"),
            precision=arrays.get("precision"),
            report=dict(row.get("report", {})),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        if self.means is not None and self.precision is not None:
            out = {"means": self.means, "precision": self.precision}
        return out


@dataclass
class Mahalanobis:
    precision: np.ndarray  # [H, H] float64
    means: np.ndarray  # [C, H] float64
    constant: np.ndarray  # [C]: mᵀPm per class

    @classmethod
    def of(cls, means: np.ndarray, precision: np.ndarray) -> Mahalanobis:
        m, p = means.astype(np.float64), precision.astype(np.float64)
        return cls(precision=p, means=m, constant=((m @ p) * m).sum(-1))

    def distances(self, pooled: np.ndarray) -> np.ndarray:
        x = pooled.astype(np.float64)
        projected = x @ self.precision
        # (x - m)ᵀ P (x - m) = xᵀPx - 2 mᵀPx + mᵀPm for every class mean at once (float64: the
        # expansion cancels); rounding can still dip a hair below zero.
        quadratic = (projected * x).sum(-1)[:, None]
        out: np.ndarray = np.maximum(
            quadratic - 2 * projected @ self.means.T + self.constant[None, :], 0.0
        ).min(-1)
        return out


def threshold_problem(detector: OutOfScope | None, threshold: float) -> str | None:
    """Why `threshold` cannot override `detector`'s own (None: it can)."""
    if detector is None:
        return (
            "this model has no out-of-scope detector (a model saved before nlu fitted one), so "
            "an out-of-scope threshold means nothing: train it again or leave the threshold out"
        )
    return check_threshold(detector.method, threshold)


def check_threshold(method: str, threshold: float) -> str | None:
    """Why `threshold` cannot be a threshold for `method`, or None."""
    if not math.isfinite(threshold):
        return f"the out-of-scope threshold must be a finite number, not {threshold}"
    if method in PROBABILITY_METHODS and not 0.0 <= threshold <= 1.0:
        return (
            f"the {method} out-of-scope score is 1 - a probability: use a threshold in [0, 1], "
            f"not {threshold}"
        )
    return None


def score(
    method: str,
    router_logits: np.ndarray,
    pooled: np.ndarray | None,
    *,
    temperature: float = 1.0,
    means: np.ndarray | None = None,
    precision: np.ndarray | None = None,
) -> np.ndarray:
    """Out-of-scope score per row (higher = more out of scope)."""
    logits = router_logits.astype(np.float64)
    if method == "msp":
        return 1.0 - np.exp(log_softmax(logits)).max(-1)
    if method == "temperature":
        return 1.0 - np.exp(log_softmax(logits / temperature)).max(-1)
    if method == "energy":
        z = logits / temperature
        top = z.max(-1)
        out: np.ndarray = -temperature * (top + np.log(np.exp(z - top[:, None]).sum(-1)))
        return out
    if method == "mahalanobis":
        if pooled is None or means is None or precision is None:
            raise ValueError("mahalanobis scores need pooled features and fitted statistics")
        return Mahalanobis.of(means, precision).distances(pooled)
    raise ValueError(f"unknown out-of-scope method {method!r}")


# -- fitting ------------------------------------------------------------------------------------


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of `targets` (a fine grid in
    log space: one parameter, no optimiser needed)."""
    if len(targets) == 0:
        return 1.0
    logits = logits.astype(np.float64)
    rows = np.arange(len(targets))

    def nll(t: float) -> float:
        return float(-log_softmax(logits / t)[rows, targets].mean())

    grid = np.exp(np.linspace(math.log(0.1), math.log(20.0), 241))
    best = min(grid, key=nll)
    fine = best * np.exp(np.linspace(-0.03, 0.03, 61))
    return float(min(fine, key=nll))


def fit_mahalanobis(features: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class means and the precision of the shared (pooled within-class) covariance."""
    x = features.astype(np.float64)
    labels = np.unique(classes)
    means = np.stack([x[classes == c].mean(0) for c in labels])
    centred = x - means[np.searchsorted(labels, classes)]
    covariance = centred.T @ centred / len(x)
    return means, shared_precision(covariance)


def shared_precision(covariance: np.ndarray) -> np.ndarray:
    """The inverse of a pooled within-class covariance. A small ridge keeps it bounded where
    the covariance is (nearly) singular: few examples per class, or directions the encoder
    never uses."""
    ridge = 1e-3 * float(np.trace(covariance)) / len(covariance) + 1e-12
    return np.linalg.inv(covariance + ridge * np.eye(len(covariance)))


def threshold_for_recall(in_scope_scores: np.ndarray, recall: float) -> float:
    """The score below which `recall` of the in-scope texts fall."""
    return float(np.quantile(in_scope_scores, recall, method="higher"))


# -- measuring ----------------------------------------------------------------------------------


def auroc(
    in_scope_scores: Sequence[float] | np.ndarray, oos_scores: Sequence[float] | np.ndarray
) -> float:
    """Probability that an out-of-scope text scores above an in-scope one (ties count half)."""
    a = np.asarray(in_scope_scores, dtype=np.float64)
    b = np.asarray(oos_scores, dtype=np.float64)
    if not len(a) or not len(b):
        return float("nan")
    ranks = _ranks(np.concatenate([a, b]))
    greater = ranks[len(a) :].sum() - len(b) * (len(b) + 1) / 2
    return float(greater / (len(a) * len(b)))


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    # Average the ranks of ties.
    sorted_values = values[order]
    start = 0
    for end in range(1, len(values) + 1):
        if end == len(values) or sorted_values[end] != sorted_values[start]:
            ranks[order[start:end]] = (start + 1 + end) / 2
            start = end
    return ranks


def fpr_at_95(
    in_scope_scores: Sequence[float] | np.ndarray, oos_scores: Sequence[float] | np.ndarray
) -> float:
    """Share of out-of-scope texts accepted when the threshold keeps 95 % of in-scope texts."""
    if not len(in_scope_scores) or not len(oos_scores):
        return float("nan")
    threshold = threshold_for_recall(np.asarray(in_scope_scores), 0.95)
    return float((np.asarray(oos_scores) <= threshold).mean())


def expected_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = 15
) -> float:
    """ECE: the |accuracy - confidence| gap, averaged over equal-width confidence bins."""
    conf = np.asarray(confidences, dtype=np.float64)
    right = np.asarray(correct, dtype=np.float64)
    if not len(conf):
        return float("nan")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.mean() * abs(right[members].mean() - conf[members].mean())
    return float(total)


def reliability_bins(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = 15
) -> list[dict[str, float]]:
    """Per bin: mean confidence, accuracy and count (for the reliability diagram)."""
    conf = np.asarray(confidences, dtype=np.float64)
    right = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        members = which == b
        if members.any():
            out.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[b + 1]),
                    "confidence": float(conf[members].mean()),
                    "accuracy": float(right[members].mean()),
                    "n": int(members.sum()),
                }
            )
    return out
