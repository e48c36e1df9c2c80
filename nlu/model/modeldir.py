"""The model folder: the one module that writes or reads it, and the only place that knows its
layout (docs/reference/model-folder.md lists the files). Importing this module imports neither
torch nor transformers (the ONNX server needs neither); each backend's files are read only when
that backend is loaded.

`save` writes the whole folder into a temporary sibling and renames it into place when it is
complete, so a killed save leaves the previous model (or nothing), never a half-written folder
that loads.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from nlu.labels import SkillLabels
from nlu.model import integrity
from nlu.model.integrity import DIGEST_KEY, ModelDirError
from nlu.model.ood import OutOfScope
from nlu.model.sharing import Sharing

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_FILE = "nlu.json"
ENCODER_CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"
TRAINING_CONFIG_FILE = "training_config.yaml"
ADAPTERS_DIR = "adapters"
MERGED_ADAPTER_DIR = "adapter"
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
HEADS_FILE = "heads.safetensors"
OOD_FILE = "ood.json"
OOD_ARRAYS_FILE = "ood.safetensors"
CARD_FILE = "README.md"

# model.safetensors: JointModel's `encoder.` weights without that prefix (the encoder's own
# layout, so transformers' AutoModel loads the folder without a word about our keys); the rest
# (router, heads) under HEADS_PREFIX in JOINT_HEADS_FILE. Folders written before keep the heads
# in model.safetensors, or JointModel's own names; all read back the same.
ENCODER_PREFIX = "encoder."
HEADS_PREFIX = "nlu."
JOINT_HEADS_FILE = "nlu_heads.safetensors"

Backend = Literal["torch", "onnx"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx")
_WEIGHTS: dict[str, str] = {"torch": WEIGHTS_FILE, "onnx": ONNX_FILE}

Tensors = dict[str, "torch.Tensor"]


@dataclass(frozen=True)
class ModelMeta:
    """What nlu.json holds: everything about the model that is not a weight."""

    skills: list[SkillLabels]
    pooling: str
    dropout: float
    max_length: int
    # Soft parameter sharing (nlu/sharing.py); None: hard sharing, one encoder.
    sharing: Sharing | None = None
    # What the router reads (nlu.model.joint.JointModel): "sentence" or "layers". Folders from
    # before the option have none: "sentence".
    router_input: str = "sentence"
    # Why training left the model without an out-of-scope detector although its config asked
    # for one (no in-scope dev texts, a kept base detector that was None); None: it has one, or
    # was not asked to. A folder without ood.json and without this reason is incomplete.
    ood_skipped: str | None = None

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "format_version": FORMAT_VERSION,
                    "pooling": self.pooling,
                    "dropout": self.dropout,
                    "max_length": self.max_length,
                    "router_input": self.router_input,
                    **({"sharing": self.sharing.to_dict()} if self.sharing else {}),
                    **({"ood_skipped": self.ood_skipped} if self.ood_skipped else {}),
                    "skills": [s.to_dict() for s in self.skills],
                },
                indent=2,
            )
            + "\n"
        )

    @classmethod
    def from_json(cls, text: str, *, where: Path) -> ModelMeta:
        return cls.from_row(json.loads(text), where=where)

    @classmethod
    def from_row(cls, row: dict[str, Any], *, where: Path) -> ModelMeta:
        if row.get("format_version") != FORMAT_VERSION:
            raise ModelDirError(
                f"{where} was saved in format {row.get('format_version')}; this nlu reads "
                f"format {FORMAT_VERSION}. Re-export it with a matching version."
            )
        return cls(
            skills=[SkillLabels.from_dict(s) for s in row["skills"]],
            pooling=row["pooling"],
            dropout=float(row["dropout"]),
            max_length=int(row["max_length"]),
            sharing=Sharing.from_dict(row["sharing"]) if row.get("sharing") else None,
            router_input=str(row.get("router_input", "sentence")),
            ood_skipped=row.get("ood_skipped"),
        )


@dataclass
class Adapter:
    """A LoRA adapter (peft's config and weights) and, per skill, that skill's own heads.

    In memory for the torch backend (`config`, `weights`, `heads`); the onnx backend only needs
    the adapted graph (`onnx`, a file path)."""

    config: dict[str, Any] | None = None
    weights: Tensors | None = None
    heads: Tensors | None = None
    onnx: Path | None = None


@dataclass
class ModelFolder:
    """Everything a model folder holds. `save` writes one, `load` reads one."""

    meta: ModelMeta
    tokenizer: PreTrainedTokenizerBase
    encoder_config: dict[str, Any]
    backend: Backend = "torch"
    weights: Tensors | None = None  # model.safetensors
    onnx: Path | None = None  # model.onnx, copied in by save
    adapters: dict[str, Adapter] = field(default_factory=dict)
    merged_adapter: Adapter | None = None
    training_config: str | None = None
    ood: OutOfScope | None = None
    # What training measured (dev metrics of the selected epoch); kept in nlu.json and shown in
    # the model card.
    metrics: dict[str, Any] | None = None


# -- save ------------------------------------------------------------------------------------------


def save(directory: str | Path, folder: ModelFolder) -> Path:
    """Write `folder` to `directory` atomically (a temporary sibling, renamed when complete)."""
    directory = Path(directory)
    staging = scratch(directory, "saving")
    try:
        _write(staging, folder)
        _replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def scratch(directory: Path, purpose: str) -> Path:
    """A new, empty working folder beside `directory` (`.name.<purpose>-<pid>`): a save's
    staging, an export's graphs. What killed runs left there is removed first: the working
    folders of processes that no longer run."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    for stale in directory.parent.glob(f".{directory.name}.*-*"):
        kind, _, pid = stale.name.rpartition("-")
        ours = kind.rpartition(".")[2] in ("saving", "replaced", "exporting") and pid.isdigit()
        if ours and not _running(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    path = directory.parent / f".{directory.name}.{purpose}-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    return path


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _write(target: Path, folder: ModelFolder) -> None:
    from safetensors.torch import save_file

    from nlu.model.card import render

    meta = json.loads(folder.meta.to_json())
    if folder.metrics:
        meta["metrics"] = folder.metrics
    (target / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    (target / CARD_FILE).write_text(render(folder))
    (target / ENCODER_CONFIG_FILE).write_text(
        json.dumps(folder.encoder_config, indent=2, sort_keys=True) + "\n"
    )
    folder.tokenizer.save_pretrained(str(target))
    if folder.weights is not None:
        keyed = _contiguous(_file_keys(folder.weights))
        heads = {k: v for k, v in keyed.items() if k.startswith(HEADS_PREFIX)}
        encoder = {k: v for k, v in keyed.items() if k not in heads}
        digest = integrity.labels_digest(folder.meta.skills)
        save_file(encoder, str(target / WEIGHTS_FILE), {"format": "pt"})
        save_file(heads, str(target / JOINT_HEADS_FILE), {"format": "pt", DIGEST_KEY: digest})
    if folder.onnx is not None:
        shutil.copy2(folder.onnx, target / ONNX_FILE)
        integrity.stamp_onnx(target / ONNX_FILE, folder.meta.skills)
    if folder.training_config is not None:
        (target / TRAINING_CONFIG_FILE).write_text(folder.training_config)
    for skill, adapter in folder.adapters.items():
        _write_adapter(target / ADAPTERS_DIR / skill, adapter, folder.meta.skills)
    if folder.merged_adapter is not None:
        _write_adapter(target / MERGED_ADAPTER_DIR, folder.merged_adapter, folder.meta.skills)
    if folder.ood is not None:
        from safetensors.numpy import save_file as save_arrays

        (target / OOD_FILE).write_text(json.dumps(folder.ood.to_json(), indent=2) + "\n")
        arrays = folder.ood.arrays()
        if arrays:
            save_arrays(arrays, str(target / OOD_ARRAYS_FILE))


def _file_keys(weights: Tensors) -> Tensors:
    return {
        k.removeprefix(ENCODER_PREFIX) if k.startswith(ENCODER_PREFIX) else HEADS_PREFIX + k: v
        for k, v in weights.items()
    }


def _model_keys(weights: Tensors) -> Tensors:
    if not any(k.startswith(HEADS_PREFIX) for k in weights):
        return weights  # the layout before the encoder kept its own names
    return {
        k.removeprefix(HEADS_PREFIX) if k.startswith(HEADS_PREFIX) else ENCODER_PREFIX + k: v
        for k, v in weights.items()
    }


def _write_adapter(target: Path, adapter: Adapter, skills: list[SkillLabels]) -> None:
    from safetensors.torch import save_file

    target.mkdir(parents=True, exist_ok=True)
    if adapter.config is not None:
        (target / ADAPTER_CONFIG_FILE).write_text(
            json.dumps(adapter.config, indent=2, sort_keys=True, default=_jsonable) + "\n"
        )
    if adapter.weights is not None:
        save_file(_contiguous(adapter.weights), str(target / ADAPTER_WEIGHTS_FILE))
    if adapter.heads is not None:
        save_file(_contiguous(adapter.heads), str(target / HEADS_FILE))
    if adapter.onnx is not None:
        shutil.copy2(adapter.onnx, target / ONNX_FILE)
        integrity.stamp_onnx(target / ONNX_FILE, skills)


def _jsonable(value: Any) -> Any:
    if isinstance(value, set | frozenset):  # peft keeps target_modules as a set
        return sorted(value)
    if hasattr(value, "value"):  # enums (peft's PeftType, TaskType)
        return value.value
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _contiguous(tensors: Tensors) -> Tensors:
    return {k: v.detach().contiguous().cpu() for k, v in tensors.items()}


def _replace(staging: Path, directory: Path) -> None:
    """Swap the complete staging folder in; the old folder is removed only afterwards."""
    retired = directory.parent / f".{directory.name}.replaced-{os.getpid()}"
    if directory.exists():
        shutil.rmtree(retired, ignore_errors=True)
        directory.rename(retired)
    staging.rename(directory)
    shutil.rmtree(retired, ignore_errors=True)


# -- load ------------------------------------------------------------------------------------------


# Where `nlu predict` and `nlu serve` look without a model argument: the demo's model.
DEFAULT_MODEL = "runs/demo/model"
RUN_MODEL_DIR = "model"  # where a training run (train, finetune, add-skill) puts its model


def locate(directory: str | Path) -> Path:
    """The model folder itself, or the `model` folder of a run folder that `nlu train`,
    `nlu finetune` or `nlu add-skill` wrote: every command that reads a model takes either."""
    directory = Path(directory)
    if not (directory / META_FILE).is_file() and (directory / RUN_MODEL_DIR / META_FILE).is_file():
        return directory / RUN_MODEL_DIR
    return directory


def check(directory: str | Path, backend: str = "auto") -> Backend:
    """Say what is wrong with a model folder for `backend` (missing, incomplete, or a damaged
    file, named), without building the model; returns the backend that `load` would use
    ('auto': ONNX when the folder has model.onnx)."""
    return _inspect(locate(directory), backend).backend


@dataclass
class _Inspected:
    """What checking a folder read, so that loading it reads each file once."""

    backend: Backend
    meta: ModelMeta
    metrics: dict[str, Any] | None
    encoder_config: dict[str, Any]


def _inspect(directory: Path, backend: str, *, calibrated: bool = True) -> _Inspected:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    run = directory.parent if directory.name == RUN_MODEL_DIR else directory
    if not (directory / META_FILE).is_file() and (run / "checkpoints").is_dir():
        raise ModelDirError(
            f"the training run {run} did not finish (no {RUN_MODEL_DIR}/ yet); continue it "
            f"with `nlu train {run / 'config.yaml'} --resume`"
        )
    if not directory.is_dir():
        raise ModelDirError(
            f"model directory {directory} does not exist; train one with `nlu train` "
            "(a run folder holding the model in model/; pass either)"
        )
    chosen: Backend
    if backend == "auto":
        chosen = "onnx" if (directory / ONNX_FILE).is_file() else "torch"
    else:
        chosen = "onnx" if backend == "onnx" else "torch"
    required = (ENCODER_CONFIG_FILE, META_FILE, TOKENIZER_FILE, _WEIGHTS[chosen])
    missing = [name for name in required if not (directory / name).is_file()]
    if missing:
        hint = (
            "create it with `nlu export`"
            if missing == [ONNX_FILE]
            else "point at a run folder that `nlu train` wrote or the model folder inside it, "
            "or train again"
        )
        raise ModelDirError(
            f"model directory {directory} is incomplete: missing {', '.join(missing)}; {hint}"
        )
    meta, metrics = _read_meta(directory)
    skills = {s.name for s in meta.skills}
    encoder_config = integrity.parse_json(
        directory / ENCODER_CONFIG_FILE, "the encoder's transformers config"
    )
    integrity.parse_json(directory / TOKENIZER_FILE, "the tokenizer")
    integrity.check_weights(directory / _WEIGHTS[chosen], meta.skills)
    if chosen == "torch" and (directory / JOINT_HEADS_FILE).is_file():
        integrity.check_weights(directory / JOINT_HEADS_FILE, meta.skills)
    for skill in adapter_skills(directory, any_file=True):
        if chosen == "onnx" and (directory / ADAPTERS_DIR / skill / ONNX_FILE).is_file():
            integrity.check_weights(directory / ADAPTERS_DIR / skill / ONNX_FILE, meta.skills)
    if calibrated and not (directory / OOD_FILE).is_file():
        problem = integrity.detector_problem(
            directory, read_training_config(directory), meta.ood_skipped is not None
        )
        if problem:
            raise ModelDirError(problem)
    for skill in adapter_skills(directory, any_file=True):
        if skill not in skills:
            raise ModelDirError(
                f"{directory / ADAPTERS_DIR / skill} is an adapter for skill {skill!r}, which "
                f"the model does not have (skills: {', '.join(sorted(skills))}); remove the folder"
            )
        needed = (ONNX_FILE,) if chosen == "onnx" else (ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE)
        needed = (*needed, HEADS_FILE) if chosen == "torch" else needed
        absent = [f for f in needed if not (directory / ADAPTERS_DIR / skill / f).is_file()]
        if absent:
            raise ModelDirError(
                f"adapter {directory / ADAPTERS_DIR / skill} is incomplete for the {chosen} "
                f"backend: missing {', '.join(absent)}"
                + ("; export the model again with `nlu export`" if chosen == "onnx" else "")
            )
    return _Inspected(chosen, meta, metrics, encoder_config)


def load(directory: str | Path, backend: str = "auto", *, calibrated: bool = True) -> ModelFolder:
    """Read a model folder: labels, tokenizer and the weights of one backend. `calibrated`
    False also reads a folder whose out-of-scope stage is missing (`nlu calibrate` fits it)."""
    from transformers import AutoTokenizer

    directory = locate(directory)
    inspected = _inspect(directory, backend, calibrated=calibrated)
    chosen = inspected.backend
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except Exception as err:  # transformers raises many types for a bad tokenizer folder
        raise ModelDirError(
            f"{directory / TOKENIZER_FILE}: the tokenizer cannot be loaded "
            f"({type(err).__name__}: {str(err)[:200]}); {integrity.REMEDY}"
        ) from err
    folder = ModelFolder(
        meta=inspected.meta,
        tokenizer=tokenizer,
        encoder_config=inspected.encoder_config,
        backend=chosen,
        training_config=read_training_config(directory),
    )
    if chosen == "torch":
        from safetensors.torch import load_file

        weights = load_file(str(directory / WEIGHTS_FILE))
        if (directory / JOINT_HEADS_FILE).is_file():
            weights.update(load_file(str(directory / JOINT_HEADS_FILE)))
        folder.weights = _model_keys(weights)
    else:
        folder.onnx = directory / ONNX_FILE
    for skill in adapter_skills(directory, any_file=True):
        folder.adapters[skill] = _read_adapter(directory / ADAPTERS_DIR / skill, chosen)
    if (directory / MERGED_ADAPTER_DIR / ADAPTER_CONFIG_FILE).is_file():
        folder.merged_adapter = _read_adapter(directory / MERGED_ADAPTER_DIR, chosen)
    folder.ood = read_ood(directory)
    folder.metrics = inspected.metrics
    return folder


def read_ood(directory: str | Path) -> OutOfScope | None:
    """The folder's out-of-scope detector; None for folders saved before there was one."""
    path = Path(directory) / OOD_FILE
    if not path.is_file():
        return None
    row = integrity.parse_json(path, "the out-of-scope detector")
    arrays: dict[str, Any] = {}
    if (Path(directory) / OOD_ARRAYS_FILE).is_file():
        from safetensors.numpy import load_file as load_arrays

        try:
            arrays = load_arrays(str(Path(directory) / OOD_ARRAYS_FILE))
        except Exception as err:  # safetensors' own error type for a damaged file
            raise ModelDirError(
                f"{Path(directory) / OOD_ARRAYS_FILE} is damaged ({err}); {integrity.REMEDY}"
            ) from err
    try:
        return OutOfScope.from_json(row, arrays)
    except (KeyError, TypeError, ValueError) as err:
        raise ModelDirError(f"{path} is damaged: {integrity.why(err)}; {integrity.REMEDY}") from err


def _read_adapter(source: Path, backend: Backend) -> Adapter:
    if backend == "onnx":
        return Adapter(onnx=source / ONNX_FILE if (source / ONNX_FILE).is_file() else None)
    from safetensors.torch import load_file

    heads = source / HEADS_FILE
    return Adapter(
        config=json.loads((source / ADAPTER_CONFIG_FILE).read_text()),
        weights=load_file(str(source / ADAPTER_WEIGHTS_FILE)),
        heads=load_file(str(heads)) if heads.is_file() else None,
    )


def read_meta(directory: str | Path) -> ModelMeta:
    return _read_meta(Path(directory))[0]


def _read_meta(directory: Path) -> tuple[ModelMeta, dict[str, Any] | None]:
    """The labels and settings in nlu.json, and the metrics saved beside them."""
    path = directory / META_FILE
    text = integrity.read_text(path, "the model's labels")
    try:
        row = json.loads(text)
        return ModelMeta.from_row(row, where=directory), row.get("metrics")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        if isinstance(err, ModelDirError):
            raise
        raise ModelDirError(f"{path} is damaged: {integrity.why(err)}; {integrity.REMEDY}") from err


def read_training_config(directory: str | Path) -> str | None:
    path = Path(directory) / TRAINING_CONFIG_FILE
    return path.read_text() if path.is_file() else None


def adapter_skills(directory: str | Path, *, any_file: bool = False) -> list[str]:
    """Skills with a per-skill adapter in a model folder (`any_file`: also incomplete ones)."""
    root = Path(directory) / ADAPTERS_DIR
    if not root.is_dir():
        return []
    return sorted(
        d.name
        for d in root.iterdir()
        if d.is_dir() and (any_file or (d / ADAPTER_CONFIG_FILE).is_file())
    )
