"""What every room's command-line commands share: the subparsers they register on, and JSON
output. Each room registers its own commands beside its recipes (`<room>/commands.py`);
`nlu.cli` assembles them and turns user errors into one-line messages."""

from __future__ import annotations

import argparse
import json
from typing import Any

Subparsers = argparse._SubParsersAction


def print_json(value: object) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def run_summary(result: Any) -> dict[str, Any]:
    """What a training recipe prints when it ends (train, distill)."""
    keys = ("best_epoch", "best_dev", "train_seconds", "examples_per_second")
    return {"model_dir": str(result.model_dir), **{k: getattr(result, k) for k in keys}}


def overrides_help(example: str) -> str:
    return f"key=value overrides, e.g. {example} (docs/reference/config.md)"
