"""`nlu ...`: the command line, a thin layer over plain functions. Each room registers its own
commands beside its recipes (`<room>/commands.py`); this module assembles them, sets up logging
and turns a user's error into one line and exit status 2."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from nlu.data import commands as data_commands
from nlu.distill import commands as distill_commands
from nlu.evaluation import commands as evaluation_commands
from nlu.federated import commands as federated_commands
from nlu.inference import commands as inference_commands
from nlu.model import commands as model_commands
from nlu.serve import commands as serve_commands
from nlu.training import commands as training_commands

# In the order `nlu --help` lists them.
ROOMS = (
    training_commands,
    distill_commands,
    federated_commands,
    evaluation_commands,
    data_commands,
    inference_commands,
    model_commands,
    serve_commands,
)

# Errors that are the user's to fix (a message, exit status 2, no traceback), by module. Looked
# up only among modules already imported: an error class whose module was never loaded cannot
# have been raised, and importing them all up front would load torch for `nlu validate`.
USER_ERRORS = {
    "nlu.config": ("ConfigError",),
    "nlu.data.commands": ("ValidationFailed",),
    "nlu.distill.answers": ("TeacherError",),
    "nlu.federated.config": ("FederationError",),
    "nlu.inference.parser": ("OptionError", "UnknownSkillError"),
    "nlu.model.modeldir": ("ModelDirError",),
    "nlu.schema": ("DataError",),
    "nlu.text": ("TextError",),
    "nlu.training.add_skill": ("AddSkillError",),
    "nlu.training.finetune": ("FinetuneError",),
}


def _user_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [FileNotFoundError]
    for module, names in USER_ERRORS.items():
        if module in sys.modules:
            found += [getattr(sys.modules[module], name) for name in names]
    return tuple(found)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nlu", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for room in ROOMS:
        room.register(sub)
    return parser


class Once(logging.Filter):
    """A warning is said once per command: the train, dev and test splits read the same files
    and would repeat each of their warnings."""

    def __init__(self) -> None:
        super().__init__()
        self.said: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.getMessage())
        if key in self.said:
            return False
        self.said.add(key)
        return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may follow options (`nlu benchmark atis --data X epochs=2`), which
    # argparse cannot interleave with positionals on its own.
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    configured = bool(logging.getLogger().handlers)  # by the host program (or pytest)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not configured:
        for handler in logging.getLogger().handlers:
            handler.addFilter(Once())
    for noisy in ("accelerate", "httpx", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Weights and data never come from a hub at run time unless the user opts in.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        args.func(args)
    except Exception as err:
        if not isinstance(err, _user_errors()):
            raise
        print(f"nlu {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
