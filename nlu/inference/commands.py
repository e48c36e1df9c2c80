"""`nlu predict`: the inference room's command."""

from __future__ import annotations

import argparse
import os

from nlu.console import Subparsers, print_json
from nlu.model.modeldir import DEFAULT_MODEL


def predict_command(args: argparse.Namespace) -> None:
    from nlu.inference.parser import Parser

    parser = Parser.from_pretrained(args.model)
    results = parser.parse(
        args.texts, skill=args.skill, top_k=args.top_k, oos_threshold=args.oos_threshold
    )
    rows = [r.to_dict() for r in results]
    print_json(rows[0] if len(rows) == 1 else rows)


def register(sub: Subparsers) -> None:
    p = sub.add_parser("predict", help="parse utterances and print JSON")
    p.add_argument("texts", nargs="+", help="utterance(s)")
    p.add_argument(
        "--model",
        default=os.environ.get("NLU_MODEL", DEFAULT_MODEL),
        help="model directory (env NLU_MODEL)",
    )
    p.add_argument("--skill", help="force this skill instead of routing")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--oos-threshold", type=float, help="out-of-scope threshold (see nlu serve)")
    p.set_defaults(func=predict_command)
