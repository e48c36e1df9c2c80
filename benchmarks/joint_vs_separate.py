"""One joint multi-skill model against separate intent and slot models per dataset.

    python benchmarks/joint_vs_separate.py --epochs 2

Data: ATIS and SNIPS (one skill each) and MASSIVE en-US (its 18 scenarios as 18 skills), read
from ../shared/data by path.

(a) joint: `nlu.training.train.train` on all three datasets at once: one encoder, a skill
    router and an intent + slot head per skill.
(b) separate: the usual alternative, per dataset one `AutoModelForSequenceClassification`
    (intents) and one `AutoModelForTokenClassification` (BIO slot tags): six models.

Same encoder, epochs, batch size 32, learning rates (encoder 1e-4, heads 1e-3), weight decay,
10% linear warm-up and gradient clipping for every model; every model keeps its best dev epoch
and is scored once on test. Token labels for (b) come from the same offset -> BIO function as
(a); (b) decodes slots by per-token argmax (what such a baseline does), (a) with constrained
BIO decoding. Scores are the same `nlu.evaluation.evaluate.score` (seqeval strict IOB2,
entity level).

Each training and each serving measurement runs in its own process, so peak memory (max RSS) is
that phase's own. Latency is eager PyTorch, one utterance at a time; for (b) the utterance goes
to the intent and slot model of the dataset it came from (an oracle router, which favours (b)).
Writes benchmarks/results/joint_vs_separate.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DATASETS = {
    "atis": "../shared/data/atis",
    "snips": "../shared/data/snips",
    "massive": "../shared/data/massive_en_us/en-US.jsonl",
}
ENCODER_LR, HEAD_LR, WEIGHT_DECAY, WARMUP, CLIP = 1e-4, 1e-3, 0.01, 0.1, 1.0
BATCH, MAX_LENGTH = 32, 64


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return round(int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def load(name: str, split: str, limit: int | None = None) -> list[Any]:
    from nlu.data.loaders import load_split

    examples = load_split(DATASETS[name], split).examples
    if limit and split == "train":
        examples = random.Random(0).sample(examples, min(limit, len(examples)))
    return examples


# -- (a) joint -----------------------------------------------------------------------------


def train_joint(*, out: Path, epochs: int, seed: int, limit: int | None) -> dict[str, Any]:
    from nlu.config import TrainConfig, replace
    from nlu.evaluation.evaluate import evaluate
    from nlu.training.train import train

    data = list(DATASETS.values())
    if limit:  # smoke runs: subsample every dataset into JSONL files with their own dev split
        data = []
        from nlu.data.formats import write_jsonl

        out.mkdir(parents=True, exist_ok=True)
        for name in DATASETS:
            write_jsonl(out / f"{name}.train.jsonl", load(name, "train", limit))
            data.append(str(out / f"{name}.train.jsonl"))
    cfg = replace(
        TrainConfig(),
        data=data,
        epochs=epochs,
        seed=seed,
        max_length=MAX_LENGTH,
        output_dir=str(out / "joint"),
        learning_rate=ENCODER_LR,
        head_learning_rate=HEAD_LR,
        # Every example once per epoch, as the separate models see them.
        sampling="proportional",
        # Closed-world test sets (as the benchmark presets): no text is rejected.
        oos_method="none",
    )
    result = train(cfg)
    scores = {
        name: evaluate(model_dir=result.model_dir, data=[path], split="test")["overall"]
        for name, path in DATASETS.items()
    }
    return {
        "train_seconds": result.train_seconds,
        "train_examples_per_second": result.examples_per_second,
        "best_epoch": result.best_epoch,
        "peak_train_rss_mb": peak_rss_mb(),
        "test": scores,
        "model_dir": str(result.model_dir),
    }


# -- (b) separate models -------------------------------------------------------------------


def _encoder_path() -> str:
    from nlu.model.encoders import resolve_encoder

    return resolve_encoder("default")


def _featurize(kind: str, examples: list[Any], tokenizer: Any, labels: dict[str, int]) -> list[Any]:
    from nlu.model.alignment import encode, spans_to_tags, token_labels

    rows = []
    encodings = encode(tokenizer, [e.text for e in examples], MAX_LENGTH)
    for ex, enc in zip(examples, encodings, strict=True):
        if kind == "intent":
            target: Any = labels[f"{ex.skill}/{ex.intent}"]
        else:
            target = token_labels(enc, spans_to_tags(enc.words, ex.slots).tags, labels)
        rows.append((enc.input_ids, target))
    return rows


def _collate(kind: str, rows: list[Any], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = (
        torch.tensor([t for _, t in rows])
        if kind == "intent"
        else torch.full((len(rows), width), -100, dtype=torch.long)
    )
    for i, (row_ids, target) in enumerate(rows):
        ids[i, : len(row_ids)] = torch.tensor(row_ids)
        mask[i, : len(row_ids)] = 1
        if kind == "slots":
            labels[i, : len(row_ids)] = torch.tensor(target)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def predict_separate(
    intent_model: Any, slot_model: Any, tokenizer: Any, texts: list[str], batch_size: int = 64
) -> list[Any]:
    """`ParseResult`s, so the same `score` function grades both systems (a model that does
    not predict a part leaves it empty)."""
    import torch

    from nlu.model.alignment import encode, pad_id, tags_to_spans
    from nlu.model.features import encodings_inputs
    from nlu.result import ParseResult, Scored, SkillChoice, SlotValue

    out: list[ParseResult] = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        encodings = encode(tokenizer, chunk, MAX_LENGTH)
        inputs = encodings_inputs(encodings, pad_id(tokenizer))
        batch = {k: torch.from_numpy(v) for k, v in inputs.items()}
        with torch.inference_mode():
            intents = intent_model(**batch).logits.argmax(-1).tolist() if intent_model else None
            tags = slot_model(**batch).logits.argmax(-1).tolist() if slot_model else None
        for row, (text, enc) in enumerate(zip(chunk, encodings, strict=True)):
            skill, intent = "", ""
            if intents is not None:
                skill, intent = intent_model.config.id2label[intents[row]].split("/", 1)
            slots = []
            if tags is not None:
                word_tags = [slot_model.config.id2label[tags[row][p]] for p in enc.word_starts]
                slots = [
                    SlotValue(span.slot, text[span.start : span.end], span.start, span.end, 1.0)
                    for span, _ in tags_to_spans(enc.words, word_tags)
                ]
            chosen = Scored(intent, 1.0)
            out.append(
                ParseResult(text, SkillChoice(skill, 1.0, False), chosen, [chosen], slots, False)
            )
    return out


def _dev_score(kind: str, model: Any, tokenizer: Any, dev: list[Any]) -> float:
    import dataclasses

    from nlu.evaluation.metrics import score
    from nlu.result import Scored, SkillChoice

    preds = predict_separate(
        model if kind == "intent" else None,
        model if kind == "slots" else None,
        tokenizer,
        [e.text for e in dev],
    )
    if kind == "slots":  # grade slots only
        preds = [
            dataclasses.replace(
                p, skill=SkillChoice(e.skill, 1.0, False), intent=Scored(e.intent, 1.0)
            )
            for p, e in zip(preds, dev, strict=True)
        ]
        return float(score(dev, preds, tokenizer=tokenizer)["overall"]["slot_f1"])
    return float(score(dev, preds, tokenizer=tokenizer)["overall"]["intent_accuracy"])


def train_separate(
    *, kind: str, dataset: str, out: Path, epochs: int, seed: int, limit: int | None
) -> dict[str, Any]:
    """One sequence- or token-classification model, trained the way a user would."""
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
        get_linear_schedule_with_warmup,
    )

    torch.manual_seed(seed)
    random.seed(seed)
    train, dev = load(dataset, "train", limit), load(dataset, "dev")
    if kind == "intent":
        names = sorted({f"{e.skill}/{e.intent}" for e in train})
        auto: Any = AutoModelForSequenceClassification
    else:
        types = sorted({s.slot for e in train for s in e.slots})
        names = ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]
        auto = AutoModelForTokenClassification
    label_ids = {n: i for i, n in enumerate(names)}
    path = _encoder_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = auto.from_pretrained(
        path, num_labels=len(names), id2label=dict(enumerate(names)), label2id=label_ids
    )
    rows = _featurize(kind, train, tokenizer, label_ids)
    prefix = model.base_model_prefix + "."
    groups: dict[tuple[bool, bool], list[Any]] = {}
    for name, param in model.named_parameters():
        groups.setdefault((name.startswith(prefix), param.ndim < 2), []).append(param)
    optimizer = torch.optim.AdamW(
        [
            {
                "params": params,
                "lr": ENCODER_LR if is_encoder else HEAD_LR,
                "weight_decay": 0.0 if no_decay else WEIGHT_DECAY,
            }
            for (is_encoder, no_decay), params in groups.items()
        ]
    )
    steps = math.ceil(len(rows) / BATCH) * epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(WARMUP * steps), steps)
    pad_id = tokenizer.pad_token_id or 0
    train_seconds, best, best_state, best_epoch = 0.0, -1.0, None, 0
    for epoch in range(epochs):
        model.train()
        order = list(range(len(rows)))
        random.shuffle(order)
        started = time.perf_counter()
        for i in range(0, len(order), BATCH):
            batch = _collate(kind, [rows[j] for j in order[i : i + BATCH]], pad_id)
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        train_seconds += time.perf_counter() - started
        model.eval()
        dev_score = _dev_score(kind, model, tokenizer, dev)
        if dev_score > best:
            best, best_epoch, best_state = dev_score, epoch + 1, copy.deepcopy(model.state_dict())
    assert best_state is not None
    model.load_state_dict(best_state)
    target = out / "separate" / f"{dataset}_{kind}"
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return {
        "train_seconds": round(train_seconds, 1),
        "train_examples_per_second": round(len(rows) * epochs / train_seconds, 1),
        "best_epoch": best_epoch,
        "dev_score": best,
        "peak_train_rss_mb": peak_rss_mb(),
        "model_dir": str(target),
    }


def test_separate(*, out: Path) -> dict[str, Any]:
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    from nlu.evaluation.metrics import score

    scores = {}
    for name in DATASETS:
        base = out / "separate"
        intent = AutoModelForSequenceClassification.from_pretrained(base / f"{name}_intent").eval()
        slots = AutoModelForTokenClassification.from_pretrained(base / f"{name}_slots").eval()
        tokenizer = AutoTokenizer.from_pretrained(base / f"{name}_intent")
        test = load(name, "test")
        preds = predict_separate(intent, slots, tokenizer, [e.text for e in test])
        scores[name] = score(test, preds, tokenizer=tokenizer)["overall"]
    return {"test": scores}


# -- serving: memory and latency -------------------------------------------------------------


def serve_measure(
    *, system: str, out: Path, utterances: int, model_dir: Path | None = None
) -> dict[str, Any]:
    """`model_dir`: a joint model other than this run's (benchmarks/fusion.py's student)."""
    import torch

    samples = [(name, e.text) for name in DATASETS for e in load(name, "test")]
    samples = random.Random(0).sample(samples, utterances)
    before = current_rss_mb()
    if system == "joint":
        from nlu.inference.parser import Parser, torch_forward
        from nlu.model.joint import JointModel

        model, folder = JointModel.load(model_dir or out / "joint" / "model")
        parser = Parser(
            forward=torch_forward(model),
            skills=model.skills,
            tokenizer=folder.tokenizer,
            max_length=folder.meta.max_length,
            backend="torch",
        )
        n_params = sum(p.numel() for p in model.parameters())

        def run(name: str, text: str) -> Any:
            return parser.parse([text])

    else:
        from transformers import (
            AutoModelForSequenceClassification,
            AutoModelForTokenClassification,
            AutoTokenizer,
        )

        base = out / "separate"
        models = {
            name: (
                AutoModelForSequenceClassification.from_pretrained(base / f"{name}_intent").eval(),
                AutoModelForTokenClassification.from_pretrained(base / f"{name}_slots").eval(),
            )
            for name in DATASETS
        }
        tokenizer = AutoTokenizer.from_pretrained(base / "atis_intent")
        n_params = sum(p.numel() for pair in models.values() for m in pair for p in m.parameters())

        def run(name: str, text: str) -> Any:
            return predict_separate(*models[name], tokenizer, [text])

    for name, text in samples[:20]:
        run(name, text)
    loaded = current_rss_mb()
    times = []
    with torch.inference_mode():
        for name, text in samples:
            started = time.perf_counter()
            run(name, text)
            times.append((time.perf_counter() - started) * 1000)
    return {
        "parameters_millions": round(n_params / 1e6, 1),
        "serving_rss_mb": loaded,
        "model_rss_mb": round(loaded - before, 1),
        "latency_p50_ms": round(statistics.median(times), 2),
        "latency_p95_ms": round(sorted(times)[int(0.95 * (len(times) - 1))], 2),
    }


# -- orchestration ---------------------------------------------------------------------------


def phase(argv: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Run one phase in a fresh process; its JSON result is cached in OUT/phases/."""
    cache = Path(args.out) / "phases" / f"{'_'.join(argv)}.json"
    if cache.is_file():
        return dict(json.loads(cache.read_text()))
    print(f"-- {' '.join(argv)}", flush=True)
    cmd = [sys.executable, __file__, "--out", args.out, "--epochs", str(args.epochs)]
    cmd += ["--seed", str(args.seed), "--utterances", str(args.utterances)]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    cmd += ["--phase", *argv]
    subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return dict(json.loads(cache.read_text()))


def run_phase(args: argparse.Namespace) -> None:
    out = Path(args.out)
    what, *rest = args.phase
    common = {"out": out, "epochs": args.epochs, "seed": args.seed, "limit": args.limit}
    if what == "train-joint":
        result = train_joint(**common)
    elif what == "train-separate":
        result = train_separate(kind=rest[0], dataset=rest[1], **common)
    elif what == "test-separate":
        result = test_separate(out=out)
    elif what == "serve":
        result = serve_measure(system=rest[0], out=out, utterances=args.utterances)
    else:
        raise SystemExit(f"unknown phase {what}")
    cache = out / "phases" / f"{'_'.join(args.phase)}.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result, indent=2) + "\n")


def report(joint: dict[str, Any], separate: dict[str, Any], budget: str) -> str:
    lines = [
        f"Budget: {budget}.",
        "",
        "| dataset | system | intent acc | slot F1 | exact match | router acc |",
        "|---|---|---|---|---|---|",
    ]
    for name in DATASETS:
        for label, result in (("joint", joint), ("separate", separate)):
            m = result["test"][name]
            lines.append(
                f"| {name} | {label} | {m['intent_accuracy']} | {m['slot_f1']} | "
                f"{m['exact_match']} | {m['router_accuracy']} |"
            )
    lines += [
        "",
        "| | joint | separate (6 models) | separate / joint |",
        "|---|---|---|---|",
    ]
    rows = [
        ("training wall time (s)", "train_seconds", "{:.0f}"),
        ("peak training memory (MB RSS)", "peak_train_rss_mb", "{:.0f}"),
        ("parameters served (M)", "parameters_millions", "{:.1f}"),
        ("serving memory (MB RSS, models loaded)", "serving_rss_mb", "{:.0f}"),
        ("latency per utterance p50 (ms)", "latency_p50_ms", "{:.2f}"),
        ("latency per utterance p95 (ms)", "latency_p95_ms", "{:.2f}"),
    ]
    for title, key, fmt in rows:
        a, b = joint[key], separate[key]
        lines.append(f"| {title} | {fmt.format(a)} | {fmt.format(b)} | {b / a:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, help="subsample each train split (smoke runs)")
    ap.add_argument("--utterances", type=int, default=300, help="latency sample size")
    ap.add_argument("--out", default="runs/joint_vs_separate")
    ap.add_argument("--results", default="benchmarks/results/joint_vs_separate")
    ap.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        run_phase(args)
        return
    joint = phase(["train-joint"], args)
    joint |= phase(["serve", "joint"], args)
    parts = [phase(["train-separate", k, d], args) for d in DATASETS for k in ("intent", "slots")]
    separate = phase(["test-separate"], args)
    separate |= phase(["serve", "separate"], args)
    separate["train_seconds"] = round(sum(p["train_seconds"] for p in parts), 1)
    # The six trainings run one after another: the peak is the largest single one.
    separate["peak_train_rss_mb"] = max(p["peak_train_rss_mb"] for p in parts)
    separate["parts"] = parts
    budget = (
        f"{args.epochs} epochs, seed {args.seed}, batch {BATCH}, encoder all-MiniLM-L6-v2, "
        f"{os.cpu_count()} CPU cores"
        + (f", train splits subsampled to {args.limit}" if args.limit else "")
    )
    table = report(joint, separate, budget)
    print(table)
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    payload = {"budget": budget, "joint": joint, "separate": separate}
    results.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    results.with_suffix(".md").write_text(table + "\n")
    print(f"wrote {results}.json and .md")


if __name__ == "__main__":
    main()
