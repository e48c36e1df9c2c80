"""`nlu distill`: the distillation room's command."""

from __future__ import annotations

import argparse

from nlu.console import Subparsers, overrides_help, print_json, run_summary


def distill_command(args: argparse.Namespace) -> None:
    from accelerate import PartialState

    from nlu.config import load
    from nlu.distill.config import DistillConfig
    from nlu.distill.recipe import distill

    result = distill(load(DistillConfig, args.config, args.overrides))
    if PartialState().is_main_process:
        print_json(run_summary(result))


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "distill",
        help="train a joint model from teachers' outputs (fuse expert models, or compress one)",
    )
    p.add_argument(
        "config", help="YAML with teachers: [...] and student keys (docs/guide/distillation.md)"
    )
    p.add_argument("overrides", nargs="*", help=overrides_help("epochs=2 alpha=0.7"))
    p.set_defaults(func=distill_command)
