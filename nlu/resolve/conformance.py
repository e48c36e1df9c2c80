"""A conformance suite for built-in slot kinds: expressions with the value a slot of each kind
must resolve to at a fixed reference (tests/fixtures/values/conformance.yaml is ours; the
format is documented there). A case is `right`, a `miss` (no value where one was expected)
or `wrong` (a value that is not the expected one: the outcome that must never happen).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml

from nlu.resolve.reference import Reference, make_reference
from nlu.resolve.resolution import KINDS, Resolution

Outcome = Literal["right", "miss", "wrong"]


class SuiteError(ValueError):
    """A suite file that does not follow the format."""


@dataclass(frozen=True)
class Case:
    reference: str  # the name of its reference in the file
    kind: str
    text: str
    expected: str | None  # None: must resolve to no value
    ambiguous: tuple[str, ...] = ()  # expected candidates of an ambiguous span
    source: str = ""


@dataclass(frozen=True)
class Checked:
    case: Case
    got: Resolution
    outcome: Outcome


class _Loader(yaml.SafeLoader):
    """Refuses a key twice in one mapping: a case written twice would count once, silently."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        twice = sorted({str(k) for k in keys if keys.count(k) > 1})
        if twice:
            raise SuiteError(f"line {node.start_mark.line + 1}: keys given twice: {twice}")
        return super().construct_mapping(node, deep=deep)


def load_suite(path: Path) -> tuple[dict[str, Reference], list[Case]]:
    raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    references = {}
    for name, spec in raw["references"].items():
        unknown = set(spec) - {"time", "timezone", "locale"}
        if unknown:
            raise SuiteError(f"{path}: reference {name}: unknown keys {sorted(unknown)}")
        references[name] = make_reference(
            datetime.fromisoformat(spec["time"]), spec.get("timezone"), spec.get("locale")
        )
    cases = []
    for i, group in enumerate(raw["groups"]):
        if group["reference"] not in references or group["kind"] not in KINDS:
            raise SuiteError(f"{path}: group {i}: unknown reference or kind")
        for text, expected in group["cases"].items():
            cases.append(_case(group, str(text), expected, f"{path}: group {i}"))
    return references, cases


def _case(group: dict[str, Any], text: str, expected: Any, where: str) -> Case:
    common = {"reference": group["reference"], "kind": group["kind"], "text": text}
    source = str(group.get("source", ""))
    if isinstance(expected, dict) and set(expected) == {"ambiguous"}:
        return Case(**common, expected=None, ambiguous=tuple(expected["ambiguous"]), source=source)
    if expected is not None and not isinstance(expected, str):
        # YAML reads 19:00 as a number and 2026-12-06 as a date: the file quotes every value.
        raise SuiteError(f"{where}: {text!r}: quote the expected value ({expected!r})")
    return Case(**common, expected=expected, source=source)


def check(
    cases: list[Case],
    references: dict[str, Reference],
    interpret: Callable[[str, str, Reference], Resolution],
) -> list[Checked]:
    checked = []
    for case in cases:
        got = interpret(case.kind, case.text, references[case.reference])
        if case.ambiguous:
            right = got.status == "ambiguous" and got.candidates == case.ambiguous
            outcome: Outcome = "right" if right else "wrong" if got.value is not None else "miss"
        elif got.value == case.expected:
            outcome = "right"
        else:
            outcome = "miss" if got.value is None else "wrong"
        checked.append(Checked(case, got, outcome))
    return checked
