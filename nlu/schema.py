"""The one example type used everywhere: text plus character-offset spans.

Gold data is text plus character-offset spans; BIO tags are never stored, they are derived
(see `nlu.model.alignment`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml


class DataError(ValueError):
    """A data file or example is malformed; the message says where and what to fix.

    `problems`: every problem found (a reader that checks line by line reports them all, not
    only the first), each `path:line: what`."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


def raise_collected(problems: list[str], *, shown: int = 10) -> None:
    """One DataError for all of `problems` (the first `shown` in its message), if any."""
    if not problems:
        return
    more = len(problems) - shown
    tail = f"\n... and {more} more problem(s); `nlu validate` lists them all" if more > 0 else ""
    raise DataError("\n".join(problems[:shown]) + tail, problems)


@dataclass(frozen=True, order=True)
class Span:
    start: int
    end: int
    slot: str

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "slot": self.slot}


@dataclass(frozen=True)
class Example:
    """A text with its skill, intent and slot spans. An out-of-scope example (something the
    assistant should refuse) has skill and intent None and no slots."""

    text: str
    skill: str | None
    intent: str | None
    slots: tuple[Span, ...] = ()

    def __post_init__(self) -> None:
        problem = _span_problem(self.text, self.slots)
        if problem:
            raise DataError(f"{problem} in example {self.text!r}")
        if self.skill == "" or self.intent == "":
            raise DataError(f"example {self.text!r}: an empty skill or intent name")
        if (self.skill is None) != (self.intent is None) or (self.skill is None and self.slots):
            raise DataError(
                f"example {self.text!r}: an out-of-scope example has skill and intent null and "
                "no slots; an in-scope one has both"
            )
        # Sorted spans make examples comparable and the BIO derivation order-independent.
        object.__setattr__(self, "slots", tuple(sorted(self.slots)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "skill": self.skill,
            "intent": self.intent,
            "slots": [s.to_dict() for s in self.slots],
        }

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> Example:
        return cls(
            text=row["text"],
            skill=row.get("skill"),
            intent=row.get("intent"),
            slots=tuple(
                Span(int(s["start"]), int(s["end"]), str(s["slot"])) for s in row.get("slots") or []
            ),
        )

    @property
    def in_scope(self) -> bool:
        return self.skill is not None

    def value(self, span: Span) -> str:
        return self.text[span.start : span.end]


def _span_problem(text: str, spans: Iterable[Span]) -> str | None:
    if not text.strip():
        return "empty text"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # JSON's "\ud800": not text, and not storable later
        return f"a lone UTF-16 surrogate {text[err.start]!r} at character {err.start}"
    previous: Span | None = None
    for span in sorted(spans):
        if not span.slot:
            return f"span {span} has an empty slot name"
        if not 0 <= span.start < span.end <= len(text):
            return f"span {span.start}:{span.end} ({span.slot}) is outside the text"
        value = text[span.start : span.end]
        if value != value.strip():
            return f"span {span.start}:{span.end} ({span.slot}) starts or ends with whitespace"
        if previous is not None and span.start < previous.end:
            return f"spans {previous.slot} and {span.slot} overlap"
        previous = span
    return None


class NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors' aliases (`*name`): nothing a skill or config file needs, and 750
    bytes of nested aliases expand to gigabytes (a "billion laughs")."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed here; write the value out", mark
            )
        return super().compose_node(parent, index)


def load_yaml_text(text: str) -> Any:
    """`yaml.safe_load` without aliases (NoAliasLoader); YAMLError for bad YAML."""
    return yaml.load(text, Loader=NoAliasLoader)
