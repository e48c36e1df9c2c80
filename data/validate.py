"""`nlu validate PATH...`: check data without training, in seconds.

Every source is read the way training and evaluation read it (the same loaders, so nothing is
checked differently from how it is used): skill folders with their `tests.yaml` and
`out_of_scope.yaml`, JSONL files and folders of split files, benchmark folders. Each problem is
reported as `path:line: what`, all of them rather than only the first, and so are the loaders'
warnings (spans that cut a word, slot values listed twice).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from nlu.config import TrainConfig
from nlu.data.loaders import (
    FORMATS,
    SPLIT_FILES,
    SPLITS,
    detect_format,
    has_own_split,
    load_split,
    skills_without_tests,
)
from nlu.data.skills import TESTS_FILE
from nlu.schema import DataError, Example

# The split `nlu train` makes with its defaults, so both commands count the same examples.
_DEFAULTS = TrainConfig()

# The splits each format has; the rest have all three.
_SPLITS = {"jsonl": ("train",), "slurp-file": ("train",)}


@dataclass
class SourceReport:
    path: str
    format: str | None = None
    examples: dict[str, int] = field(default_factory=dict)  # per split
    skills: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _warnings() -> Iterator[list[str]]:
    handler = _Collect()
    root = logging.getLogger("nlu.data")
    root.addHandler(handler)
    propagate, root.propagate = root.propagate, False  # the report prints them, once
    try:
        yield handler.messages
    finally:
        root.removeHandler(handler)
        root.propagate = propagate


def splits_of(path: str, kind: str) -> tuple[list[str], list[str]]:
    """(splits to read, warnings about missing ones) for a source of format `kind`."""
    if kind == "jsonl-folder":
        missing = [s for s in ("dev", "test") if not has_own_split(path, s)]
        names = " or ".join(SPLIT_FILES[s] for s in missing)
        note = [f"{path}: no {names} (dev: a share of train)"] if missing else []
        return [s for s in SPLITS if s not in missing], note
    if kind == "skills":
        without = skills_without_tests(Path(path))
        if without:
            names = ", ".join(str(d / TESTS_FILE) for d in without)
            return ["train", "dev"], [f"missing {names}: `nlu evaluate` needs hand-written tests"]
    return list(_SPLITS.get(kind, SPLITS)), []


def validate_source(path: str) -> SourceReport:
    report = SourceReport(path)
    with _warnings() as warned:
        try:
            report.format = detect_format(path)
            splits, notes = splits_of(path, report.format)
            report.warnings += notes
            skills: set[str] = set()
            seen: list[Example] = []
            for split in splits:
                try:
                    examples = load_split(
                        path,
                        split,
                        samples_per_template=_DEFAULTS.data.samples_per_template,
                        dev_fraction=_DEFAULTS.data.dev_fraction,
                        seed=_DEFAULTS.seed,
                    ).examples
                except DataError as err:
                    report.problems += err.problems
                    continue
                report.examples[split] = len(examples)
                skills.update(e.skill for e in examples if e.skill)
                seen += examples
            report.skills = sorted(skills)
            report.warnings += conflicting_labels(path, seen)
        except DataError as err:
            report.problems += err.problems
    # The loaders log which format they detected at INFO; only warnings are kept here. A
    # skill file read for several splits reports its problems once.
    report.warnings = list(dict.fromkeys([*report.warnings, *warned]))
    report.problems = list(dict.fromkeys(report.problems))
    return report


def conflicting_labels(path: str, examples: Sequence[Example]) -> list[str]:
    """One warning per text (compared case- and space-insensitively) that the data labels
    with two different frames: the model cannot learn both."""
    frames: dict[str, dict[str, None]] = defaultdict(dict)
    for ex in examples:
        frame = f"{ex.skill}/{ex.intent}" if ex.in_scope else "out of scope"
        frames[" ".join(ex.text.casefold().split())][frame] = None
    return [
        f"{path}: {text!r} is labelled {' and '.join(labels)}; keep one"
        for text, labels in frames.items()
        if len(labels) > 1
    ]


def validate(paths: Sequence[str]) -> list[SourceReport]:
    return [validate_source(p) for p in paths]


def format_report(report: SourceReport) -> str:
    what = FORMATS.get(report.format or "", "unreadable")
    counts = " / ".join(f"{split} {n:,}" for split, n in report.examples.items())
    head = f"{report.path}: {what}"
    if counts:
        head += f"; {counts} examples, {len(report.skills)} skill(s)"
    lines = [head + (": ok" if report.ok else f": {len(report.problems)} problem(s)")]
    lines += [f"  error: {p}" for p in report.problems]
    lines += [f"  warning: {w}" for w in report.warnings]
    return "\n".join(lines)
