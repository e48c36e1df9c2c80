"""`nlu import rasa|alexa|dialogflow`: another tool's training data becomes an nlu skill folder.

`read_rasa`, `read_alexa` and `read_dialogflow` read (nothing is written) into an `Imported`;
`write_import` writes `<out>/<skill>/` atomically. `import_rasa` and `import_alexa` (0.1's API)
do both and return the written `skill.yaml`, logging what the import changed and what it could
not keep.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from nlu.data.importers.alexa import read_alexa
from nlu.data.importers.common import Imported, ImportFailed, ValueTable, slot_name, write_import
from nlu.data.importers.dialogflow import read_dialogflow
from nlu.data.importers.rasa import read_rasa
from nlu.data.skills import SKILL_FILE

__all__ = [
    "ImportFailed",
    "Imported",
    "ValueTable",
    "import_alexa",
    "import_rasa",
    "read_alexa",
    "read_dialogflow",
    "read_rasa",
    "slot_name",
    "write_import",
]

logger = logging.getLogger(__name__)


def _written(
    imported: Imported, out: Path, *, force: bool, test_fraction: float | None, seed: int
) -> Path:
    for note in imported.notes:
        logger.info("%s", note)
    for warning in imported.warnings:
        logger.warning("%s", warning)
    folder = write_import(imported, out, force=force, test_fraction=test_fraction, seed=seed)
    return folder / SKILL_FILE


def import_rasa(
    paths: Path | Iterable[Path],
    *,
    skill: str,
    out: Path,
    force: bool = False,
    negative_intents: Iterable[str] = (),
    test_fraction: float | None = None,
    seed: int = 0,
) -> Path:
    """Rasa NLU files or project folders -> `<out>/<skill>/skill.yaml` (returned)."""
    sources = [paths] if isinstance(paths, Path) else list(paths)
    imported = read_rasa(sources, skill=skill, negative_intents=negative_intents)
    return _written(imported, out, force=force, test_fraction=test_fraction, seed=seed)


def import_alexa(
    path: Path,
    *,
    skill: str | None,
    out: Path,
    force: bool = False,
    test_fraction: float | None = None,
    seed: int = 0,
) -> Path:
    """An Alexa interaction model -> `<out>/<skill>/skill.yaml` (returned)."""
    imported = read_alexa(path, skill=skill)
    return _written(imported, out, force=force, test_fraction=test_fraction, seed=seed)
