"""The router fitted by the server from the clients' feature statistics: a linear
(`router: lda`) or regularised quadratic (`router: qda`) discriminant."""

from __future__ import annotations

import logging
import typing

import numpy as np

from nlu.model.ood import shared_precision

if typing.TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

# -- the router: a linear discriminant fitted from the clients' feature statistics ----------------


def pack_symmetric(matrix: np.ndarray) -> np.ndarray:
    """The upper triangle of a symmetric matrix in float32: what a client sends of its summed
    outer products (a quarter of the float64 matrix)."""
    return matrix[np.triu_indices(len(matrix))].astype(np.float32)


def unpack_symmetric(packed: np.ndarray, dim: int) -> np.ndarray:
    matrix = np.zeros((dim, dim))
    matrix[np.triu_indices(dim)] = packed
    return matrix + np.triu(matrix, 1).T


def fit_router(
    sums: np.ndarray, counts: np.ndarray, outer: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) of a linear router from per-skill sums (S×d) and counts (S) of sentence
    vectors and their summed outer products (d×d): Gaussian classes with one shared
    covariance, priors from the counts. A skill no client holds gets -inf-like bias."""
    counts = counts.astype(np.float64)
    total = float(counts.sum())
    seen = counts > 0
    means = np.zeros_like(sums, dtype=np.float64)
    means[seen] = sums[seen] / counts[seen, None]
    within = outer - (means[seen].T * counts[seen]) @ means[seen]
    # The Mahalanobis detector's precision (nlu/ood.py), from the summed statistics.
    precision = shared_precision(within / max(total - seen.sum(), 1.0))
    weight = means @ precision
    bias = -0.5 * np.einsum("sd,sd->s", weight, means)
    bias = np.where(seen, bias + np.log(np.maximum(counts, 1.0) / max(total, 1.0)), -1e4)
    return weight, bias


def fit_quadratic_router(
    sums: np.ndarray, counts: np.ndarray, outers: np.ndarray, shrinkage: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weight, bias, curvature) of a quadratic router from per-skill sums (S×d), counts (S)
    and summed outer products (S×d×d): regularised discriminant analysis (Friedman 1989). Each
    skill is a Gaussian whose covariance is (1 - shrinkage) · its own + shrinkage · the pooled
    within-skill one. Logits: weight·x + bias - 1/2 · xᵀ curvature_s x, where curvature_s is the
    skill's precision less the pooled precision (a term every skill shares cancels in the
    softmax, so shrinkage 1 gives the linear discriminant's decisions and zero curvature).
    Skills spread differently (on MASSIVE, weather's vectors about half as wide as qa's): one
    shared covariance misjudges the narrow and the broad alike."""
    counts = counts.astype(np.float64)
    total = float(counts.sum())
    seen = counts > 0
    dim = sums.shape[1]
    means = np.zeros_like(sums, dtype=np.float64)
    means[seen] = sums[seen] / counts[seen, None]
    scatter = outers - counts[:, None, None] * np.einsum("sd,se->sde", means, means)
    pooled = scatter[seen].sum(0) / max(total - seen.sum(), 1.0)
    shared = shared_precision(pooled)
    weight = np.zeros_like(means)
    bias = np.full(len(counts), -1e4)
    curvature = np.zeros((len(counts), dim, dim))
    for s in np.flatnonzero(seen):
        own = scatter[s] / max(counts[s] - 1.0, 1.0)
        precision = shared_precision((1.0 - shrinkage) * own + shrinkage * pooled)
        precision = (precision + precision.T) / 2
        weight[s] = precision @ means[s]
        bias[s] = (
            -0.5 * means[s] @ weight[s]
            + 0.5 * np.linalg.slogdet(precision)[1]
            + np.log(counts[s] / total)
        )
        curvature[s] = precision - shared
    return weight, bias, curvature
