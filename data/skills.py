"""Skill folders: `skills/<name>/skill.yaml` (+ optional hand-written `tests.yaml`).

A skill file declares intents (description, slots used, sample utterances with `{slot}`
placeholders and `[text](slot)` annotations) and slot types (values with synonyms, an optional
built-in kind), in the spirit of the Alexa Skills Kit interaction model and Rasa's training data
(docs/guide/skills-and-data.md has an example). Templates are expanded deterministically
(seeded). Any problem raises `DataError` naming the file, the line and what is wrong.
"""

from __future__ import annotations

import logging
import random
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nlu.labels import SkillLabels
from nlu.resolve import KINDS, normalise
from nlu.schema import DataError, Example, NoAliasLoader, Span, raise_collected

logger = logging.getLogger(__name__)

SKILL_FILE = "skill.yaml"
TESTS_FILE = "tests.yaml"
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# `{slot}` placeholder or `[literal text](slot)` annotation.
MARKUP = re.compile(
    r"\{(?P<placeholder>[^{}\[\]()]*)\}|\[(?P<literal>[^\[\]]*)\]\((?P<slot>[^()]*)\)"
)
STRAY = re.compile(r"[{}\[\]]")


# -- YAML with line numbers --------------------------------------------------------------------


class _TextLoader(NoAliasLoader):
    """Every scalar is text: `6:30` stays "6:30" (YAML 1.1 would read it as the number 390)
    and `no` stays "no" instead of False. No aliases (NoAliasLoader)."""


_TextLoader.yaml_implicit_resolvers = {}


def load_yaml(path: Path) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """Parse YAML and remember the line (1-based) of every mapping value and list item."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte {data[err.start]:#04x}); save the file as UTF-8"
        ) from err
    try:
        node = yaml.compose(text, Loader=_TextLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(err, "problem", None) or str(err)
        hint = ' (quote utterances that start with { or [, e.g. - "{time} works")'
        hint = "" if "aliases" in str(problem) else hint
        raise DataError(f"{path}:{line}: invalid YAML: {problem}{hint}") from err
    if node is None:
        raise DataError(f"{path}: file is empty")
    lines: dict[tuple[Any, ...], int] = {}

    def walk(n: yaml.Node, at: tuple[Any, ...]) -> None:
        lines[at] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key, value in n.value:
                # A repeated key would silently replace the first one and its contents.
                if key.value in seen:
                    where = ".".join(str(p) for p in (*at, key.value))
                    raise DataError(
                        f"{path}:{key.start_mark.line + 1}: duplicate key {where!r} (first on "
                        f"line {seen[key.value]}); merge the two or rename one"
                    )
                seen[key.value] = key.start_mark.line + 1
                walk(value, (*at, key.value))
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, (*at, i))

    walk(node, ())
    return yaml.load(text, Loader=_TextLoader), lines


@dataclass
class _Where:
    path: Path
    lines: dict[tuple[Any, ...], int]

    def error(self, at: tuple[Any, ...], message: str) -> DataError:
        line = None
        probe = at
        while line is None and probe:
            line = self.lines.get(probe)
            probe = probe[:-1]
        where = ".".join(str(p) for p in at) or "top level"
        return DataError(f"{self.path}:{line or 1}: {where}: {message}")

    def warn(self, at: tuple[Any, ...], message: str) -> None:
        logger.warning("%s", self.error(at, message))


# -- skill files ---------------------------------------------------------------------------------


@dataclass
class Template:
    text: str
    at: tuple[Any, ...]


@dataclass
class IntentSpec:
    name: str
    description: str
    slots: dict[str, str]  # slot name -> slot type
    templates: list[Template]


@dataclass
class SkillSpec:
    name: str
    description: str
    slot_values: dict[str, list[str]]  # slot type -> surface forms (values and synonyms)
    intents: list[IntentSpec]
    path: Path
    # slot type -> normalised surface form -> the value it stands for (nlu.resolve)
    canonical: dict[str, dict[str, str]] = field(default_factory=dict)
    slot_kinds: dict[str, str] = field(default_factory=dict)  # slot type -> built-in kind

    @property
    def labels(self) -> SkillLabels:
        types = {slot: t for i in self.intents for slot, t in i.slots.items()}
        return SkillLabels(
            name=self.name,
            description=self.description,
            intents=sorted(i.name for i in self.intents),
            slots=sorted(types),
            intent_slots={i.name: sorted(i.slots) for i in self.intents},
            slot_values={s: self.canonical[t] for s, t in types.items() if t in self.canonical},
            slot_kinds={s: self.slot_kinds[t] for s, t in types.items() if t in self.slot_kinds},
        )


def _mapping(where: _Where, at: tuple[Any, ...], value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise where.error(at, f"{what} must be a mapping, got {type(value).__name__}")
    return value


def _check_keys(
    where: _Where, at: tuple[Any, ...], value: dict[str, Any], allowed: set[str]
) -> None:
    unknown = sorted(set(map(str, value)) - allowed)
    if unknown:
        raise where.error(
            at, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def _name(where: _Where, at: tuple[Any, ...], name: Any, what: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise where.error(
            at, f"{what} name {name!r} must start with a letter and use only letters, digits, _"
        )
    return name


def parse_skill_file(path: Path) -> SkillSpec:
    doc, lines = load_yaml(path)
    where = _Where(path, lines)
    doc = _mapping(where, (), doc, "a skill file")
    _check_keys(where, (), doc, {"skill", "description", "slots", "intents"})
    if "skill" not in doc:
        raise where.error((), "missing `skill: <name>`")
    name = _name(where, ("skill",), doc["skill"], "skill")
    if name != path.parent.name:
        raise where.error(
            ("skill",), f"skill {name!r} must match its folder name {path.parent.name!r}"
        )
    slot_values: dict[str, list[str]] = {}
    slot_kinds: dict[str, str] = {}
    resolved_forms: dict[str, dict[str, str]] = {}
    for slot_type, spec in _mapping(where, ("slots",), doc.get("slots") or {}, "slots").items():
        at: tuple[Any, ...] = ("slots", slot_type)
        _name(where, at, slot_type, "slot type")
        spec = _mapping(where, at, spec, f"slot type {slot_type}")
        _check_keys(where, at, spec, {"description", "values", "kind"})
        kind = spec.get("kind")
        if kind is not None and kind not in KINDS:
            raise where.error(
                (*at, "kind"),
                f"unknown kind {kind!r}; a built-in kind is one of {', '.join(KINDS)}",
            )
        if kind is not None:
            slot_kinds[slot_type] = kind
        forms, owner = _slot_values(where, at, spec.get("values"))
        slot_values[slot_type] = forms
        resolved_forms[slot_type] = {normalise(k): v for k, v in owner.items()}

    intents_doc = _mapping(where, ("intents",), doc.get("intents"), "intents")
    if not intents_doc:
        raise where.error(("intents",), "declare at least one intent")
    intents = [_intent(where, intent, spec, slot_values) for intent, spec in intents_doc.items()]
    return SkillSpec(
        name,
        str(doc.get("description", "")),
        slot_values,
        intents,
        path,
        canonical=resolved_forms,
        slot_kinds=slot_kinds,
    )


def _slot_values(
    where: _Where, at: tuple[Any, ...], values: Any
) -> tuple[list[str], dict[str, str]]:
    """A slot type's surface forms (values and synonyms) and, case-folded, the value each
    stands for."""
    if not isinstance(values, list) or not values:
        raise where.error(at, "needs a non-empty list `values`")
    forms: list[str] = []
    owner: dict[str, str] = {}  # case-folded surface form -> the value it stands for
    for i, value in enumerate(values):
        if isinstance(value, dict):
            _check_keys(where, (*at, "values", i), value, {"value", "synonyms"})
            synonyms = value.get("synonyms") or []
            if not isinstance(synonyms, list):
                raise where.error((*at, "values", i), "synonyms must be a list")
            candidates = [value.get("value"), *synonyms]
        else:
            candidates = [value]
        for form in candidates:
            if not isinstance(form, str) or not form.strip():
                raise where.error((*at, "values", i), f"slot value {form!r} must be non-empty text")
            if STRAY.search(str(form)):
                raise where.error((*at, "values", i), f"slot value {form!r} contains {{}}[] markup")
            form, canonical = form.strip(), str(candidates[0]).strip()
            known = owner.get(form.casefold())
            if known is not None and known.casefold() != canonical.casefold():
                raise where.error(
                    (*at, "values", i),
                    f"{form!r} stands for both {known!r} and {canonical!r}; a surface form "
                    "can resolve to one value only",
                )
            if known is not None:
                where.warn((*at, "values", i), f"slot value {form!r} is listed twice")
                continue
            owner[form.casefold()] = canonical
            forms.append(form)
    return forms, owner


def _intent(where: _Where, intent: Any, spec: Any, slot_values: dict[str, list[str]]) -> IntentSpec:
    """One intent: its slots (each of a declared type) and templates (each placeholder or
    annotation naming one of its slots)."""
    at = ("intents", intent)
    _name(where, at, intent, "intent")
    spec = _mapping(where, at, spec, f"intent {intent}")
    _check_keys(where, at, spec, {"description", "slots", "utterances"})
    declared = spec.get("slots") or []
    if isinstance(declared, list):
        slot_map = {str(s): str(s) for s in declared}
    elif isinstance(declared, dict):
        slot_map = {str(k): str(v) for k, v in declared.items()}
    else:
        raise where.error(
            (*at, "slots"), "slots must be a list of slot types or a mapping name -> type"
        )
    for slot_name, slot_type in slot_map.items():
        _name(where, (*at, "slots"), slot_name, "slot")
        if slot_type not in slot_values:
            raise where.error(
                (*at, "slots"),
                f"slot {slot_name!r} has type {slot_type!r}, "
                "which is not declared under `slots:`"
                f" (declared: {', '.join(sorted(slot_values)) or 'none'})",
            )
    utterances = spec.get("utterances")
    if not isinstance(utterances, list) or not utterances:
        raise where.error(at, "needs a non-empty list `utterances`")
    templates = []
    for i, text in enumerate(utterances):
        t_at = (*at, "utterances", i)
        if not isinstance(text, str) or not text.strip():
            raise where.error(t_at, f"utterance {text!r} must be non-empty text")
        for kind, slot, _ in _markup(text, where, t_at):
            if slot not in slot_map:
                raise where.error(
                    t_at,
                    f"{kind} uses slot {slot!r}, which intent {intent!r} does not declare "
                    f"(declared: {', '.join(slot_map) or 'none'})",
                )
        templates.append(Template(text, t_at))
    return IntentSpec(intent, str(spec.get("description", "")), slot_map, templates)


def _markup(
    text: str, where: _Where, at: tuple[Any, ...]
) -> Iterator[tuple[str, str, re.Match[str]]]:
    """Yield (kind, slot, match) for each placeholder/annotation; reject malformed markup."""
    last = 0
    for m in MARKUP.finditer(text):
        if STRAY.search(text[last : m.start()]):
            raise where.error(at, f"malformed markup in {text!r}: use {{slot}} or [text](slot)")
        last = m.end()
        if m.group("placeholder") is not None:
            yield "placeholder", m.group("placeholder").strip(), m
        else:
            literal = m.group("literal")
            if not literal.strip() or literal != literal.strip():
                raise where.error(
                    at, f"annotated text [{literal}] must be non-empty with no outer spaces"
                )
            yield "annotation", m.group("slot").strip(), m
    if STRAY.search(text[last:]):
        raise where.error(at, f"malformed markup in {text!r}: use {{slot}} or [text](slot)")


def parse_annotated(text: str) -> tuple[str, list[Span]]:
    """`[text](slot)` markup, as in tests.yaml, to plain text and character spans (JSONL rows
    may use it instead of offsets). DataError says what is malformed."""
    where = _Where(Path("text"), {})
    try:
        for kind, _, _ in _markup(text, where, ()):
            if kind == "placeholder":
                raise DataError(f"{{placeholder}} in {text!r}: annotate slots as [text](slot)")
    except DataError as err:
        raise DataError(str(err).removeprefix("text:1: top level: ")) from None
    return _render(text, {})


def _render(text: str, fill: dict[str, str]) -> tuple[str, list[Span]]:
    """Replace markup by surface text, recording the character span of every slot."""
    out: list[str] = []
    spans: list[Span] = []
    length = 0
    last = 0
    for m in MARKUP.finditer(text):
        out.append(text[last : m.start()])
        length += m.start() - last
        if m.group("placeholder") is not None:
            slot = m.group("placeholder").strip()
            value = fill[slot]
        else:
            slot, value = m.group("slot").strip(), m.group("literal")
        spans.append(Span(length, length + len(value), slot))
        out.append(value)
        length += len(value)
        last = m.end()
    out.append(text[last:])
    rendered = "".join(out)
    # Collapse runs of whitespace so templates may be written loosely; shift spans to match.
    return _normalise_spaces(rendered, spans)


def _normalise_spaces(text: str, spans: list[Span]) -> tuple[str, list[Span]]:
    keep = [
        i
        for i, ch in enumerate(text)
        if not (ch.isspace() and (i == 0 or text[i - 1].isspace() or i == len(text) - 1))
    ]
    new_pos = {old: new for new, old in enumerate(keep)}
    out = "".join(" " if text[i].isspace() else text[i] for i in keep).strip()
    shift = len(out) - len(out.lstrip())
    moved = [Span(new_pos[s.start] - shift, new_pos[s.end - 1] + 1 - shift, s.slot) for s in spans]
    return out, moved


def expand_skill(spec: SkillSpec, *, samples_per_template: int, seed: int) -> list[Example]:
    """Deterministic expansion: same file, seed and sample count -> same examples, same order."""
    examples: list[Example] = []
    seen: dict[str, str] = {}  # lower-cased text -> the intent it was generated for
    for intent in spec.intents:
        for template in intent.templates:
            where = _Where(spec.path, {})
            placeholders = [
                s
                for kind, s, _ in _markup(template.text, where, template.at)
                if kind == "placeholder"
            ]
            key = f"{seed}:{spec.name}:{intent.name}:{template.text}".encode()
            rng = random.Random(zlib.crc32(key))
            wanted = 1 if not placeholders else samples_per_template
            for _ in range(wanted * 4):  # small templates run out of distinct fillings
                if wanted == 0:
                    break
                fill = {s: rng.choice(spec.slot_values[intent.slots[s]]) for s in placeholders}
                text, spans = _render(template.text, fill)
                owner = seen.get(text.lower())
                if owner is not None:
                    if owner != intent.name and not placeholders:
                        _Where(spec.path, {}).warn(
                            template.at,
                            f"{text!r} is also an utterance of intent {owner!r}; it is kept "
                            f"there and dropped here: a text can mean one intent, keep one",
                        )
                    continue
                seen[text.lower()] = intent.name
                examples.append(Example(text, spec.name, intent.name, tuple(spans)))
                wanted -= 1
    return examples


def parse_tests_file(path: Path, spec: SkillSpec) -> list[Example]:
    """Hand-written test utterances: `intent: [utterances with [text](slot) annotations]`."""
    doc, lines = load_yaml(path)
    where = _Where(path, lines)
    doc = _mapping(where, (), doc, "a tests file")
    known = {i.name: i for i in spec.intents}
    examples = []
    problems: list[str] = []  # every bad utterance, not only the first
    for intent, utterances in doc.items():
        if intent not in known:
            problems.append(
                str(
                    where.error(
                        (intent,),
                        f"unknown intent {intent!r}; skill {spec.name} has {', '.join(known)}",
                    )
                )
            )
            continue
        if not isinstance(utterances, list):
            problems.append(str(where.error((intent,), "must be a list of utterances")))
            continue
        for i, text in enumerate(utterances):
            try:
                examples.append(_test_example(text, spec, known[intent], where, (intent, i)))
            except DataError as err:
                problems.append(str(err))
    raise_collected(problems)
    return examples


def _test_example(
    text: Any, spec: SkillSpec, intent: IntentSpec, where: _Where, at: tuple[Any, ...]
) -> Example:
    if not isinstance(text, str) or not text.strip():
        raise where.error(at, f"utterance {text!r} must be non-empty text")
    for kind, slot, _ in _markup(text, where, at):
        if kind == "placeholder":
            raise where.error(at, "test utterances are literal: annotate slots as [text](slot)")
        if slot not in intent.slots:
            raise where.error(at, f"slot {slot!r} is not declared by intent {intent.name!r}")
    rendered, spans = _render(text, {})
    try:
        return Example(rendered, spec.name, intent.name, tuple(spans))
    except DataError as err:
        raise where.error(at, str(err)) from err


OUT_OF_SCOPE_FILE = "out_of_scope.yaml"


def parse_out_of_scope_file(path: Path) -> dict[str, list[str]]:
    """`out_of_scope.yaml` beside the skill folders: `train:` and `test:` lists of texts that
    no skill handles (the assistant should refuse them)."""
    doc, lines = load_yaml(path)
    where = _Where(path, lines)
    doc = _mapping(where, (), doc, "an out-of-scope file")
    unknown = sorted(set(doc) - {"train", "test"})
    if unknown:
        raise where.error((unknown[0],), "unknown key; an out-of-scope file has train and test")
    out: dict[str, list[str]] = {}
    for key in ("train", "test"):
        texts = doc.get(key, [])
        if not isinstance(texts, list):
            raise where.error((key,), "must be a list of utterances")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip() or STRAY.search(text):
                raise where.error((key, i), f"{text!r} must be plain non-empty text")
        out[key] = [" ".join(t.split()) for t in texts]
    return out


def find_skill_dirs(path: Path) -> list[Path]:
    """A skill folder itself, or a folder whose sub-folders are skills."""
    if (path / SKILL_FILE).is_file():
        return [path]
    found = sorted(p.parent for p in path.glob(f"*/{SKILL_FILE}"))
    if not found:
        raise DataError(f"{path}: no {SKILL_FILE} here or in its sub-folders")
    return found
