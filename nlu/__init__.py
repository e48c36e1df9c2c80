"""nlu: define voice-assistant skills, train one joint intent/slot model, evaluate, serve.

The package is organised in rooms, each importing only from the ones listed before it
(docs/design/architecture.md; tests/test_layers.py checks it):

- vocabulary (this folder): `schema`, `text`, `resolve`, `labels`, `result`, `config`
- `nlu.data`: reading skills, JSONL and benchmark folders; importers; validation
- `nlu.model`: the joint model, sharing, adapters, out-of-scope detector, the model folder, export
- `nlu.inference`: the parser (decode, n-best)
- `nlu.evaluation`: scores and reports; `nlu.serve`: the HTTP server
- `nlu.training`: the engine and the train, finetune, add-skill, calibrate and benchmark recipes
- `nlu.distill`, `nlu.federated`: recipes built on the training engine
- `nlu.cli`: the command line
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from nlu import _aliases
from nlu.labels import SkillLabels
from nlu.result import ParseResult
from nlu.schema import DataError, Example, Span

if TYPE_CHECKING:
    from nlu.inference.parser import Parser

__version__ = "0.2.0"

_aliases.install()


def load(directory: str | Path, backend: str = "auto", threads: int | None = None) -> Parser:
    """A model folder (or a run folder holding one) ready to parse. backend: "torch", "onnx",
    or "auto" (ONNX when the folder has model.onnx). The one public way to load a model:
    `Parser.from_pretrained` is the same door."""
    from nlu.inference.parser import Parser

    return Parser.from_pretrained(directory, backend=backend, threads=threads)


def __getattr__(name: str) -> Any:
    # `from nlu import Parser` without importing torch for every `import nlu`.
    if name == "Parser":
        from nlu.inference.parser import Parser

        return Parser
    raise AttributeError(f"module 'nlu' has no attribute {name!r}")


__all__ = [
    "DataError",
    "Example",
    "ParseResult",
    "Parser",
    "SkillLabels",
    "Span",
    "__version__",
    "load",
]
