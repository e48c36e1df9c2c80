"""`nlu import rasa`: Rasa 2/3 NLU training data (a project folder or files) -> one skill.

What maps to what (docs/guide/skills-and-data.md says the same for users):
- `intent` examples become utterances, kept literal, with `[text](entity)`,
  `[text](entity:value)` and `[text]{"entity": ..., "value": ..., "role": ...}` annotations.
- An entity becomes a slot type of the same name (renamed to letters, digits and `_` where it
  has others, e.g. `amount-of-money` -> `amount_of_money`, with a note). An entity with a
  **role** becomes the slot `<entity>_<role>` of type `<entity>` (Rasa's "from"/"to" cities
  are two slots of one type). **Groups** number entities within one utterance; nlu has no
  groups, so the label is dropped with a warning.
- `synonym` and `lookup` entries give the slot type's values; case variants are one value and
  a synonym listed for two values resolves to the first (see `ValueTable`).
- Intents named like out-of-scope (`out_of_scope`, `out_of_scope/...`, `oos`, or the names
  passed with `--negative-intents`) become the skill's negatives (`out_of_scope.yaml`): texts
  the router learns to reject, not an intent.
- `regex` entries cannot be honoured (nlu learns slots from examples): one warning names them.
  `responses`, stories, rules and domain files are not NLU data and are skipped with a note.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nlu.data.importers.common import Imported, ImportFailed, Unreadable, ValueTable, slot_name
from nlu.data.skills import load_yaml
from nlu.schema import DataError

# [text](entity) | [text](entity:value) | [text]{"entity": ...} | [text][{...}, {...}]
ANNOTATION = re.compile(
    r"\[(?P<text>[^\]]+)\](?:\((?P<short>[^)]+)\)|(?P<json>\{[^}]*\})|(?P<list>\[\{.*?\}\]))"
)
NEGATIVE_INTENTS = ("out_of_scope", "oos", "outofscope")
RASA_SUFFIXES = (".yml", ".yaml")


@dataclass
class _Reading:
    """What the files said, gathered across files before the skill is built."""

    intents: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    intent_slots: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    annotated: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    lookups: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    synonyms: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    negatives: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)
    roles: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    regexes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    responses: dict[str, Any] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)  # path:line: example
    empty: list[str] = field(default_factory=list)  # intents without examples
    problems: list[str] = field(default_factory=list)


def rasa_files(paths: Iterable[Path]) -> list[Path]:
    """The YAML files under each path (a file, or a project folder searched recursively)."""
    files: list[Path] = []
    for path in paths:
        if not path.exists():
            raise ImportFailed(f"{path}: no such file or folder")
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.suffix in RASA_SUFFIXES and p.is_file() and not _hidden(p, path)
            )
            if not found:
                raise ImportFailed(f"{path}: no .yml or .yaml files in this folder")
            files += found
        elif path.suffix == ".md":
            raise ImportFailed(
                f"{path}: Rasa 1 Markdown data; convert it first with "
                "`rasa data convert nlu -f yaml --data FILE --out FOLDER`"
            )
        else:
            files.append(path)
    return files


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def read_rasa(
    paths: Iterable[Path], *, skill: str, negative_intents: Iterable[str] = ()
) -> Imported:
    """Rasa NLU data from files or project folders as one skill (nothing is written)."""
    negatives = {n.casefold() for n in (*NEGATIVE_INTENTS, *negative_intents)}
    reading = _Reading()
    files = rasa_files(paths)
    with_nlu = 0
    for path in files:
        with_nlu += _read_file(path, reading, negatives)
    if reading.problems:
        raise ImportFailed("\n".join(reading.problems[:20]), reading.problems)
    if not with_nlu:
        raise ImportFailed(
            f"{', '.join(map(str, files))}: no `nlu:` section; is this Rasa NLU training data?"
        )
    if not reading.intents:
        raise ImportFailed(f"{', '.join(map(str, files))}: no intents with examples")
    return _build(reading, slot_name(skill), files)


def _read_file(path: Path, reading: _Reading, negatives: set[str]) -> int:
    try:
        doc, lines = load_yaml(path)
    except DataError as err:
        reading.problems.append(str(err))
        return 0
    except OSError as err:
        reading.problems.append(f"{path}: cannot read: {err.strerror}")
        return 0
    if isinstance(doc, dict) and isinstance(doc.get("responses"), dict):
        reading.responses.update(doc["responses"])
    if not isinstance(doc, dict) or "nlu" not in doc:
        reading.skipped.append(path.name)
        return 0
    items = doc["nlu"]
    if not isinstance(items, list):
        reading.problems.append(f"{path}:{lines.get(('nlu',), 1)}: `nlu:` must be a list")
        return 0
    for i, item in enumerate(items):
        line = lines.get(("nlu", i), 1)
        if not isinstance(item, dict):
            reading.problems.append(f"{path}:{line}: nlu item is not a mapping")
            continue
        examples = _examples(
            item.get("examples"), lines.get(("nlu", i, "examples"), line), lines, i
        )
        if "intent" in item:
            name = str(item["intent"])
            if name.casefold() in negatives or name.casefold().split("/")[0] in negatives:
                reading.negatives += [
                    ANNOTATION.sub(lambda m: m.group("text"), t) for t, _ in examples
                ]
                continue
            if not examples:
                reading.empty.append(name)
            intent = _intent_name(name, reading)
            for text, at in examples:
                try:
                    reading.intents[intent].append(_utterance(text, intent, reading))
                except Unreadable:
                    reading.unreadable.append(f"{path}:{at}: {text!r}")
                except ImportFailed as err:
                    reading.problems.append(f"{path}:{at}: {err}")
        elif "synonym" in item:
            reading.synonyms[str(item["synonym"])] += [t for t, _ in examples]
        elif "lookup" in item:
            reading.lookups[str(item["lookup"])] += [t for t, _ in examples]
        elif "regex" in item:
            reading.regexes.append(str(item["regex"]))
        else:
            reading.problems.append(
                f"{path}:{line}: nlu item has none of intent, synonym, lookup, regex"
            )
    return 1


def _intent_name(name: str, reading: _Reading) -> str:
    ours = slot_name(name)
    if ours != name:
        reading.renamed[f"intent {name}"] = ours
    return ours


def _examples(
    block: Any, line: int, lines: dict[tuple[Any, ...], int], i: int
) -> list[tuple[str, int]]:
    """(example, line) pairs: a `|` block of `- ` lines (a line without the dash is an example
    too), or a YAML list."""
    if isinstance(block, list):  # a YAML list; Rasa 3 items may be {text: ..., metadata: ...}
        texts = [str(x.get("text", "") if isinstance(x, dict) else x).strip() for x in block]
        return [
            (text, lines.get(("nlu", i, "examples", k), line))
            for k, text in enumerate(texts)
            if text
        ]
    if not isinstance(block, str):
        return []
    out = []
    for k, raw in enumerate(block.splitlines()):
        text = raw.strip()
        text = text[2:].strip() if text.startswith("- ") or text == "-" else text
        if text:
            out.append((text, line + 1 + k))
    return out


def _utterance(example: str, intent: str, reading: _Reading) -> str:
    """A Rasa example -> an nlu utterance with literal `[text](slot)` annotations."""

    def convert(m: re.Match[str]) -> str:
        text = m.group("text").strip()
        role = group = None
        if m.group("short"):
            entity, value = m.group("short"), text
            if ":" in entity:  # [text](entity:value), Rasa 1's shorthand
                entity, value = entity.split(":", 1)
        else:
            raw = m.group("json") or m.group("list")
            try:
                spec = json.loads(raw)
            except json.JSONDecodeError as err:
                raise ImportFailed(f"bad entity annotation {m.group(0)!r}: {err.msg}") from err
            if isinstance(spec, list):  # several annotations of one span: the first is kept
                spec = spec[0] if spec else {}
            if not isinstance(spec, dict) or "entity" not in spec:
                raise ImportFailed(f'annotation {m.group(0)!r} has no "entity"')
            entity, value = str(spec["entity"]), str(spec.get("value", text))
            role, group = spec.get("role"), spec.get("group")
        entity = entity.strip()
        kind = slot_name(entity)
        if kind != entity:
            reading.renamed[f"entity {entity}"] = kind
        slot = kind if role is None else slot_name(f"{kind}_{role}")
        if role is not None:
            reading.roles.add(f"{entity} role {role} -> slot {slot}")
        if group is not None:
            reading.groups.add(entity)
        reading.intent_slots[intent][slot] = kind
        reading.annotated[kind].append((value.strip(), text))
        return f"[{text}]({slot})"

    converted = ANNOTATION.sub(convert, example)
    # nlu reads { } [ ] as markup: an unannotated one would be misread, so it is an error.
    if re.search(r"[{}\[\]]", ANNOTATION.sub("", example)):
        raise Unreadable(example)
    return converted


def _build(reading: _Reading, skill: str, files: list[Path]) -> Imported:
    kinds = {k for slots in reading.intent_slots.values() for k in slots.values()}
    slots: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    synonyms_of: dict[str, list[str]] = defaultdict(list)  # case variants are one value
    for value, forms in reading.synonyms.items():
        synonyms_of[value.casefold()] += forms
    for kind in sorted(kinds):
        table = ValueTable(kind)
        for value, text in reading.annotated[kind]:
            table.add(value, [text] if text != value else [])
            table.add(value, synonyms_of.get(value.casefold(), []))
        for raw in (r for r in reading.lookups if slot_name(r) == kind):
            for value in reading.lookups[raw]:
                table.add(value, synonyms_of.get(value.casefold(), []))
        slots[kind] = {"values": table.doc()}
        warnings += table.warnings
    unused = sorted(r for r in reading.lookups if slot_name(r) not in kinds)
    if unused:
        warnings.append(
            f"lookup table(s) {', '.join(unused)} name no annotated entity; not imported "
            "(annotate the entity in some examples to use them)"
        )
    if reading.unreadable:
        warnings.append(
            f"{len(reading.unreadable)} example(s) not imported: brackets or braces that are no "
            "entity annotation (nlu reads them as markup); rewrite them without: "
            + "; ".join(reading.unreadable[:5])
            + (" ..." if len(reading.unreadable) > 5 else "")
        )
    if reading.regexes:
        warnings.append(
            f"regex(es) {', '.join(sorted(set(reading.regexes)))} not imported: nlu learns "
            "slots from annotated examples, so annotate a few examples instead"
        )
    if reading.groups:
        warnings.append(
            f"entity group labels dropped for {', '.join(sorted(reading.groups))}: nlu has no "
            "entity groups (each entity keeps its slot)"
        )
    notes = [
        f"{what} is named {ours} (nlu names use letters, digits, _)"
        for what, ours in sorted(reading.renamed.items())
    ]
    notes += [f"entity {r}" for r in sorted(reading.roles)]
    if reading.empty:
        notes.append(
            f"intents without examples not imported: {', '.join(sorted(set(reading.empty)))}"
        )
    if reading.negatives:
        notes.append(
            f"{len(reading.negatives)} out-of-scope example(s) became the skill's negatives "
            "(out_of_scope.yaml): the router learns to reject them"
        )
    if reading.responses:
        notes.append(
            f"{len(reading.responses)} response(s) not imported: nlu finds what was meant; "
            "what the assistant answers stays in your dialogue code"
        )
    if reading.skipped:
        notes.append(
            f"skipped {len(reading.skipped)} file(s) without an `nlu:` section "
            f"(stories, rules, domain, responses): {', '.join(sorted(set(reading.skipped)))}"
        )
    return Imported(
        skill=skill,
        description=f"Imported from Rasa data {', '.join(f.name for f in files[:3])}"
        + (f" and {len(files) - 3} more" if len(files) > 3 else ""),
        slots=slots,
        intents={
            name: {"slots": dict(sorted(reading.intent_slots[name].items())), "utterances": texts}
            for name, texts in reading.intents.items()
        },
        negatives=reading.negatives,
        notes=notes,
        warnings=warnings,
    )
