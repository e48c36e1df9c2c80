"""`nlu import`, `nlu validate`: the data room's commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from nlu.console import Subparsers


class ValidationFailed(Exception):
    """`nlu validate` found problems (each already printed with its path and line)."""


def import_command(args: argparse.Namespace) -> None:
    from nlu.config import ConfigError
    from nlu.data.importers import import_alexa, import_rasa

    source, out = Path(args.file), Path(args.out)
    if args.format == "rasa":
        if not args.skill:
            raise ConfigError("nlu import rasa: name the skill with --skill NAME")
        target = import_rasa(source, skill=args.skill, out=out, force=args.force)
    else:
        target = import_alexa(source, skill=args.skill, out=out, force=args.force)
    print(f"wrote {target}; check it with: nlu validate {target.parent}")


def validate_command(args: argparse.Namespace) -> None:
    from nlu.data.validate import format_report, validate

    reports = validate(args.paths)
    for report in reports:
        print(format_report(report))
    bad = sum(not r.ok for r in reports)
    if bad:
        raise ValidationFailed(f"{bad} of {len(reports)} source(s) have problems (listed above)")


def register(sub: Subparsers) -> None:
    p = sub.add_parser("import", help="write a skill folder from Rasa or Alexa training data")
    p.add_argument("format", choices=["rasa", "alexa"])
    p.add_argument("file", help="Rasa 3 nlu.yml, or an Alexa interaction model JSON")
    p.add_argument("--skill", help="skill name (required for rasa; alexa: the invocation name)")
    p.add_argument("--out", default="skills", help="folder to write <skill>/skill.yaml into")
    p.add_argument("--force", action="store_true", help="replace an existing skill.yaml")
    p.set_defaults(func=import_command)

    p = sub.add_parser(
        "validate",
        help="check skill folders, JSONL files and benchmark folders without training",
    )
    p.add_argument("paths", nargs="+", help="skill folder(s), JSONL file(s), data folder(s)")
    p.set_defaults(func=validate_command)
