"""Public corpora in their released formats: MASSIVE and SLURP (ATIS and SNIPS: the JointBERT
loader in `loaders.py`).

- MASSIVE (one JSONL per locale): `annot_utt` with inline `[slot : value]`, `scenario`, `intent`,
  `partition` in train/dev/test. Each scenario is a skill; `intent` is kept as released
  (e.g. `alarm_set`).
- SLURP (`train.jsonl`, `devel.jsonl`, `test.jsonl`): `sentence_annotation` with inline
  `[type : filler]`, `scenario`, `action`. Each scenario is a skill; the intent is
  `scenario_action`, as in SLURP's own evaluation.

Both read the annotated text, strip the brackets, and keep each filler's character offsets.
Malformed lines raise `DataError` naming the file and line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nlu.schema import DataError, Example, Span, raise_collected

# `[type : filler]`; MASSIVE/SLURP use exactly " : " between type and filler.
ANNOTATION = re.compile(r"\[\s*(?P<slot>[^\[\]:]+?)\s*:\s*(?P<value>[^\[\]]*?)\s*\]")

SLURP_FILES = {"train": "train.jsonl", "dev": "devel.jsonl", "test": "test.jsonl"}


def parse_bracketed(annotated: str) -> tuple[str, list[Span]]:
    """`wake me at [time : five am]` -> ("wake me at five am", [Span(11, 18, "time")])."""
    out: list[str] = []
    spans: list[Span] = []
    length = last = 0
    for m in ANNOTATION.finditer(annotated):
        out.append(annotated[last : m.start()])
        length += m.start() - last
        value = m.group("value")
        if not value:
            raise ValueError(f"empty filler in {m.group(0)!r}")
        spans.append(Span(length, length + len(value), m.group("slot").strip()))
        out.append(value)
        length += len(value)
        last = m.end()
    rest = annotated[last:]
    out.append(rest)
    text = "".join(out)
    if "[" in text or "]" in text:
        raise ValueError(f"unbalanced or malformed [type : filler] annotation in {annotated!r}")
    return text, spans


class _Twice(ValueError):
    """A JSON object with a key given twice (json would keep the last silently)."""


def _once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    row = dict(pairs)
    if len(row) < len(pairs):
        keys = [k for k, _ in pairs]
        raise _Twice(repr(next(k for k in keys if keys.count(k) > 1)))
    return row


def jsonl_rows(path: Path, problems: list[str] | None = None) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line. Bad lines fail naming file and line,
    all of them; with `problems`, they are added to it instead and the good rows returned."""
    data = path.read_bytes()
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        where = data[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{where}: not valid UTF-8 (byte {data[err.start]:#04x}); save the file as UTF-8"
        ) from err
    rows = []
    collected: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=_once)
        except json.JSONDecodeError as err:
            collected.append(f"{path}:{number}: invalid JSON ({err.msg})")
            continue
        except _Twice as err:
            collected.append(f"{path}:{number}: the key {err} is given twice; keep one")
            continue
        if not isinstance(row, dict):
            collected.append(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            continue
        rows.append((number, row))
    if problems is None:
        raise_collected(collected)
    else:
        problems += collected
    return rows


def _require(path: Path, number: int, row: dict[str, Any], keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if not isinstance(row.get(k), str) or not row[k]]
    if missing:
        raise DataError(f"{path}:{number}: missing or empty field(s): {', '.join(missing)}")


def massive_example(row: dict[str, Any]) -> Example:
    text, spans = parse_bracketed(row["annot_utt"])
    return Example(text, row["scenario"], row["intent"], tuple(spans))


def slurp_example(row: dict[str, Any]) -> Example:
    text, spans = parse_bracketed(row["sentence_annotation"])
    return Example(text, row["scenario"], f"{row['scenario']}_{row['action']}", tuple(spans))


def _read(
    path: Path,
    fields: tuple[str, ...],
    make: Callable[[dict[str, Any]], Example],
    keep: Callable[[dict[str, Any]], bool] = lambda row: True,
) -> list[Example]:
    examples = []
    for number, row in jsonl_rows(path):
        _require(path, number, row, fields)
        if not keep(row):
            continue
        try:
            examples.append(make(row))
        except (ValueError, DataError) as err:
            raise DataError(f"{path}:{number}: {err}") from err
    return examples


def read_massive(path: Path, split: str) -> list[Example]:
    fields = ("annot_utt", "scenario", "intent", "partition")
    examples = _read(path, fields, massive_example, lambda row: row["partition"] == split)
    if not examples:
        raise DataError(f"{path}: no examples with partition {split!r}")
    return examples


def read_slurp(path: Path, split: str) -> list[Example]:
    """A SLURP folder (train/devel/test.jsonl) or a single SLURP file (one split)."""
    if path.is_dir():
        path = path / SLURP_FILES[split]
        if not path.is_file():
            raise DataError(
                f"{path}: missing; a SLURP folder holds {', '.join(SLURP_FILES.values())}"
            )
    examples = _read(path, ("sentence_annotation", "scenario", "action"), slurp_example)
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


CLINC_FILE = "data_full.json"
CLINC_DOMAINS = "domains.json"
CLINC_SPLITS = {"train": "train", "dev": "val", "test": "test"}


def read_clinc(path: Path, split: str) -> list[Example]:
    """CLINC150 ("full"): a folder with data_full.json and domains.json, or data_full.json.

    Each of the 10 domains is a skill with its 15 intents; no slots. The `oos` rows of the split
    (oos_train, oos_val, oos_test) are out-of-scope examples (skill and intent None)."""
    folder = path if path.is_dir() else path.parent
    data_file = folder / CLINC_FILE if path.is_dir() else path
    domains_file = folder / CLINC_DOMAINS
    for needed in (data_file, domains_file):
        if not needed.is_file():
            raise DataError(
                f"{needed}: missing; a CLINC150 folder holds {CLINC_FILE} and {CLINC_DOMAINS}"
            )
    try:
        data = json.loads(data_file.read_text(encoding="utf-8"))
        domains = json.loads(domains_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{data_file}: not a CLINC150 JSON file ({err})") from err
    skill_of = {intent: domain for domain, intents in domains.items() for intent in intents}
    key = CLINC_SPLITS[split]
    examples = []
    for name, rows in ((key, data.get(key)), (f"oos_{key}", data.get(f"oos_{key}"))):
        if not isinstance(rows, list):
            raise DataError(f"{data_file}: no {name!r} list")
        for number, row in enumerate(rows):
            if not (
                isinstance(row, list) and len(row) == 2 and all(isinstance(v, str) for v in row)
            ):
                raise DataError(f"{data_file}: {name}[{number}] is not [text, intent]")
            text, intent = row
            if intent == "oos":
                examples.append(Example(text, None, None))
            elif intent in skill_of:
                examples.append(Example(text, skill_of[intent], intent))
            else:
                raise DataError(f"{data_file}: {name}[{number}]: intent {intent!r} is in no domain")
    return examples


def sniff_jsonl(path: Path) -> str:
    """'massive', 'slurp' or 'nlu' from the first record's fields."""
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    return "nlu"  # let the nlu reader report the bad line
                if isinstance(row, dict) and "annot_utt" in row:
                    return "massive"
                if isinstance(row, dict) and "sentence_annotation" in row:
                    return "slurp"
                return "nlu"
    return "nlu"


HUB_SPLITS = {"train": "train", "dev": "validation", "test": "test"}


def read_hub(name: str, split: str) -> list[Example]:
    """`hub:OWNER/NAME[:CONFIG]` in MASSIVE or SLURP layout via `datasets.load_dataset`.

    Needs the network (HF_HUB_OFFLINE=0); offline, use the local files instead.
    """
    import datasets

    repo, _, config = name.partition(":")
    try:
        dataset = datasets.load_dataset(repo, config or None, split=HUB_SPLITS[split])
    except Exception as err:  # the hub client raises many types; all mean "could not load"
        raise DataError(
            f"could not load {repo!r} from the Hugging Face hub ({type(err).__name__}: {err}); "
            "offline, pass the path of the downloaded files instead"
        ) from err
    features = dataset.features
    named = {k: f for k, f in features.items() if isinstance(f, datasets.ClassLabel)}
    examples = []
    for row in dataset:
        row = {k: named[k].int2str(v) if k in named else v for k, v in row.items()}
        examples.append(massive_example(row) if "annot_utt" in row else slurp_example(row))
    return examples
