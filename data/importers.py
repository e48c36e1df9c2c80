"""`nlu import rasa|alexa`: turn another tool's training data into an nlu skill folder.

- **Rasa 3** NLU YAML (`nlu.yml`): `intent` examples with `[value](entity)` and
  `[value]{"entity": ..., "value": ...}` annotations become the skill's utterances (kept
  literal); entity types become slot types whose values are the annotated values, the
  `lookup` tables and the `synonym` entries (a synonym maps to its value). Roles and groups are
  dropped (with a warning); `regex` entries cannot be expressed and are reported.
- **Alexa** interaction model JSON: intents with their samples (`{slot}` placeholders, as
  nlu's templates), custom slot types with values and synonyms; the built-in types
  `AMAZON.NUMBER`, `AMAZON.DURATION`, `AMAZON.TIME` and `AMAZON.DATE` become nlu's built-in
  kinds with a few sample values for the templates. Other built-in types have no values here:
  an error names them. Built-in intents without samples (AMAZON.StopIntent, ...) are skipped.

Both write `<out>/<skill>/skill.yaml` and read it back with nlu's own parser, so an import that
succeeds trains.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from nlu.data.skills import SKILL_FILE, parse_skill_file
from nlu.schema import DataError

logger = logging.getLogger(__name__)

# Rasa: [text](entity) or [text]{"entity": ..., "value": ..., "role": ...}
RASA_ANNOTATION = re.compile(r"\[(?P<text>[^\]]+)\](?:\((?P<short>[^)]+)\)|(?P<json>\{[^}]*\}))")

# Alexa built-in slot types nlu can resolve (kind) and sample values for template filling.
ALEXA_KINDS = {
    "AMAZON.NUMBER": ("number", ["one", "2", "ten", "twenty five"]),
    "AMAZON.DURATION": ("duration", ["five minutes", "an hour", "ten seconds"]),
    "AMAZON.TIME": ("time", ["7 am", "noon", "6:30 pm"]),
    "AMAZON.DATE": ("date", ["today", "tomorrow", "friday", "june fifth"]),
}
_NAME = re.compile(r"[^A-Za-z0-9_]+")


class ImportFailed(DataError):
    """An input file that cannot be imported; the message says what to change."""


def slot_name(name: str) -> str:
    """An nlu name (letters, digits, _; starting with a letter) for another tool's name."""
    cleaned = _NAME.sub("_", name).strip("_")
    return cleaned if cleaned[:1].isalpha() else f"x_{cleaned}"


def write_skill(out: Path, doc: dict[str, Any], *, force: bool = False) -> Path:
    folder = out / doc["skill"]
    target = folder / SKILL_FILE
    if target.exists() and not force:
        raise ImportFailed(f"{target} exists; pass --force to replace it or choose another --out")
    folder.mkdir(parents=True, exist_ok=True)
    target.write_text(
        "# Imported by `nlu import`; edit freely.\n"
        + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
    )
    parse_skill_file(target)  # what nlu will read: fails here, not at training
    return target


# -- Rasa ------------------------------------------------------------------------------------------


def import_rasa(path: Path, *, skill: str, out: Path, force: bool = False) -> Path:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ImportFailed(f"{path}: not readable Rasa YAML ({err})") from err
    items = doc.get("nlu") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ImportFailed(f"{path}: no `nlu:` list; is this Rasa 3 NLU training data?")
    intents: dict[str, list[str]] = defaultdict(list)
    intent_slots: dict[str, set[str]] = defaultdict(set)
    values: dict[str, set[str]] = defaultdict(set)  # entity -> its values
    synonyms: dict[str, set[str]] = defaultdict(set)  # value -> other surface forms (global)
    problems: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append(f"{path}: nlu[{i}] is not a mapping")
            continue
        examples = _rasa_examples(item.get("examples"))
        if "intent" in item:
            intent = slot_name(str(item["intent"]))
            for example in examples:
                try:
                    text, used = _rasa_utterance(example, values, synonyms)
                except ImportFailed as err:
                    problems.append(f"{path}: intent {item['intent']}: {err}")
                    continue
                intents[intent].append(text)
                intent_slots[intent].update(used)
        elif "synonym" in item:
            synonyms[str(item["synonym"])].update(examples)
        elif "lookup" in item:
            values[slot_name(str(item["lookup"]))].update(examples)
        elif "regex" in item:
            logger.warning(
                "%s: regex %r cannot be imported (nlu learns slots)", path, item["regex"]
            )
        else:
            problems.append(f"{path}: nlu[{i}] has none of intent, synonym, lookup, regex")
    if problems:
        raise ImportFailed("\n".join(problems))
    if not intents:
        raise ImportFailed(f"{path}: no intents with examples")
    annotated = {s for used in intent_slots.values() for s in used}
    slots: dict[str, Any] = {}
    for entity in sorted(values):
        if entity not in annotated:
            logger.warning("%s: lookup table %r names no annotated entity; skipped", path, entity)
            continue
        forms_of_others = {f for v, fs in synonyms.items() if v in values[entity] for f in fs}
        listed: list[Any] = []
        for value in sorted(values[entity] - forms_of_others):
            others = sorted(synonyms.get(value, set()) - {value})
            listed.append({"value": value, "synonyms": others} if others else value)
        slots[entity] = {"values": listed}
    doc = {
        "skill": slot_name(skill),
        "description": f"Imported from Rasa data {path.name}.",
        "slots": slots,
        "intents": {
            name: {"slots": sorted(intent_slots[name]), "utterances": texts}
            for name, texts in intents.items()
        },
    }
    return write_skill(out, doc, force=force)


def _rasa_examples(block: Any) -> list[str]:
    if isinstance(block, list):
        return [str(x).strip() for x in block if str(x).strip()]
    if not isinstance(block, str):
        return []
    lines = [line.strip() for line in block.splitlines()]
    return [line[2:].strip() for line in lines if line.startswith("- ") and line[2:].strip()]


def _rasa_utterance(
    example: str, values: dict[str, set[str]], synonyms: dict[str, set[str]]
) -> tuple[str, set[str]]:
    """A Rasa example -> an nlu utterance with literal [text](slot) annotations."""
    used: set[str] = set()

    def convert(m: re.Match[str]) -> str:
        text = m.group("text").strip()
        if m.group("short"):
            entity, value = m.group("short"), text
            if ":" in entity:  # Rasa 1 shorthand [text](entity:value)
                entity, value = entity.split(":", 1)
        else:
            try:
                spec = json.loads(m.group("json"))
            except json.JSONDecodeError as err:
                raise ImportFailed(f"bad entity annotation {m.group(0)!r}: {err.msg}") from err
            if not isinstance(spec, dict) or "entity" not in spec:
                raise ImportFailed(f'annotation {m.group(0)!r} has no "entity"')
            entity, value = str(spec["entity"]), str(spec.get("value", text))
            if "role" in spec or "group" in spec:
                logger.warning("entity roles/groups are not imported: %s", m.group(0))
        slot = slot_name(entity.strip())
        used.add(slot)
        values[slot].add(value)
        if value != text:
            synonyms[value].add(text)
        return f"[{text}]({slot})"

    converted = RASA_ANNOTATION.sub(convert, example)
    # nlu reads `{`/`}` as placeholders: an unannotated brace would be misread.
    if re.search(r"[{}\[\]]", RASA_ANNOTATION.sub("", example)):
        raise ImportFailed(f"stray brackets or braces in {example!r}")
    return converted, used


# -- Alexa -----------------------------------------------------------------------------------------


def import_alexa(path: Path, *, skill: str | None, out: Path, force: bool = False) -> Path:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        model = doc["interactionModel"]["languageModel"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ImportFailed(
            f"{path}: not an Alexa interaction model (interactionModel.languageModel): {err}"
        ) from err
    name = slot_name(skill or str(model.get("invocationName", "")).replace(" ", "_") or "alexa")
    types: dict[str, Any] = {}
    for t in model.get("types", []):
        listed: list[Any] = []
        for v in t.get("values", []):
            value = v.get("name", {}).get("value")
            synonyms = v.get("name", {}).get("synonyms") or []
            if value:
                listed.append({"value": value, "synonyms": synonyms} if synonyms else value)
        types[t["name"]] = {"values": listed}
    intents: dict[str, Any] = {}
    needed: dict[str, str] = {}
    for intent in model.get("intents", []):
        samples = intent.get("samples") or []
        if not samples:
            logger.info("%s: intent %s has no samples; skipped", path, intent.get("name"))
            continue
        slots = {slot_name(s["name"]): s["type"] for s in intent.get("slots", [])}
        renamed = {s["name"]: slot_name(s["name"]) for s in intent.get("slots", [])}
        utterances = [_rename_placeholders(x, renamed) for x in samples]
        intents[slot_name(intent["name"])] = {
            "slots": {n: slot_name(t) for n, t in slots.items()},
            "utterances": utterances,
        }
        needed.update({slot_name(t): t for t in slots.values()})
    if not intents:
        raise ImportFailed(f"{path}: no intents with samples")
    slot_types: dict[str, Any] = {}
    missing = []
    for ours, theirs in sorted(needed.items()):
        if theirs in types:
            slot_types[ours] = types[theirs]
        elif theirs in ALEXA_KINDS:
            kind, samples = ALEXA_KINDS[theirs]
            slot_types[ours] = {"kind": kind, "values": samples}
        else:
            missing.append(theirs)
    if missing:
        raise ImportFailed(
            f"{path}: slot type(s) {', '.join(missing)} are built into Alexa and have no values "
            "here; add them as custom types with values to the model (or edit the skill file)"
        )
    doc_out = {
        "skill": name,
        "description": f"Imported from Alexa interaction model {path.name}.",
        "slots": slot_types,
        "intents": intents,
    }
    return write_skill(out, doc_out, force=force)


def _rename_placeholders(sample: str, renamed: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: "{" + renamed.get(m.group(1), m.group(1)) + "}", sample)
