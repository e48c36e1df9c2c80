"""Reading a /parse body as the route would, and the JSON error answers of the server: bounded
whatever was sent (error count, location and message lengths, the shape checked first)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from nlu.serve.schemas import ParseRequest, shape_problem

MAX_ERRORS = 10  # validation errors listed in one answer
# The most lists and objects, and object members, a /parse body can need (an n-best list of 20
# hypotheses: 22 containers and 45 members); a body that has more is refused before parsing.
MAX_CONTAINERS = 64
MAX_MEMBERS = 128
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')


def skeleton_problem(body: bytes) -> JSONResponse | None:
    """A 422 for a body with more lists, objects or members than any request needs, found by
    counting them outside strings (2 ms a MiB): parsing 340,000 empty lists alone takes
    100 ms, and validating them seconds."""
    if body.count(b":") <= MAX_MEMBERS and body.count(b"[") + body.count(b"{") <= MAX_CONTAINERS:
        return None  # every request of a sane size: no need to look past the strings
    skeleton = _STRINGS.sub(b"", body)
    containers = skeleton.count(b"[") + skeleton.count(b"{")
    members = skeleton.count(b":")
    if containers <= MAX_CONTAINERS and members <= MAX_MEMBERS:
        return None
    return invalid(
        [
            {
                "loc": ("body",),
                "msg": f"{containers} lists and objects with {members} members; a /parse "
                f"request has at most {MAX_CONTAINERS} and {MAX_MEMBERS}",
            }
        ]
    )


def json_error(
    status: int, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if details is not None:
        body["details"] = details
    return JSONResponse(status_code=status, content=body, headers=headers)


def read_request(body: bytes) -> ParseRequest | Response:
    """A /parse body as the route would read it: JSON (orjson, and the standard library for
    what orjson refuses, as FastAPI reads it: NaN, lone surrogates, huge numbers), then the
    request schema; an error worded as the route's exception handlers word it."""
    if not body:
        return invalid([{"loc": ("body",), "msg": "Field required"}])
    too_big = skeleton_problem(body)
    if too_big is not None:
        return too_big
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            # UTF-8 only (RFC 8259): the standard library would also read UTF-16 and UTF-32.
            data = json.loads(body.decode("utf-8"))
        except json.JSONDecodeError as err:
            return invalid([{"loc": ("body", err.pos), "msg": "JSON decode error"}])
        except UnicodeDecodeError as err:
            return json_error(400, f"the body is not UTF-8 (byte {err.start}); send UTF-8 JSON")
    problem = shape_problem(data)
    if problem:
        return invalid(problem)
    try:
        # from_attributes, as FastAPI validates bodies: a non-object body is worded the same.
        return ParseRequest.model_validate(data, from_attributes=True)
    except ValidationError as err:
        return invalid([{**e, "loc": ("body", *e["loc"])} for e in err.errors()])


def invalid(errors: Sequence[Mapping[str, Any]]) -> JSONResponse:
    """422 with the details of each error (also the route's exception handler)."""
    # Bounded whatever was sent: at most MAX_ERRORS errors, each location part and message cut.
    details = [
        {"loc": [str(p)[:64] for p in e.get("loc", ())], "msg": str(e.get("msg", ""))[:300]}
        for e in errors[:MAX_ERRORS]
    ]
    more = f"; and {len(errors) - MAX_ERRORS} more" if len(errors) > MAX_ERRORS else ""
    return json_error(422, "invalid request: " + "; ".join(map(_said, details)) + more, details)


def _said(detail: Mapping[str, Any]) -> str:
    """One error as the message says it: the field first ("timezone: ..."), once."""
    message = str(detail["msg"]).removeprefix("Value error, ")
    field = ".".join(p for p in detail["loc"][1:] if not p.isdigit())
    return message if not field or message.startswith(f"{field}") else f"{field}: {message}"
