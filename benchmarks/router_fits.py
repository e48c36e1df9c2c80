"""Is the federated router's fit the limit, or the encoder's features? (issue 15)

    python benchmarks/router_fits.py MODEL_DIR DATA [--seed 0] [--results router-fits]

On a federated model's final encoder, the skill router refitted in other ways from the training
split's sentence vectors, scored on dev and test (router accuracy, in-scope texts):
- lda: what the server fits from the clients' summed statistics (`nlu.federated.router.fit_router`);
- lda-ridge-X: the same with X times the average variance on the covariance's diagonal;
- ccvr-ridge-X: logistic regression on virtual vectors drawn from per-intent Gaussians (means
  and a pooled covariance: statistics a client could send; Luo et al. 2021, CCVR);
- logreg-real: logistic regression on the real training vectors, which no server sees (what a
  discriminative router could do with these features at best);
- lda-layers, logreg-real-layers: the same fits on another feature of the same encoder, the mean
  of every transformer layer's pooled vector (what `router_input: layers` feeds the router);
- qda-layers-G: the quadratic router (`router: qda`, `nlu.federated.router.fit_quadratic_router`) on
  those vectors, each skill's covariance shrunk to the pooled one by G (1.0: the LDA); the
  shipped shrinkage is the best of these on dev.
Example: MODEL_DIR = runs/federated_bench/r3-e1-limit3000/<run>/model and DATA = the
benchmark's runs/federated_bench/r3-e1-limit3000/massive-limit-3000.
Writes benchmarks/results/<results>.{json,md} (default router-fits).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch
from common import write_results

from nlu.data.loaders import load_split
from nlu.federated.client import sentence_vectors
from nlu.federated.router import fit_quadratic_router, fit_router
from nlu.model.joint import JointModel

Fit = tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]
Split = tuple[np.ndarray, np.ndarray, np.ndarray]


def vectors(model_dir: str, data: str) -> tuple[dict[str, Split], dict[str, np.ndarray]]:
    """Per split: (last layer's sentence vectors, skill ids, intent ids) of the in-scope texts,
    and per split the mean of every transformer layer's pooled vector."""
    model, folder = JointModel.load(model_dir)
    out, layers = {}, {}
    intents: dict[tuple[str | None, str | None], int] = {}
    for split in ("train", "dev", "test"):
        # Slots do not reach the router; dev and test hold slot types training never saw.
        examples = [
            dataclasses.replace(e, slots=()) for e in load_split(data, split).examples if e.in_scope
        ]
        # The vectors each router input reads, whichever the model was trained with.
        model.router_input = "sentence"
        x, s = sentence_vectors(examples, model, folder.tokenizer, folder.meta.max_length)
        model.router_input = "layers"
        layers[split], _ = sentence_vectors(
            examples, model, folder.tokenizer, folder.meta.max_length
        )
        i = np.array([intents.setdefault((e.skill, e.intent), len(intents)) for e in examples])
        out[split] = (x, s, i)
    return out, layers


def class_stats(x: np.ndarray, labels: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """(counts, means, pooled within-class covariance) of n classes."""
    counts = np.bincount(labels, minlength=n).astype(float)
    means = np.zeros((n, x.shape[1]))
    np.add.at(means, labels, x)
    means /= np.maximum(counts, 1)[:, None]
    within = (x.T @ x - (means.T * counts) @ means) / (counts.sum() - (counts > 0).sum())
    return counts, means, within


def with_ridge(covariance: np.ndarray, ridge: float) -> np.ndarray:
    return covariance + ridge * np.trace(covariance) / len(covariance) * np.eye(len(covariance))


def lda(x: np.ndarray, s: np.ndarray, n_skills: int, ridge: float) -> Fit:
    counts, means, within = class_stats(x, s, n_skills)
    weight = means @ np.linalg.inv(with_ridge(within, ridge))
    bias = -0.5 * np.einsum("sd,sd->s", weight, means) + np.log(np.maximum(counts, 1) / len(s))
    return weight, bias


def logreg(x: np.ndarray, y: np.ndarray, n_skills: int, seed: int) -> Fit:
    torch.manual_seed(seed)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    linear = torch.nn.Linear(x.shape[1], n_skills)
    optimizer = torch.optim.Adam(linear.parameters(), lr=0.05, weight_decay=1e-4)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(linear(xt), yt).backward()
        optimizer.step()
    return linear.weight.detach().double().numpy(), linear.bias.detach().double().numpy()


def ccvr(
    x: np.ndarray, s: np.ndarray, i: np.ndarray, n_skills: int, ridge: float, seed: int
) -> Fit:
    rng = np.random.default_rng(seed)
    n_intents = int(i.max()) + 1
    counts, means, within = class_stats(x, i, n_intents)
    seen = counts > 0
    skill_of = np.zeros(n_intents, dtype=int)
    skill_of[i] = s
    chol = np.linalg.cholesky(with_ridge(within, ridge))
    draws = (counts / counts.sum() * 300 * seen.sum()).round().astype(int)
    virtual = np.concatenate(
        [
            means[k] + rng.standard_normal((draws[k], len(chol))) @ chol.T
            for k in np.flatnonzero(seen)
        ]
    )
    labels = np.concatenate([np.full(draws[k], skill_of[k]) for k in np.flatnonzero(seen)])
    return logreg(virtual, labels, n_skills, seed)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("model_dir")
    ap.add_argument("data")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", default="router-fits", help="benchmarks/results/<name>.md")
    args = ap.parse_args()
    feats, layers = vectors(args.model_dir, args.data)
    x, s, i = feats["train"]
    n_skills = int(max(int(v[1].max()) for v in feats.values())) + 1
    counts, means, _ = class_stats(x, s, n_skills)
    # The server's fit, from the sums a client sends.
    fits: dict[str, Fit] = {"lda": fit_router(means * counts[:, None], counts, x.T @ x)}
    for ridge in (0.01, 0.1, 0.3):
        fits[f"lda-ridge-{ridge}"] = lda(x, s, n_skills, ridge)
    for ridge in (0.001, 0.1):
        fits[f"ccvr-ridge-{ridge}"] = ccvr(x, s, i, n_skills, ridge, args.seed)
    fits["logreg-real"] = logreg(x, s, n_skills, args.seed)
    xl = layers["train"]
    counts, means, _ = class_stats(xl, s, n_skills)
    fits["lda-layers"] = fit_router(means * counts[:, None], counts, xl.T @ xl)
    fits["logreg-real-layers"] = logreg(xl, s, n_skills, args.seed)
    outers = np.stack([xl[s == k].T @ xl[s == k] for k in range(n_skills)])
    for shrinkage in (0.5, 0.8, 0.9, 0.95, 0.98):
        fits[f"qda-layers-{shrinkage}"] = fit_quadratic_router(
            means * counts[:, None], counts, outers, shrinkage
        )
    rows: dict[str, dict[str, float]] = {}
    for name, (weight, bias, *curvature) in fits.items():
        rows[name] = {}
        for split, (v, y, _) in feats.items():
            if split != "train":
                x_split = layers[split] if "-layers" in name else v
                logits = x_split @ weight.T + bias
                if curvature:
                    logits -= 0.5 * np.einsum("nd,sde,ne->ns", x_split, curvature[0], x_split)
                hits = logits.argmax(1) == y
                rows[name][split] = round(100 * float(hits.mean()), 2)
    lines = [
        f"Router accuracy (%) of fits on the final encoder of {args.model_dir}; train vectors of "
        f"{args.data}, seed {args.seed}.",
        "",
        "| fit | dev | test |",
        "|---|---|---|",
        *(f"| {name} | {r['dev']:.2f} | {r['test']:.2f} |" for name, r in rows.items()),
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    write_results(
        f"benchmarks/results/{args.results}", table, {"model_dir": args.model_dir, "fits": rows}
    )


if __name__ == "__main__":
    main()
