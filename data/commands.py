"""`nlu import`, `nlu validate`: the data room's commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from nlu.console import Subparsers


class ValidationFailed(Exception):
    """`nlu validate` found problems (each already printed with its path and line)."""


def import_command(args: argparse.Namespace) -> None:
    from nlu.config import ConfigError
    from nlu.data.importers import read_alexa, read_dialogflow, read_rasa, write_import

    sources = [Path(f) for f in args.files]
    if args.format == "rasa":
        if not args.skill:
            raise ConfigError("nlu import rasa: name the skill with --skill NAME")
        imported = read_rasa(sources, skill=args.skill, negative_intents=args.negative_intents)
    else:
        if len(sources) != 1:
            what = (
                "interaction model JSON"
                if args.format == "alexa"
                else "agent export (zip or folder)"
            )
            raise ConfigError(f"nlu import {args.format}: give one {what}")
        read = read_alexa if args.format == "alexa" else read_dialogflow
        imported = read(sources[0], skill=args.skill)
    folder = write_import(
        imported, Path(args.out), force=args.force, test_fraction=args.test_fraction, seed=args.seed
    )
    for note in imported.notes:
        print(f"note: {note}")
    for warning in imported.warnings:
        print(f"warning: {warning}")
    written = sorted(p.name for p in folder.iterdir())
    print(f"wrote {folder} ({', '.join(written)}); check it with: nlu validate {folder}")


def validate_command(args: argparse.Namespace) -> None:
    from nlu.data.validate import format_report, validate

    reports = validate(args.paths)
    for report in reports:
        print(format_report(report))
    bad = sum(not r.ok for r in reports)
    if bad:
        raise ValidationFailed(f"{bad} of {len(reports)} source(s) have problems (listed above)")


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "import", help="write a skill folder from Rasa, Alexa or Dialogflow training data"
    )
    p.add_argument("format", choices=["rasa", "alexa", "dialogflow"])
    p.add_argument(
        "files",
        nargs="+",
        help="rasa: NLU YAML files and/or project folders (searched for .yml/.yaml); "
        "alexa: one interaction model JSON; dialogflow: one ES agent export zip or its folder",
    )
    p.add_argument(
        "--skill",
        help="skill name (required for rasa; default: alexa's invocation name, the agent's name)",
    )
    p.add_argument("--out", default="skills", help="folder to write <skill>/ into")
    p.add_argument("--force", action="store_true", help="replace an existing skill folder")
    p.add_argument(
        "--negative-intents",
        nargs="*",
        default=[],
        metavar="NAME",
        help="rasa: more intent names that mean 'none of my intents' (out_of_scope, oos are "
        "always): their examples become the skill's negatives",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=None,
        metavar="F",
        help="hold out a stratified share F of each intent (and of the negatives) as tests.yaml, "
        "never trained on, for `nlu evaluate`",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out sample")
    p.set_defaults(func=import_command)

    p = sub.add_parser(
        "validate",
        help="check skill folders, JSONL files and benchmark folders without training",
    )
    p.add_argument("paths", nargs="+", help="skill folder(s), JSONL file(s), data folder(s)")
    p.set_defaults(func=validate_command)
