"""`nlu import dialogflow`: a Dialogflow ES agent (the export zip, or it unpacked) -> one skill.

- Each intent's `<intent>_usersays_<lang>.json` gives its utterances, kept literal: a part with
  an `alias` and an entity (`meta`) becomes `[text](alias)`; `@sys.ignore` parts are plain text.
- A custom entity (`@AppointmentType`) is a slot type with the values and synonyms of
  `entities/<name>_entries_<lang>.json`; an annotated text that the entries lack is added as a
  value (with a note). System entities: `@sys.number`, `@sys.number-integer`,
  `@sys.cardinal` become the `number` kind, `@sys.date` `date`, `@sys.time` `time`,
  `@sys.duration` `duration`, `@sys.ordinal` `ordinal`; any other `@sys.` entity is an open
  slot whose values are the annotated texts (a warning says so).
- Fallback intents (`"fallbackIntent": true`) give the skill's negatives. Intents without
  training phrases are listed in a note. Responses, contexts and events are not NLU data.
"""

from __future__ import annotations

import json
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from nlu.data.importers.common import Imported, ImportFailed, Unreadable, ValueTable, slot_name
from nlu.data.skills import parse_annotated

SYS_KINDS = {
    "sys.number": "number",
    "sys.number-integer": "number",
    "sys.cardinal": "number",
    "sys.date": "date",
    "sys.time": "time",
    "sys.duration": "duration",
    "sys.ordinal": "ordinal",
}
USERSAYS = "_usersays_"
ENTRIES = "_entries_"


def _files(path: Path) -> dict[str, str]:
    """Every JSON file of the agent, by its path inside the agent (`intents/Hours.json`)."""
    if path.is_dir():
        return {
            str(p.relative_to(path)): p.read_text(encoding="utf-8")
            for p in sorted(path.rglob("*.json"))
        }
    if not zipfile.is_zipfile(path):
        raise ImportFailed(f"{path}: not a Dialogflow agent export (a .zip or its unpacked folder)")
    with zipfile.ZipFile(path) as archive:
        return {
            name: archive.read(name).decode("utf-8")
            for name in sorted(archive.namelist())
            if name.endswith(".json")
        }


def read_dialogflow(path: Path, *, skill: str | None = None) -> Imported:
    """A Dialogflow ES agent as one skill (nothing is written)."""
    if not path.exists():
        raise ImportFailed(f"{path}: no such file or folder")
    raw = _files(path)
    docs: dict[str, Any] = {}
    problems: list[str] = []
    for name, text in raw.items():
        try:
            docs[name] = json.loads(text)
        except json.JSONDecodeError as err:
            problems.append(f"{path}: {name}:{err.lineno}: invalid JSON: {err.msg}")
    agent = docs.get("agent.json")
    if not isinstance(agent, dict):
        raise ImportFailed(f"{path}: no agent.json; is this a Dialogflow ES agent export?")
    lang = str(agent.get("language") or "en")
    tables = _entities(docs, lang)
    intents: dict[str, Any] = {}
    annotated: dict[str, list[str]] = defaultdict(list)  # slot type -> annotated texts
    negatives: list[str] = []
    notes: list[str] = []
    empty: list[str] = []
    unreadable: list[str] = []
    # An intent is `intents/<name>.json` (its settings) and/or its training phrases file.
    stems = {
        Path(n).name.split(USERSAYS)[0] if USERSAYS in n else Path(n).stem
        for n in docs
        if n.startswith("intents/")
    }
    for stem in sorted(stems):
        meta = docs.get(f"intents/{stem}.json")
        meta = meta if isinstance(meta, dict) else {}
        title = str(meta.get("name") or stem)
        says = docs.get(f"intents/{stem}{USERSAYS}{lang}.json") or []
        utterances, slots = [], {}
        for k, example in enumerate(says if isinstance(says, list) else []):
            where = f"{path}: intents/{stem}{USERSAYS}{lang}.json: [{k}]"
            try:
                text, used = _utterance(example, annotated)
            except Unreadable as err:
                unreadable.append(f"{where}: {err}")
                continue
            except ImportFailed as err:
                problems.append(f"{where}: {err}")
                continue
            utterances.append(text)
            slots.update(used)
        if meta.get("fallbackIntent"):
            negatives += [parse_annotated(u)[0] for u in utterances]
            continue
        if not utterances:
            empty.append(title)
            continue
        ours = slot_name(title)
        if ours != title:
            notes.append(f"intent {title!r} is named {ours}")
        intents[ours] = {"slots": dict(sorted(slots.items())), "utterances": utterances}
    if problems:
        raise ImportFailed("\n".join(problems[:20]), problems)
    if not intents:
        raise ImportFailed(f"{path}: no intents with training phrases in language {lang!r}")
    if empty:
        notes.append(f"intents without training phrases not imported: {', '.join(empty)}")
    if negatives:
        notes.append(f"{len(negatives)} fallback-intent phrase(s) became the skill's negatives")
    slot_docs, warnings = _slot_types(tables, annotated, notes)
    if unreadable:
        warnings.append(
            f"{len(unreadable)} training phrase(s) not imported: brackets or braces (nlu reads "
            "them as markup); rewrite them without: " + "; ".join(unreadable[:5])
        )
    return Imported(
        skill=slot_name(skill or str(agent.get("displayName") or path.stem).replace(" ", "_")),
        description=f"Imported from Dialogflow agent {path.name}",
        slots=slot_docs,
        intents=intents,
        negatives=negatives,
        notes=notes,
        warnings=warnings,
    )


def _entities(docs: dict[str, Any], lang: str) -> dict[str, ValueTable]:
    tables: dict[str, ValueTable] = {}
    for name, entries in docs.items():
        if not (name.startswith("entities/") and name.endswith(f"{ENTRIES}{lang}.json")):
            continue
        entity = Path(name).name.removesuffix(f"{ENTRIES}{lang}.json")
        table = ValueTable(entity)
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and str(entry.get("value", "")).strip():
                synonyms = [s for s in entry.get("synonyms") or [] if isinstance(s, str)]
                table.add(str(entry["value"]), synonyms)
        tables[entity] = table
    return tables


def _utterance(example: Any, annotated: dict[str, list[str]]) -> tuple[str, dict[str, str]]:
    """A training phrase -> an nlu utterance with `[text](slot)` annotations, and its slots."""
    parts = example.get("data") if isinstance(example, dict) else None
    if not isinstance(parts, list):
        raise ImportFailed("a training phrase needs a `data` list")
    out: list[str] = []
    slots: dict[str, str] = {}
    for part in parts:
        text = str(part.get("text", "")) if isinstance(part, dict) else ""
        if any(c in text for c in "[]{}"):
            raise Unreadable(text)
        meta, alias = str(part.get("meta") or ""), part.get("alias")
        if not meta.startswith("@") or meta == "@sys.ignore" or not alias or not text.strip():
            out.append(text)
            continue
        kind = meta[1:]
        slot, slot_type = slot_name(str(alias)), slot_name(kind)
        slots[slot] = slot_type
        annotated[kind].append(text.strip())
        lead, trail = text[: len(text) - len(text.lstrip())], text[len(text.rstrip()) :]
        out.append(f"{lead}[{text.strip()}]({slot}){trail}")
    utterance = " ".join("".join(out).split())
    if not utterance:
        raise ImportFailed("an empty training phrase")
    return utterance, slots


def _slot_types(
    tables: dict[str, ValueTable], annotated: dict[str, list[str]], notes: list[str]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    docs: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    open_types: list[str] = []
    for kind, texts in sorted(annotated.items()):
        if kind in SYS_KINDS:
            values = list(dict.fromkeys(texts))
            docs[slot_name(kind)] = {"kind": SYS_KINDS[kind], "values": values}
            continue
        table = tables.get(kind) or ValueTable(kind)
        if kind.startswith("sys."):
            open_types.append(f"@{kind}")
        added = [t for t in dict.fromkeys(texts) if t.casefold() not in table.owner]
        for text in added:
            table.add(text)
        if added and kind in tables:
            notes.append(
                f"entity @{kind}: annotated text(s) missing from its entries added as values: "
                + ", ".join(added)
            )
        docs[slot_name(kind)] = {"values": table.doc()}
        warnings += table.warnings
    if open_types:
        warnings.append(
            f"{', '.join(open_types)}: Dialogflow's system entity catalogues are not available "
            "offline, so these slots train on the annotated examples' values; add more under the "
            "slot type's `values` to widen them"
        )
    return docs, warnings
