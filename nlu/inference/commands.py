"""`nlu predict`: the inference room's command."""

from __future__ import annotations

import argparse
import os
from datetime import datetime

from nlu.console import Subparsers, print_json
from nlu.model.modeldir import DEFAULT_MODEL


def predict_command(args: argparse.Namespace) -> None:
    from nlu.inference.parser import OptionError, Parser

    reference_time = None
    if args.reference_time is not None:
        try:
            reference_time = datetime.fromisoformat(args.reference_time)
        except ValueError:
            raise OptionError(
                f"--reference-time: {args.reference_time!r} is not an ISO 8601 date-time such "
                'as "2026-12-06T15:00" or "2026-12-06T15:00:00+01:00"'
            ) from None
    parser = Parser.from_pretrained(args.model)
    results = parser.parse(
        args.texts,
        skill=args.skill,
        top_k=args.top_k,
        oos_threshold=args.oos_threshold,
        reference_time=reference_time,
        timezone=args.timezone,
        locale=args.locale,
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
    p.add_argument(
        "--reference-time",
        metavar="ISO",
        help='"now" for relative dates and times in slot values (default: the current time)',
    )
    p.add_argument(
        "--timezone",
        metavar="ZONE",
        help="the user's IANA time zone, e.g. Europe/Berlin (default: the reference time's "
        "offset, else this machine's zone)",
    )
    p.add_argument("--locale", help='en_US, en_GB, ...: how "12/11" reads (default: ambiguous)')
    p.set_defaults(func=predict_command)
