"""The rooms of `nlu` import only downwards: a module never imports one of a higher layer
(docs/design/architecture.md). Every import counts, also those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import ROOT

# Lowest first. A module may import its own layer and the ones below it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "vocabulary",
        (
            "nlu.console",
            "nlu.schema",
            "nlu.text",
            "nlu.resolve",
            "nlu.labels",
            "nlu.result",
        ),
    ),
    # The old import paths (nlu._aliases) include the config loaders of 0.1.
    ("config", ("nlu.config", "nlu._aliases")),
    ("data", ("nlu.data",)),
    ("model", ("nlu.model",)),
    ("inference", ("nlu.inference",)),
    ("evaluation and serving", ("nlu.evaluation", "nlu.serve")),
    ("training engine and recipes", ("nlu.training",)),
    ("recipes on the engine", ("nlu.distill", "nlu.federated")),
    ("entry points", ("nlu.cli", "nlu")),
]


def layer_of(module: str) -> int:
    best, depth = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = i, len(prefix)
    if best < 0:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")
    return best


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] in ("data", "serve"):
        parts = ["nlu", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path, name: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            # `from nlu.model import modeldir` imports the submodule nlu.model.modeldir.
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return [(line, m) for line, m in found if m == "nlu" or m.startswith("nlu.")]


def sources() -> list[Path]:
    files = [*ROOT.glob("nlu/**/*.py"), *ROOT.glob("data/*.py"), *ROOT.glob("serve/*.py")]
    # nlu/data and nlu/serve are links to data/ and serve/: count each file once.
    return sorted(
        f for f in files if f.relative_to(ROOT).parts[:2] not in (("nlu", "data"), ("nlu", "serve"))
    )


def test_imports_only_go_down() -> None:
    upward = []
    for path in sources():
        name = module_name(path)
        own = layer_of(name)
        for line, target in imports(path, name):
            # A name imported from a module (`from nlu.config import TrainConfig`) resolves to
            # the longest known prefix, which is that module's layer.
            if layer_of(target) > own:
                upward.append(
                    f"{path.relative_to(ROOT)}:{line}: {name} ({LAYERS[own][0]}) imports "
                    f"{target} ({LAYERS[layer_of(target)][0]})"
                )
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_every_module_has_a_layer() -> None:
    for path in sources():
        layer_of(module_name(path))


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The check can fail: a vocabulary module that imports the training engine is caught."""
    fake = ROOT / "nlu" / "labels.py"
    bad = tmp_path / "labels.py"
    bad.write_text(fake.read_text() + "\n\ndef f():\n    from nlu.training import engine\n")
    found = [t for _, t in imports(bad, "nlu.labels") if layer_of(t) > layer_of("nlu.labels")]
    assert found == ["nlu.training.engine"]


def test_no_module_of_ours_uses_an_old_import_path() -> None:
    """Every module imports with DeprecationWarnings from nlu's aliases turned into errors."""
    import importlib
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "error", message=r".* moved to .* in nlu 0\.2", category=DeprecationWarning
        )
        for path in sources():
            importlib.import_module(module_name(path))
