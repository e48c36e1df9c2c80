"""What every importer shares: names, value tables, the held-out split and the atomic write.

An importer reads another tool's files into an `Imported` (the skill document nlu reads, the
texts the other tool trained as "none of my intents", and the notes the user should read);
`write_import` turns it into `<out>/<skill>/` in one step: everything is written to a hidden
folder beside the target, read back with nlu's own parsers, and only then moved into place, so a
failed import leaves nothing behind.
"""

from __future__ import annotations

import random
import re
import shutil
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nlu.data.skills import (
    OUT_OF_SCOPE_FILE,
    SKILL_FILE,
    TESTS_FILE,
    parse_out_of_scope_file,
    parse_skill_file,
    parse_tests_file,
)
from nlu.schema import DataError

_NAME = re.compile(r"[^A-Za-z0-9_]+")
PLACEHOLDER = re.compile(r"\{(\w+)\}")


class ImportFailed(DataError):
    """An input that cannot be imported; the message says where (`path:line:`) and what."""


class Unreadable(ImportFailed):
    """An example with brackets or braces that are no annotation (nlu reads them as markup):
    it is left out with a warning that names it, not a reason to refuse the whole import."""


def slot_name(name: str) -> str:
    """An nlu name (letters, digits, _; starting with a letter) for another tool's name."""
    cleaned = _NAME.sub("_", name).strip("_")
    return cleaned if cleaned[:1].isalpha() else f"x_{cleaned}"


@dataclass
class ValueTable:
    """One slot type's values and synonyms as nlu reads them: every surface form (compared
    case-insensitively) stands for exactly one value.

    Other tools allow more: Rasa keeps case variants apart and Alexa lets one synonym belong
    to two values. The rule here: case variants are one value (the first spelling is kept), and
    a form already taken resolves to the value it was first listed for (file order); a warning
    names each form that was taken."""

    type_name: str
    values: dict[str, list[str]] = field(default_factory=dict)  # value -> its synonyms
    owner: dict[str, str] = field(default_factory=dict)  # casefolded form -> value
    warnings: list[str] = field(default_factory=list)

    def add(self, value: str, synonyms: list[str] | tuple[str, ...] = ()) -> str:
        """Add `value` (and its synonyms); returns the value it is stored as."""
        value = " ".join(value.split())
        known = self.owner.get(value.casefold())
        if known is None:
            self.values[value] = []
            self.owner[value.casefold()] = value
            known = value
        elif known.casefold() != value.casefold():
            self.warnings.append(
                f"slot type {self.type_name}: {value!r} is both a value and a synonym of "
                f"{known!r}; it resolves to {known!r} (first in file order)"
            )
        for synonym in synonyms:
            synonym = " ".join(str(synonym).split())
            if not synonym:
                continue
            taken = self.owner.get(synonym.casefold())
            if taken is None:
                self.owner[synonym.casefold()] = known
                self.values[known].append(synonym)
            elif taken != known:
                self.warnings.append(
                    f"slot type {self.type_name}: synonym {synonym!r} is listed for both "
                    f"{taken!r} and {value!r}; it resolves to {taken!r} (first in file order)"
                )
        return known

    def doc(self) -> list[Any]:
        return [{"value": v, "synonyms": s} if s else v for v, s in self.values.items()]


@dataclass
class Imported:
    """One imported skill before it is written."""

    skill: str
    description: str
    slots: dict[str, dict[str, Any]]  # slot type -> {"values": [...], "kind": ...}
    intents: dict[str, dict[str, Any]]  # intent -> {"slots": {...}, "utterances": [...]}
    negatives: list[str] = field(default_factory=list)  # texts the source trained as "none"
    notes: list[str] = field(default_factory=list)  # what the import changed (renames, merges)
    warnings: list[str] = field(default_factory=list)  # what the import could not keep

    def __post_init__(self) -> None:
        # Each source lists some twice or with stray spaces: one of each, as the reader will.
        self.negatives = list(dict.fromkeys(" ".join(t.split()) for t in self.negatives))

    def skill_doc(self) -> dict[str, Any]:
        return {
            "skill": self.skill,
            "description": self.description,
            "slots": self.slots,
            "intents": self.intents,
        }


def _split_off(
    texts: list[str], fraction: float, key: str, seed: int
) -> tuple[list[str], list[str]]:
    """(kept, held out): a seeded `fraction` of `texts`, at least one text kept, order kept."""
    n_held = min(round(len(texts) * fraction), len(texts) - 1)
    order = list(texts)
    random.Random(zlib.crc32(f"{seed}:{key}".encode())).shuffle(order)
    held = set(order[: max(n_held, 0)])
    return [t for t in texts if t not in held], [t for t in texts if t in held]


def hold_out(
    imported: Imported, fraction: float, seed: int
) -> tuple[dict[str, list[str]], list[str]]:
    """Move a stratified `fraction` of each intent's utterances and of the negatives out of
    training: per intent the same share, at least one text left to train. Templates become
    literal test texts with a seeded value for each placeholder. Returns the tests (intent ->
    texts) and the held-out negatives; `imported` keeps what is left to train on."""
    if not 0 < fraction < 1:
        raise ImportFailed(f"--test-fraction must be between 0 and 1 (exclusive), not {fraction}")
    tests: dict[str, list[str]] = {}
    for name, intent in imported.intents.items():
        intent["utterances"], held = _split_off(
            intent["utterances"], fraction, f"{imported.skill}:{name}", seed
        )
        if held:
            rng = random.Random(zlib.crc32(f"{seed}:{name}:fill".encode()))
            tests[name] = [literal(u, intent["slots"], imported.slots, rng) for u in held]
    imported.negatives, negative_tests = _split_off(
        imported.negatives, fraction, f"{imported.skill}:negatives", seed
    )
    return tests, negative_tests


def literal(
    template: str, slots: dict[str, str], types: dict[str, dict[str, Any]], rng: random.Random
) -> str:
    """A template with `{slot}` placeholders as a literal test text: `[value](slot)`."""

    def fill(m: re.Match[str]) -> str:
        values = types[slots[m.group(1)]]["values"]
        choice = rng.choice(values)
        return f"[{choice['value'] if isinstance(choice, dict) else choice}]({m.group(1)})"

    return " ".join(PLACEHOLDER.sub(fill, template).split())


def _dump(path: Path, doc: Any, header: str) -> None:
    path.write_text(
        header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100),
        encoding="utf-8",
    )


def write_import(
    imported: Imported,
    out: Path,
    *,
    force: bool = False,
    test_fraction: float | None = None,
    seed: int = 0,
) -> Path:
    """Write `<out>/<skill>/` (skill.yaml; tests.yaml and out_of_scope.yaml when there is
    something to put in them) all at once, or nothing. Returns the skill folder."""
    target = out / imported.skill
    if target.exists() and not force:
        raise ImportFailed(f"{target} exists; pass --force to replace it or choose another --out")
    if out.exists() and not out.is_dir():
        raise ImportFailed(f"{out}: --out must be a folder, and this is a file")
    tests, negative_tests = hold_out(imported, test_fraction, seed) if test_fraction else ({}, [])
    created_out = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{imported.skill}.import-", dir=out))
    try:
        folder = staging / imported.skill
        folder.mkdir()
        source = "# Written by `nlu import`; edit freely.\n"
        _dump(folder / SKILL_FILE, imported.skill_doc(), source)
        spec = parse_skill_file(folder / SKILL_FILE)  # what training will read, checked now
        if tests:
            _dump(folder / TESTS_FILE, tests, "# Held out by `nlu import --test-fraction`.\n")
            parse_tests_file(folder / TESTS_FILE, spec)
        if imported.negatives or negative_tests:
            negatives = {"train": imported.negatives, "test": negative_tests}
            _dump(folder / OUT_OF_SCOPE_FILE, negatives, "# What the source trained as none.\n")
            parse_out_of_scope_file(folder / OUT_OF_SCOPE_FILE)
        if target.exists():  # --force: the old folder goes only once the new one is whole
            target.rename(staging / ".replaced")
        folder.rename(target)
    except DataError as err:
        raise ImportFailed(f"nlu could not read back the imported skill: {err}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created_out and not target.exists():
            shutil.rmtree(out, ignore_errors=True)
    return target
