"""The HTTP API's request and error schemas, and the response schema derived from the one
parse result type (`nlu.result.ParseResult`), so the OpenAPI document cannot drift from what
the handler returns."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictStr,
    TypeAdapter,
    field_validator,
    model_validator,
)

from nlu.result import ParseResult
from nlu.text import NO_LONE_SURROGATES, text_problem

MAX_BATCH = 64  # texts per request
MAX_NBEST = 20  # ASR hypotheses per request
MAX_CHARS = 1000  # characters per text; longer texts are refused (422)
MAX_BODY_BYTES = 1 << 20
# RFC 3339 date-time; seconds and the offset may be left out (a naive local time).
DATE_TIME = re.compile(
    r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d(:\d\d(\.\d+)?)?([Zz]|[+-]\d\d:?\d\d)?\Z", re.ASCII
)


_UTTERANCE: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_CHARS,
    # Not only whitespace, and encodable as UTF-8.
    "allOf": [{"pattern": r"\S"}, {"pattern": NO_LONE_SURROGATES}],
}


def utterance_problem(text: str) -> str | None:
    """Why `text` is not an utterance this server reads, or None: the library's rule
    (`nlu.text`) plus a length limit against oversized requests."""
    problem = text_problem(text)
    if problem is None and len(text) > MAX_CHARS:
        return f"has {len(text)} characters; at most {MAX_CHARS} per utterance: split it up"
    return problem


def _exactly(schema: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """Replace a field's generated JSON schema (keeping title and description)."""

    def replace(generated: dict[str, Any]) -> None:
        kept = {k: generated[k] for k in ("title", "description") if k in generated}
        generated.clear()
        generated.update(schema, **kept)

    return replace


def _zone_names(schema: dict[str, Any]) -> None:
    from nlu.resolve.reference import zone_names

    _without_null(schema)
    schema["enum"] = list(zone_names())


def _locales(schema: dict[str, Any]) -> None:
    from nlu.resolve import LOCALES

    _without_null(schema)
    schema["enum"] = list(LOCALES)


def _without_null(schema: dict[str, Any]) -> None:
    """Drop the `null` branch of an optional field's schema: like `text` and `texts`, the field
    is left out rather than sent as null (the validator refuses null)."""
    branches = [b for b in schema.pop("anyOf", []) if b.get("type") != "null"]
    if branches:
        schema.update(branches[0])


class Hypothesis(BaseModel):
    """One ASR hypothesis of an n-best list."""

    model_config = ConfigDict(extra="forbid")

    text: StrictStr = Field(
        description="The recognised text.", json_schema_extra=_exactly(_UTTERANCE)
    )
    confidence: float = Field(
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="The recogniser's confidence in this hypothesis (normalised over the list).",
    )

    @model_validator(mode="after")
    def readable(self) -> Hypothesis:
        problem = utterance_problem(self.text)
        if problem:
            raise ValueError(f"`text` {problem}")
        return self


class ParseRequest(BaseModel):
    """Send exactly one of `text` or `texts`; `skill` is one of this server's skills."""

    # The published schema states every rule the validator enforces (lengths, one of
    # text/texts, no nulls for them, the skill names), so that a request valid by the schema
    # is never refused and an invalid one never accepted; tests/test_openapi_fuzz.py checks it.

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": ["text"]},
                {"required": ["texts"]},
                {"required": ["hypotheses"]},
            ]
        },
    )

    text: StrictStr | None = Field(
        None, description="One utterance.", json_schema_extra=_exactly(_UTTERANCE)
    )
    texts: list[StrictStr] | None = Field(
        None,
        description=f"Up to {MAX_BATCH} utterances.",
        json_schema_extra=_exactly(
            {"type": "array", "items": _UTTERANCE, "minItems": 1, "maxItems": MAX_BATCH}
        ),
    )
    hypotheses: list[Hypothesis] | None = Field(
        None,
        description=f"An ASR n-best list for one utterance (up to {MAX_NBEST}): one result "
        "that combines the hypotheses' evidence (README: voice input).",
        min_length=1,
        max_length=MAX_NBEST,
        json_schema_extra=_without_null,
    )
    skill: StrictStr | None = Field(None, description="Force this skill instead of routing.")
    top_k: int = Field(5, ge=1, le=50, strict=True, description="Intents and skills to rank.")
    # Strict: "-100" (a string) is not a threshold; an integer is.
    oos_threshold: StrictFloat | None = Field(
        None,
        allow_inf_nan=False,
        description="Out-of-scope threshold for this request instead of the model's: a text "
        "whose out-of-scope score is above it is rejected. For the msp and temperature methods "
        "a number in [0, 1]. Absent when the model has no out-of-scope detector.",
    )

    reference_time: datetime | None = Field(
        None,
        description="ISO 8601 date-time that relative dates and times in slot values are "
        'resolved against ("tomorrow", "in 2 hours"), normally the user\'s "now"; without '
        "an offset, a wall time in `timezone`. Default: the current time.",
    )
    timezone: StrictStr | None = Field(
        None,
        description='The user\'s IANA time zone ("Europe/Berlin"): slot dates and times are '
        "its wall-clock values. Default: the offset of `reference_time`, else the server's "
        "zone (`nlu serve --timezone`, else the machine's).",
        json_schema_extra=_zone_names,
    )
    locale: StrictStr | None = Field(
        None,
        description='The user\'s English locale ("en_US", "en_GB", ...): how "12/11" reads. '
        "Default: none, and such a date is `ambiguous` with both readings as candidates.",
        json_schema_extra=_locales,
    )

    @field_validator("timezone")
    @classmethod
    def known_zone(cls, value: str | None) -> str | None:
        from nlu.resolve import zone_of

        if value is not None:
            zone_of(value, "timezone")  # InvalidReference is a ValueError: a 422 naming it
        return value

    @field_validator("locale")
    @classmethod
    def known_locale(cls, value: str | None) -> str | None:
        from nlu.resolve.reference import check_locale

        return None if value is None else check_locale(value)

    @field_validator("reference_time", mode="before")
    @classmethod
    def date_time_string(cls, value: Any) -> Any:
        # Pydantic would also take a number or a numeric string as Unix time, and a bare date,
        # none of which the schema's date-time allows: only an ISO 8601 date-time string.
        if value is None:
            return value
        if not isinstance(value, str) or not DATE_TIME.match(value):
            raise ValueError(
                'must be an ISO 8601 date-time string such as "2026-11-26T09:00:00+01:00"'
            )
        # RFC 3339 (the schema's date-time) allows a leap second, 23:59:60; Python's datetime
        # does not. A second early changes no date or time of day a slot resolves to.
        return re.sub(r"^(.{10}[Tt ]\d\d:\d\d):60", r"\1:59", value)

    @field_validator("top_k", mode="before")
    @classmethod
    def whole_number(cls, value: Any) -> Any:
        # JSON does not tell 5 from 5.0; JSON Schema counts both as integers. Strings and
        # booleans stay errors (strict field).
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    @model_validator(mode="after")
    def one_of_text_or_texts(self) -> ParseRequest:
        for name in ("text", "texts", "hypotheses"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"`{name}` is null; leave it out or send a value")
        if sum(x is not None for x in (self.text, self.texts, self.hypotheses)) != 1:
            raise ValueError(
                "send exactly one of `text` (a string), `texts` (a list of strings) or "
                "`hypotheses` (an ASR n-best list)"
            )
        if self.hypotheses is not None:
            return self
        items = [self.text] if self.text is not None else (self.texts or [])
        if not items:
            raise ValueError("`texts` is empty; send at least one utterance")
        if len(items) > MAX_BATCH:
            raise ValueError(f"`texts` has {len(items)} items; at most {MAX_BATCH} per request")
        for i, item in enumerate(items):
            problem = utterance_problem(item)
            if problem:
                where = "`text`" if self.text is not None else f"`texts[{i}]`"
                raise ValueError(f"{where} {problem}")
        return self


class ErrorBody(BaseModel):
    error: str = Field(description="What is wrong, and what to send instead.")
    details: list[Any] | None = None


class ParseResults(BaseModel):
    results: list[ParseResult]


def response_components() -> dict[str, Any]:
    """JSON schemas of ParseResult, ParseResults and their parts for `components/schemas`."""
    components: dict[str, Any] = {}
    for name, schema in (
        ("ParseResult", TypeAdapter(ParseResult)),
        ("ParseResults", TypeAdapter(ParseResults)),
    ):
        extra = schema.json_schema(ref_template="#/components/schemas/{model}")
        components.update(extra.pop("$defs", {}))
        components[name] = extra
    return components


def shape_problem(data: Any) -> list[dict[str, Any]] | None:
    """The errors of a body whose shape alone is wrong, found in microseconds, before the
    schema's validation: one error per item of a list 300,000 long would cost seconds and
    megabytes. None when the shape is within bounds (the schema then checks the rest)."""
    if not isinstance(data, dict):
        return None
    unknown = sorted(str(k) for k in data if k not in ParseRequest.model_fields)
    if unknown:
        shown = ", ".join(repr(k[:40]) for k in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        return [{"loc": ("body",), "msg": f"unknown fields {shown}{more}"}]
    for name, limit in (("texts", MAX_BATCH), ("hypotheses", MAX_NBEST)):
        items = data.get(name)
        if isinstance(items, list) and len(items) > limit:
            return [{"loc": ("body", name), "msg": f"at most {limit} items ({len(items)} sent)"}]
    for i, item in enumerate(data.get("hypotheses") or []):
        if isinstance(item, dict) and len(item) > len(Hypothesis.model_fields):
            extra = len(item) - len(Hypothesis.model_fields)
            return [
                {
                    "loc": ("body", "hypotheses", i),
                    "msg": f"{extra} unknown fields; send text and confidence",
                }
            ]
    return None
