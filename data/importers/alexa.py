"""`nlu import alexa`: an Alexa interaction model (JSON) -> one skill.

Accepted layouts: the SMAPI/console file `{"interactionModel": {"languageModel": ...}}`, a bare
`{"languageModel": ...}`, and the old Skill Builder file `{"intents": [...], "types": [...]}`.

- Intents with samples become intents; `{slot}` placeholders are nlu's template placeholders.
  A slot's own `samples` (what users answer when Alexa asks for it) become utterances of its
  intent too. Built-in intents (`AMAZON.HelpIntent`, ...) are imported when the model gives
  them samples (as `help`, ...); without samples there is nothing to learn from and they are
  listed in a note. `AMAZON.FallbackIntent` samples become the skill's negatives.
- Custom slot types keep their values and synonyms (see `ValueTable` for a synonym listed for
  two values, which Alexa allows).
- Built-in slot types: numbers (`AMAZON.NUMBER`, `AMAZON.FOUR_DIGIT_NUMBER`), `AMAZON.DATE`,
  `AMAZON.TIME`, `AMAZON.DURATION` and `AMAZON.Ordinal` become nlu's built-in kinds,
  resolved by nlu. List-like ones (`AMAZON.US_CITY`, `AMAZON.US_FIRST_NAME`, `AMAZON.Food`,
  ...) become open slots filled with a few sample values for training: the model learns the
  slot from its context, and a warning says so, since Amazon's catalogues are not available
  here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from nlu.data.importers.common import (
    PLACEHOLDER,
    Imported,
    ImportFailed,
    ValueTable,
    slot_name,
)

KINDS = {
    "AMAZON.NUMBER": ("number", ["one", "2", "ten", "twenty five", "3"]),
    "AMAZON.FOUR_DIGIT_NUMBER": ("number", ["1984", "2014", "nineteen ninety", "2021"]),
    "AMAZON.DURATION": ("duration", ["five minutes", "an hour", "ten seconds", "two days"]),
    "AMAZON.TIME": ("time", ["7 am", "noon", "6:30 pm", "midnight"]),
    "AMAZON.DATE": ("date", ["today", "tomorrow", "friday", "june fifth", "next week"]),
    "AMAZON.Ordinal": ("ordinal", ["first", "second", "third", "fifth", "tenth", "twenty first"]),
}
# Sample values for list-like built-in types: enough variety to learn the slot's context.
OPEN_TYPES = {
    "AMAZON.US_CITY": ["seattle", "new york", "boston", "san francisco", "denver", "austin"],
    "AMAZON.City": ["london", "paris", "seattle", "tokyo", "berlin", "chicago"],
    "AMAZON.US_STATE": ["washington", "texas", "new york", "california", "ohio", "maine"],
    "AMAZON.Country": ["france", "japan", "brazil", "canada", "india", "germany"],
    "AMAZON.US_FIRST_NAME": ["john", "maria", "sam", "olivia", "james", "priya"],
    "AMAZON.FirstName": ["john", "maria", "sam", "olivia", "james", "priya"],
    "AMAZON.Person": ["albert einstein", "taylor swift", "abraham lincoln", "serena williams"],
    "AMAZON.Actor": ["tom hanks", "meryl streep", "denzel washington", "emma stone"],
    "AMAZON.Artist": ["the beatles", "adele", "miles davis", "beyonce"],
    "AMAZON.Musician": ["adele", "miles davis", "yo-yo ma", "prince"],
    "AMAZON.MusicGroup": ["the beatles", "queen", "abba", "radiohead"],
    "AMAZON.Food": ["pizza", "pasta", "tacos", "salad", "sushi", "apple pie"],
    "AMAZON.Color": ["red", "blue", "green", "yellow", "purple", "orange"],
    "AMAZON.Animal": ["dog", "cat", "horse", "elephant", "parrot", "rabbit"],
    "AMAZON.Month": ["january", "march", "june", "september", "november", "december"],
    "AMAZON.DayOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday", "sunday"],
    "AMAZON.Language": ["english", "spanish", "french", "german", "japanese", "hindi"],
    "AMAZON.Genre": ["jazz", "rock", "classical", "hip hop", "country", "pop"],
    "AMAZON.Sport": ["football", "tennis", "basketball", "golf", "cricket", "hockey"],
    "AMAZON.Book": ["pride and prejudice", "dune", "the hobbit", "beloved"],
    "AMAZON.Movie": ["casablanca", "jaws", "the matrix", "up"],
    "AMAZON.SearchQuery": ["how tall is the tower", "the news today", "chocolate cake recipe"],
    "AMAZON.PhoneNumber": ["555 123 4567", "two zero six five five five one two one two"],
    "AMAZON.Airport": ["heathrow", "jfk", "o'hare", "sea-tac"],
    "AMAZON.Room": ["kitchen", "bedroom", "living room", "office"],
}


def _load(path: Path) -> tuple[dict[str, Any], str]:
    """The language model and the key path it was found at (for error messages)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ImportFailed(f"{path}: cannot read: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise ImportFailed(f"{path}: not UTF-8 text; save the file as UTF-8") from err
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise ImportFailed(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from err
    if isinstance(doc, dict) and isinstance(doc.get("interactionModel"), dict):
        model, at = doc["interactionModel"].get("languageModel"), "interactionModel.languageModel"
    elif isinstance(doc, dict) and "languageModel" in doc:
        model, at = doc["languageModel"], "languageModel"
    else:
        model, at = doc, ""
    if not isinstance(model, dict) or not isinstance(model.get("intents"), list):
        raise ImportFailed(
            f"{path}: {at or 'top level'}: no `intents` list; is this an Alexa interaction "
            "model (interactionModel.languageModel.intents)?"
        )
    return model, at


def _builtin_intent(name: str) -> str:
    bare = name.removeprefix("AMAZON.").removesuffix("Intent")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", bare).lower()


def read_alexa(path: Path, *, skill: str | None = None) -> Imported:
    """An Alexa interaction model as one skill (nothing is written)."""
    model, at = _load(path)
    key = f"{at}." if at else ""
    name = slot_name(skill or str(model.get("invocationName") or path.stem).replace(" ", "_"))
    problems: list[str] = []
    notes: list[str] = []
    warnings: list[str] = []
    custom = _custom_types(path, model, key, problems, warnings)
    intents: dict[str, Any] = {}
    needed: dict[str, str] = {}  # our slot type -> Alexa type
    negatives: list[str] = []
    empty: list[str] = []
    for i, intent in enumerate(model["intents"]):
        where = f"{path}: {key}intents[{i}]"
        if not isinstance(intent, dict) or not isinstance(intent.get("name"), str):
            problems.append(f"{where}: an intent needs a `name`")
            continue
        samples = [s for s in intent.get("samples") or [] if isinstance(s, str) and s.strip()]
        slots = [s for s in intent.get("slots") or [] if isinstance(s, dict)]
        for slot in slots:  # what users answer when asked for the slot
            samples += [s for s in slot.get("samples") or [] if isinstance(s, str) and s.strip()]
        if intent["name"] == "AMAZON.FallbackIntent":
            negatives += samples
            continue
        if not samples:
            empty.append(intent["name"])
            continue
        ours = (
            _builtin_intent(intent["name"])
            if intent["name"].startswith("AMAZON.")
            else slot_name(intent["name"])
        )
        if ours != intent["name"]:
            notes.append(f"intent {intent['name']} is named {ours}")
        renamed: dict[str, str] = {}
        slot_types: dict[str, str] = {}
        for k, slot in enumerate(slots):
            if not isinstance(slot.get("name"), str) or not isinstance(slot.get("type"), str):
                problems.append(f"{where}.slots[{k}]: a slot needs a `name` and a `type`")
                continue
            renamed[slot["name"]] = slot_name(slot["name"])
            slot_types[renamed[slot["name"]]] = slot_name(slot["type"])
            needed[slot_name(slot["type"])] = slot["type"]
        utterances = []
        for s in dict.fromkeys(" ".join(x.split()) for x in samples):
            unknown = [p for p in PLACEHOLDER.findall(s) if p not in renamed]
            if unknown:
                problems.append(
                    f"{where}: sample {s!r} uses {{{unknown[0]}}}, not a slot of {intent['name']}"
                )
                continue
            utterances.append(_rename(s, renamed))
        intents[ours] = {"slots": slot_types, "utterances": utterances}
    slot_docs = _slot_types(path, needed, custom, problems, warnings)
    if problems:
        raise ImportFailed("\n".join(problems[:20]), problems)
    if not intents:
        raise ImportFailed(f"{path}: no intents with samples")
    if empty:
        notes.append(
            f"intents without samples not imported (nothing to learn from): {', '.join(empty)}"
        )
    if negatives:
        notes.append(
            f"{len(negatives)} AMAZON.FallbackIntent sample(s) became the skill's negatives"
        )
    return Imported(
        skill=name,
        description=f"Imported from Alexa interaction model {path.name}",
        slots=slot_docs,
        intents=intents,
        negatives=negatives,
        notes=notes,
        warnings=warnings,
    )


def _rename(sample: str, renamed: dict[str, str]) -> str:
    return PLACEHOLDER.sub(lambda m: "{" + renamed[m.group(1)] + "}", sample)


def _custom_types(
    path: Path, model: dict[str, Any], key: str, problems: list[str], warnings: list[str]
) -> dict[str, ValueTable]:
    tables: dict[str, ValueTable] = {}
    for i, t in enumerate(model.get("types") or []):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            problems.append(f"{path}: {key}types[{i}]: a slot type needs a `name`")
            continue
        table = ValueTable(t["name"])
        for k, v in enumerate(t.get("values") or []):
            entry = v.get("name") if isinstance(v, dict) else None
            value = entry.get("value") if isinstance(entry, dict) else None
            if not isinstance(value, str) or not value.strip():
                problems.append(f"{path}: {key}types[{i}].values[{k}]: needs name.value text")
                continue
            synonyms = entry.get("synonyms") or [] if isinstance(entry, dict) else []
            table.add(value, [s for s in synonyms if isinstance(s, str)])
        warnings += table.warnings
        tables[t["name"]] = table
    return tables


def _slot_types(
    path: Path,
    needed: dict[str, str],
    custom: dict[str, ValueTable],
    problems: list[str],
    warnings: list[str],
) -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    open_types: list[str] = []
    for ours, theirs in sorted(needed.items()):
        if theirs in custom and custom[theirs].values:
            docs[ours] = {"values": custom[theirs].doc()}
        elif theirs in KINDS:
            kind, samples = KINDS[theirs]
            docs[ours] = {"kind": kind, "values": samples}
        elif theirs in OPEN_TYPES:
            docs[ours] = {"values": OPEN_TYPES[theirs]}
            open_types.append(theirs)
        elif theirs.startswith("AMAZON."):
            words = re.sub(r"[_.]+", " ", theirs.removeprefix("AMAZON.")).strip().lower()
            docs[ours] = {"values": [words]}
            warnings.append(
                f"{theirs}: nlu knows no sample values for this built-in type; the slot trains "
                f"on the placeholder word {words!r}: add real values under slots.{ours}.values"
            )
        else:
            problems.append(
                f"{path}: slot type {theirs!r} is used by a slot but not defined under `types` "
                "(or it has no values)"
            )
    if open_types:
        warnings.append(
            f"{', '.join(open_types)}: Amazon's value catalogues are not available offline, so "
            "these slots train on a few sample values and are learned from their context; add "
            "the values your users say under the slot type's `values` to widen them"
        )
    return docs
