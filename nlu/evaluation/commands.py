"""`nlu evaluate`: the evaluation room's command."""

from __future__ import annotations

import argparse

from nlu.console import Subparsers


def evaluate_command(args: argparse.Namespace) -> None:
    from nlu.evaluation.evaluate import evaluate
    from nlu.evaluation.report import format_table

    metrics = evaluate(model_dir=args.model, data=args.data, split=args.split, out_dir=args.out)
    print(format_table(metrics))
    if args.out:
        print(f"\nwrote {args.out}/metrics.json, metrics.md, confusion.png, predictions.jsonl")


def register(sub: Subparsers) -> None:
    p = sub.add_parser("evaluate", help="score a model on a data split")
    p.add_argument("model", help="model directory written by `nlu train`")
    p.add_argument("data", nargs="+", help="skill folders, JSONL files or JointBERT folders")
    p.add_argument("--split", default="test", choices=["train", "dev", "test"])
    p.add_argument("--out", help="folder for metrics.json, metrics.md, confusion.png")
    p.set_defaults(func=evaluate_command)
