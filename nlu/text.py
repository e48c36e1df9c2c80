"""What counts as an utterance the model can read: one rule for `Parser.parse`, `nlu predict`
and the server (which adds its own length limit against oversized requests)."""

from __future__ import annotations

# JSON Schema patterns are ECMA-262 regular expressions, whose \s is exactly this set (Python's
# str.isspace also counts the separators \x1c-\x1f): the server's validator uses the schema's
# definition, so a request is valid by the published schema exactly when it is accepted, and the
# Python API refuses the same texts.
ECMA_SPACE = "\t\n\v\f\r \u00a0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff" + "".join(
    chr(c) for c in range(0x2000, 0x200B)
)
# Lone UTF-16 surrogates are legal in JSON strings ("\ud800") but not text: no tokenizer can
# encode them. A valid pair is one character once parsed.
NO_LONE_SURROGATES = r"^(?:[^\ud800-\udfff]|[\ud800-\udbff][\udc00-\udfff])*$"


class TextError(ValueError):
    """A text that is not an utterance (empty, only whitespace, not encodable)."""


def text_problem(text: str) -> str | None:
    """Why `text` is not an utterance the model can read, or None."""
    if not isinstance(text, str):
        return f"is a {type(text).__name__}, not a string"
    if not text.strip(ECMA_SPACE):  # in C: a per-character loop cost more than the check
        return "is empty or only whitespace"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return (
            f"is not valid text: a lone UTF-16 surrogate {text[err.start]!r} at character "
            f"{err.start}; send UTF-8 text (surrogates only as valid pairs)"
        )
    return None
