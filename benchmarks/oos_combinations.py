"""Can a combined out-of-scope score keep CLINC150's in-scope accuracy? (issue: out of scope)

    python benchmarks/oos_combinations.py runs/benchmarks/clinc150/seed_0/model \
        --data ../shared/data/clinc150

On one trained CLINC150 model (from `nlu benchmark clinc150`): the ceiling that any rejection
leaves (in-scope accuracy with nothing rejected, hierarchical decoding as served and joint
decoding over skill × intent), then in-scope accuracy and out-of-scope recall on test at the
threshold chosen on val for 98 % in-scope recall, for the Mahalanobis distance, the router's and
the joint (router × intent) confidence, and Mahalanobis plus λ × a confidence, each standardised
on val in-scope rows. Also the Mahalanobis distance on the mean of every transformer layer's
pooled vector ("mahalanobis-layers"; per-intent means and a shared covariance fitted on the
train split's in-scope rows, as `nlu.training.calibrate` fits the shipped detector on the last
layer;
Chen et al. 2022 average the layers for out-of-distribution detection). Everything is chosen on
val; test is read for the report only. Writes benchmarks/results/oos_combinations.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from nlu.data.corpora import read_clinc
from nlu.inference.parser import Parser
from nlu.model import modeldir
from nlu.model.alignment import Tokenizer, encode, pad_id
from nlu.model.features import encodings_inputs
from nlu.model.joint import JointModel
from nlu.model.ood import Mahalanobis, auroc, fit_mahalanobis, log_softmax, threshold_for_recall


def layer_means(
    model: JointModel, tokenizer: Tokenizer, max_length: int, texts: list[str]
) -> np.ndarray:
    """The mean over transformer layers of each layer's pooled vector: what the model's router
    reads with `router_input: layers` (`JointModel.encode`), whatever it was trained with."""
    import torch

    model.router_input = "layers"
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), 64):
            batch = tokenizer(
                texts[start : start + 64],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            _, _, routed = model.encode(batch["input_ids"], batch["attention_mask"])
            out.append(routed.double().numpy())
    return np.concatenate(out)


def features(parser: Parser, ood: Any, texts: list[str]) -> dict[str, np.ndarray]:
    router, intents, pooled = [], [], []
    for start in range(0, len(texts), 64):
        encodings = encode(parser.tokenizer, texts[start : start + 64], parser.max_length)
        logits = parser.forward(encodings_inputs(encodings, pad_id(parser.tokenizer)))
        router.append(logits.router)
        intents.append(logits.intents)
        assert logits.pooled is not None  # every graph since the detector exists has it
        pooled.append(logits.pooled)
    r, i = np.concatenate(router), np.concatenate(intents)
    index = parser.index
    log_router = log_softmax(r / ood.router_temperature)
    # log P(skill) + log P(intent | skill) for every (skill, intent) column of the intent logits
    joint = np.full_like(i, -np.inf)
    for k, block in enumerate(index.intent_slices):
        joint[:, block] = log_router[:, [k]] + log_softmax(i[:, block] / ood.intent_temperature)
    hierarchical = np.array(
        [
            index.intent_slices[k].start + int(i[row, index.intent_slices[k]].argmax())
            for row, k in enumerate(r.argmax(1))
        ]
    )
    return {
        "mahalanobis": ood.scores(r, np.concatenate(pooled)),
        "router": -log_router.max(1),
        "joint": -joint.max(1),
        "pred_hierarchical": hierarchical,
        "pred_joint": joint.argmax(1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("model")
    ap.add_argument("--data", default="../shared/data/clinc150")
    ap.add_argument("--recall", type=float, default=0.98)
    ap.add_argument("--out", default="benchmarks/results/oos_combinations.json")
    args = ap.parse_args()
    parser = Parser.from_pretrained(args.model, backend="torch")
    ood = modeldir.load(args.model, "torch").ood
    if ood is None or ood.method != "mahalanobis":
        raise SystemExit(f"{args.model}: needs a model fitted with oos_method=mahalanobis")
    columns = [f"{s.name}/{i}" for s in parser.index.skills for i in s.intents]
    model, folder = JointModel.load(args.model)
    model.eval()

    def layered_vectors(texts: list[str]) -> np.ndarray:
        return layer_means(model, folder.tokenizer, folder.meta.max_length, texts)

    train = [e for e in read_clinc(Path(args.data), "train") if e.in_scope]
    means, precision = fit_mahalanobis(
        layered_vectors([e.text for e in train]),
        np.array([columns.index(f"{e.skill}/{e.intent}") for e in train]),
    )
    layered = Mahalanobis.of(means, precision)
    splits = {}
    for split in ("dev", "test"):
        examples = read_clinc(Path(args.data), split)
        f = features(parser, ood, [e.text for e in examples])
        f["mahalanobis-layers"] = layered.distances(layered_vectors([e.text for e in examples]))
        gold = np.array([f"{e.skill}/{e.intent}" if e.skill else "" for e in examples])
        f["in_scope"] = gold != ""
        for decoding in ("hierarchical", "joint"):
            f[f"correct_{decoding}"] = np.array(columns)[f[f"pred_{decoding}"]] == gold
        splits[split] = f
    dev, test = splits["dev"], splits["test"]

    def standardised(f: dict[str, np.ndarray], key: str) -> np.ndarray:
        ref = dev[key][dev["in_scope"]]
        return (f[key] - ref.mean()) / ref.std()

    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {
        k: (dev[k], test[k]) for k in ("mahalanobis", "mahalanobis-layers", "router", "joint")
    }
    for distance in ("mahalanobis", "mahalanobis-layers"):
        for other in ("router", "joint"):
            for lam in (0.25, 0.5, 1.0, 2.0):
                scores[f"{distance} + {lam} {other}"] = tuple(  # type: ignore[assignment]
                    standardised(f, distance) + lam * standardised(f, other) for f in (dev, test)
                )
    report: dict[str, Any] = {
        "ceiling_test": {
            d: round(100 * float(test[f"correct_{d}"][test["in_scope"]].mean()), 2)
            for d in ("hierarchical", "joint")
        },
        "methods": {},
    }
    print(f"in-scope accuracy with nothing rejected (test): {report['ceiling_test']}")
    for name, (on_dev, on_test) in scores.items():
        for split, f, s in (("dev", dev, on_dev), ("test", test, on_test)):
            report.setdefault("auroc", {}).setdefault(name, {})[split] = round(
                auroc(s[f["in_scope"]], s[~f["in_scope"]]), 4
            )
    for name, (on_dev, on_test) in scores.items():
        threshold = threshold_for_recall(on_dev[dev["in_scope"]], args.recall)
        row = {}
        for split, f, s in (("dev", dev, on_dev), ("test", test, on_test)):
            kept = s <= threshold
            row[split] = {
                "in_scope_accuracy": round(
                    100 * float((kept & f["correct_hierarchical"])[f["in_scope"]].mean()), 2
                ),
                "oos_recall": round(100 * float((~kept)[~f["in_scope"]].mean()), 2),
            }
        report["methods"][name] = row
        print(
            f"{name:38s} val {row['dev']['in_scope_accuracy']:.2f} / {row['dev']['oos_recall']:.1f}"
            f"   test {row['test']['in_scope_accuracy']:.2f} / {row['test']['oos_recall']:.1f}"
            f"   AUROC test {report['auroc'][name]['test']:.4f}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
