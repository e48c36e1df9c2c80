"""Old import paths, kept for one release (CHANGELOG.md): `import nlu.train` still works and
warns where the module went.

Until 0.2 every module sat flat in `nlu/`; they now live in rooms (`nlu.model`,
`nlu.inference`, `nlu.evaluation`, `nlu.training`, `nlu.distill`, `nlu.federated`). A meta-path
finder answers the old names with a thin module that forwards attribute reads to the new one,
so nothing is imported twice and the new module's own name stays intact.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from collections.abc import Callable, Sequence
from typing import Any

# Old module -> where it lives now. Removed in 0.3.
MOVED: dict[str, str] = {
    "nlu.adapters": "nlu.model.adapters",
    "nlu.add_skill": "nlu.training.add_skill",
    "nlu.alignment": "nlu.model.alignment",
    "nlu.calibrate": "nlu.training.calibrate",
    "nlu.card": "nlu.model.card",
    "nlu.columns": "nlu.model.columns",
    "nlu.decode": "nlu.inference.decode",
    "nlu.evaluate": "nlu.evaluation.evaluate",
    "nlu.export": "nlu.model.export",
    "nlu.features": "nlu.model.features",
    "nlu.finetune": "nlu.training.finetune",
    "nlu.flower_app": "nlu.federated.apps",
    "nlu.modeldir": "nlu.model.modeldir",
    "nlu.mtl": "nlu.training.mtl",
    "nlu.nbest": "nlu.inference.nbest",
    "nlu.ood": "nlu.model.ood",
    "nlu.predict": "nlu.inference.parser",
    "nlu.protocol": "nlu.training.benchmark",
    "nlu.sharing": "nlu.model.sharing",
    "nlu.teachers": "nlu.distill.teachers",
    "nlu.train": "nlu.training.train",
    "nlu.validate": "nlu.data.validate",
}
# Old modules that were split: a name not in the new module above is looked up in these.
ALSO: dict[str, tuple[str, ...]] = {
    "nlu.evaluate": ("nlu.evaluation.metrics", "nlu.evaluation.report"),
    "nlu.teachers": ("nlu.distill.answers", "nlu.distill.cache"),
    "nlu.train": (
        "nlu.training.engine",
        "nlu.training.rundir",
        "nlu.training.checkpoints",
        "nlu.training.optim",
        "nlu.training.run",
    ),
}


def _moved(old: str, new: str) -> None:
    warnings.warn(
        f"{old} moved to {new} in nlu 0.2; import it from there (the old name goes in 0.3)",
        DeprecationWarning,
        stacklevel=4,
    )


class _Forward(types.ModuleType):
    """An old module name: every attribute is read from (and written to) the new module."""

    def __getattr__(self, name: str) -> Any:
        target = self.__dict__["_target"]
        for module in (target, *ALSO.get(self.__name__, ())):
            found = importlib.import_module(module)
            if hasattr(found, name):
                return getattr(found, name)
        raise AttributeError(f"module {self.__name__!r} ({target}) has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("__") or name == "_target":
            super().__setattr__(name, value)
        else:
            setattr(importlib.import_module(self.__dict__["_target"]), name, value)

    def __dir__(self) -> list[str]:
        return dir(importlib.import_module(self.__dict__["_target"]))


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _Forward(spec.name)
        module._target = MOVED[spec.name]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        _moved(module.__name__, MOVED[module.__name__])
        importlib.import_module(MOVED[module.__name__])


def install() -> None:
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())


def forward_names(package: str, modules: Sequence[str]) -> Callable[[str], Any]:
    """A package's `__getattr__` for the names it held as a module before 0.2 (`from nlu.model
    import JointModel`): read from the first of `modules` (its submodules now) that has it."""

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        # `from nlu.model import modeldir` asks the package first: a submodule is no alias.
        if importlib.util.find_spec(f"{package}.{name}") is not None:
            return importlib.import_module(f"{package}.{name}")
        for module in modules:
            found = importlib.import_module(module)
            if hasattr(found, name):
                _moved(f"{package}.{name}", f"{module}.{name}")
                return getattr(found, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


def old_loaders(
    module: str,
    name: str,
    cls: type,
    groups: dict[str, type] | None = None,
    rows: dict[str, type] | None = None,
) -> Callable[[str], Any]:
    """A config module's `__getattr__` for its 0.1 functions (`make_distill_config`, ...),
    which the one loader in nlu.config replaced; `groups` names the 0.1 sets of a group's keys
    (`FED_KEYS`: the fields of FederationConfig) and `rows` its builders of one entry
    (`teacher_config`: a TeacherConfig)."""
    import dataclasses
    import functools

    from nlu import config

    functions: dict[str, tuple[str, Any]] = {
        f"make_{name}_config": ("build", functools.partial(config.build, cls)),
        f"load_{name}_config": ("load", functools.partial(config.load, cls)),
        f"dump_{name}_config": ("dump", config.dump),
        f"parse_{name}_config": ("parse", functools.partial(config.parse, cls)),
    }
    for key_set, group in (groups or {}).items():
        functions[key_set] = ("tree", {f.name for f in dataclasses.fields(group)})
    for builder, row in (rows or {}).items():
        functions[builder] = ("build", functools.partial(config.build, row))

    def __getattr__(attr: str) -> Any:
        if attr not in functions:
            raise AttributeError(f"module {module!r} has no attribute {attr!r}")
        new, function = functions[attr]
        _moved(f"{module}.{attr}", f"nlu.config.{new}({cls.__name__}, ...)")
        return function

    return __getattr__
