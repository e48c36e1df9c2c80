"""Is a model folder one consistent, complete, readable thing? The labels in nlu.json must be
the labels the weights were trained for, and a model whose training asked for an out-of-scope
detector must have one; every file must parse.

`modeldir` stamps every weights file it writes with a digest of the labels (the skills, their
intents and BIO tags, in order): in the safetensors metadata of the heads, in the ONNX graph's
metadata. At load it recomputes the digest from nlu.json and compares, and checks the shapes
the weights give (heads' rows, the graph's output widths) against the label counts, so an
edited nlu.json (an intent appended, a slot dropped, two skills' names swapped) is refused
with one line naming the file, on every backend. Folders saved before the digest get the
shape checks only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nlu.labels import SkillLabels

DIGEST_KEY = "nlu_labels_sha256"
_FIX = (
    "restore nlu.json from the folder it came with, or save/export the model again from its "
    "training run"
)


class ModelDirError(FileNotFoundError):
    """A model folder is missing, incomplete, damaged, inconsistent or from an incompatible
    version (`nlu.model.modeldir` raises it; it lives here so that these checks can)."""


REMEDY = "save or export the model again (or restore the folder from a copy)"


def why(err: BaseException) -> str:
    if isinstance(err, KeyError):
        return f"the field {err.args[0]!r} is missing"
    if isinstance(err, json.JSONDecodeError):
        return f"not valid JSON (line {err.lineno}: {err.msg})"
    return f"{type(err).__name__}: {err}"


def read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ModelDirError(f"{path} ({what}) is damaged: not UTF-8 text; {REMEDY}") from err


def parse_json(path: Path, what: str) -> Any:
    text = read_text(path, what)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ModelDirError(f"{path} ({what}) is damaged: {why(err)}; {REMEDY}") from err
    if not isinstance(value, dict):
        raise ModelDirError(f"{path} ({what}) is damaged: not a JSON object; {REMEDY}")
    return value


def check_weights(path: Path, skills: Sequence[SkillLabels]) -> None:
    """The weights file opens and is complete (a truncated file fails here, not mid-load), and
    fits the labels: an ONNX graph by `check_onnx`, the heads file by `check_heads`."""
    try:
        if path.suffix == ".onnx":
            import onnx

            graph = onnx.load_model(str(path), load_external_data=False)
        else:
            from safetensors import safe_open

            with safe_open(str(path), framework="np") as handle:
                metadata = handle.metadata()
                shapes = {k: handle.get_slice(k).get_shape() for k in handle.keys()}  # noqa: SIM118
    except Exception as err:  # each library raises its own error types for a damaged file
        raise ModelDirError(
            f"{path} is damaged or truncated ({type(err).__name__}: {str(err)[:200]}); " + REMEDY
        ) from err
    if path.suffix == ".onnx":
        check_onnx(path, graph, skills)
    elif (metadata is not None and DIGEST_KEY in metadata) or any(
        k.startswith("nlu.") for k in shapes
    ):
        check_heads(path, metadata, shapes, skills)


def labels_digest(skills: Sequence[SkillLabels]) -> str:
    canon = [{"name": s.name, "intents": s.intents, "tags": s.tags} for s in skills]
    text = json.dumps(canon, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def check_digest(stored: str | None, skills: Sequence[SkillLabels], path: Path) -> None:
    if stored is not None and stored != labels_digest(skills):
        raise ModelDirError(
            f"{path} was saved for other labels than nlu.json lists (skills, intents or slot "
            f"tags edited, reordered or renamed); {_FIX}"
        )


def check_heads(path: Path, metadata: Mapping[str, str] | None, shapes: Mapping[str, Any],
                skills: Sequence[SkillLabels]) -> None:  # fmt: skip
    """The heads file (`nlu.` keys) against the labels: digest, then rows per head."""
    check_digest((metadata or {}).get(DIGEST_KEY), skills, path)
    expected = {"nlu.router.weight": len(skills)}
    for s in skills:
        expected[f"nlu.intent_heads.{s.name}.weight"] = len(s.intents)
        expected[f"nlu.slot_heads.{s.name}.weight"] = len(s.tags)
    if not any(k.startswith("nlu.intent_heads.") for k in shapes):
        return  # another layout (soft sharing, older folders): the model's own load checks it
    for key, rows in expected.items():
        shape = shapes.get(key)
        if shape is None or shape[0] != rows:
            found = "missing" if shape is None else f"{shape[0]} rows"
            raise ModelDirError(
                f"{path}: {key} is {found} but nlu.json has {rows} "
                f"({'skills' if 'router' in key else 'labels'}); {_FIX}"
            )


def check_onnx(path: Path, model: Any, skills: Sequence[SkillLabels]) -> None:
    """An ONNX graph (an `onnx.ModelProto`, weights not loaded) against the labels: the widths
    of its outputs, then the digest in its metadata."""
    widths = {
        "router_logits": (1, len(skills)),
        "intent_logits": (1, sum(len(s.intents) for s in skills)),
        "slot_logits": (2, sum(len(s.tags) for s in skills)),
    }
    outputs = {o.name: list(o.type.tensor_type.shape.dim) for o in model.graph.output}
    for name, (axis, width) in widths.items():
        dims = outputs.get(name)
        if dims is None:
            raise ModelDirError(f"{path} has no output {name!r}; export the model again")
        if len(dims) > axis and dims[axis].HasField("dim_value") and dims[axis].dim_value != width:
            raise ModelDirError(
                f"{path}: output {name} has {dims[axis].dim_value} columns but nlu.json's labels "
                f"need {width}; {_FIX}"
            )
    stored = {p.key: p.value for p in model.metadata_props}.get(DIGEST_KEY)
    check_digest(stored, skills, path)


def stamp_onnx(path: Path, skills: Sequence[SkillLabels]) -> None:
    """Write the labels' digest into the graph's metadata (in place)."""
    import onnx

    model = onnx.load_model(str(path), load_external_data=False)
    kept = [p for p in model.metadata_props if p.key != DIGEST_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=DIGEST_KEY, value=labels_digest(skills))
    onnx.save_model(model, str(path))


def detector_problem(directory: Path, training_config: str | None, skipped: bool) -> str | None:
    """Why a folder without ood.json is not a finished model, or None. Its training config
    asked for a detector, and nothing recorded that it was deliberately not fitted: training
    stopped (or the file was removed) before calibration."""
    if training_config is None or skipped:
        return None
    import yaml

    try:
        config = yaml.safe_load(training_config)
    except yaml.YAMLError:
        return None  # a damaged config is reported where it is read
    ood = config.get("ood") if isinstance(config, dict) else None
    method = ood.get("oos_method", "auto") if isinstance(ood, dict) else None
    if method in (None, "none"):
        return None
    return (
        f"{directory} is incomplete: its training asked for out-of-scope rejection ({method}) "
        f"but it has no ood.json (training stopped before its last stage?), so it would accept "
        f"everything with uncalibrated confidences; fit it with `nlu calibrate {directory}`, "
        "or finish the run with `nlu train <its config.yaml> --resume`"
    )
