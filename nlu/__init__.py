"""nlu: define voice-assistant skills, train one joint intent/slot model, evaluate, serve."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nlu.labels import SkillLabels
from nlu.result import ParseResult
from nlu.schema import DataError, Example, Span

if TYPE_CHECKING:
    from nlu.predict import Parser

__version__ = "0.1.0"


def load(directory: str | Path, backend: str = "auto", threads: int | None = None) -> Parser:
    """A model folder ready to parse. backend: "torch", "onnx", or "auto" (ONNX when the folder
    has model.onnx). Lazy import: torch and transformers are slow to import."""
    from nlu.predict import Parser

    return Parser.from_pretrained(directory, backend=backend, threads=threads)


__all__ = ["DataError", "Example", "ParseResult", "SkillLabels", "Span", "__version__", "load"]
