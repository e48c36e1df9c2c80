"""nlu: define voice-assistant skills, train one joint intent/slot model, evaluate, serve."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nlu.labels import SkillLabels
from nlu.schema import DataError, Example, Span

if TYPE_CHECKING:
    from nlu.predict import Parser

__version__ = "0.1.0"


def load(directory: str | Path) -> Parser:
    """Load a trained model directory (lazy import: torch and transformers are slow to import)."""
    from nlu.predict import Parser

    return Parser.from_pretrained(directory)


__all__ = ["DataError", "Example", "SkillLabels", "Span", "__version__", "load"]
