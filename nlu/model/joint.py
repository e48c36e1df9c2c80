"""The joint model: one shared encoder, a skill router, and per-skill intent and slot heads."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from nlu.labels import LabelIndex, SkillLabels
from nlu.model import modeldir
from nlu.model.alignment import Tokenizer
from nlu.model.columns import SoftSharedEncoder
from nlu.model.encoders import (
    ROUTER_INPUTS,
    _without_pooler,
    resolve_encoder,
)
from nlu.model.losses import TaskLosses, task_losses
from nlu.model.modeldir import ModelDirError, ModelFolder, ModelMeta
from nlu.model.sharing import SENTENCE, Sharing, SharingError

logger = logging.getLogger(__name__)


@dataclass
class JointOutput(ModelOutput):
    router_logits: torch.Tensor | None = None
    # All skills' intent logits side by side [batch, total intents]; LabelIndex has the slices.
    intent_logits: torch.Tensor | None = None
    # All skills' slot-tag logits side by side [batch, tokens, total tags].
    slot_logits: torch.Tensor | None = None
    # The sentence vector the intent heads (and with router_input="sentence" the router) read
    # (before dropout) [batch, hidden]: out-of-scope detection measures distances on it.
    pooled: torch.Tensor | None = None
    # The vector the router reads (before dropout) [batch, hidden]: `pooled`, or with
    # router_input="layers" the mean of every transformer layer's pooled vector.
    routed: torch.Tensor | None = None
    # With labels: the unweighted losses (nlu.training.mtl.LossWeighting turns them into one loss).
    losses: TaskLosses | None = None
    # With labels under sluice sharing: the weighted subspace orthogonality penalty, added to
    # the loss as it is (nlu/sharing.py).
    penalty: torch.Tensor | None = None


class Router(nn.Linear):
    """The skill router: linear logits, plus with a `curvature` [skills, hidden, hidden] the
    quadratic term -1/2 · xᵀ C_s x per skill. A trained router is linear; a router fitted as a
    quadratic discriminant (per-skill covariances; `nlu federated` with `router: qda`) needs
    the quadratic term. The curvature is a buffer: fitted, never trained, saved with the
    weights (`router.curvature`), so a folder says which router it holds."""

    curvature: torch.Tensor | None

    def __init__(self, hidden: int, skills: int) -> None:
        super().__init__(hidden, skills)
        self.register_buffer("curvature", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        if self.curvature is None:
            return logits
        return logits - 0.5 * torch.einsum("bd,sde,be->bs", x, self.curvature, x)

    def set_curvature(self, curvature: torch.Tensor | None) -> None:
        if curvature is not None:
            want = (self.out_features, self.in_features, self.in_features)
            if tuple(curvature.shape) != want:
                raise ValueError(
                    f"router curvature of shape {tuple(curvature.shape)}, expected {want}"
                )
            curvature = curvature.to(self.weight.dtype)
        self.curvature = curvature


class JointModel(nn.Module):
    def __init__(
        self,
        *,
        encoder: PreTrainedModel,
        skills: Sequence[SkillLabels],
        pooling: str = "mean",
        dropout: float = 0.1,
        label_smoothing: float = 0.0,
        sharing: Sharing | None = None,
        router_input: str = "sentence",
    ) -> None:
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', not {pooling!r}")
        if router_input not in ROUTER_INPUTS:
            raise ValueError(f"router_input must be 'sentence' or 'layers', not {router_input!r}")
        if router_input != "sentence" and sharing is not None:
            raise SharingError(
                "router_input=layers needs one encoder (sharing=hard); soft-shared columns "
                "have no single stack of layers to average"
            )
        # Hard sharing (None): one encoder under every head. Soft: columns of it (nlu/sharing.py).
        self.sharing = sharing
        self.encoder: nn.Module = (
            encoder if sharing is None else SoftSharedEncoder(encoder, sharing)
        )
        # A training-time setting, like label smoothing: the sluice penalty's weight.
        self.orthogonality_weight = 0.0
        self.index = LabelIndex.of(skills)
        self.pooling = pooling
        # "layers": the router reads every transformer layer's pooled vector, averaged. Lower
        # layers keep more of the pretrained sentence semantics that tell skills apart; where
        # the router is fitted rather than trained (federated owners), it reads them better
        # than the last layer alone (benchmarks/results/studies/federated.md).
        self.router_input = router_input
        self.dropout_rate = dropout
        # A training-time setting: not saved, it does not change inference.
        self.label_smoothing = label_smoothing
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.router = Router(hidden, len(skills))
        # One head per skill (not one big layer) so a skill's head can be added, frozen or
        # shipped on its own without touching the others' weights.
        self.intent_heads = nn.ModuleDict(
            {s.name: nn.Linear(hidden, len(s.intents)) for s in skills}
        )
        self.slot_heads = nn.ModuleDict({s.name: nn.Linear(hidden, len(s.tags)) for s in skills})

    @property
    def skills(self) -> list[SkillLabels]:
        return list(self.index.skills)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sentence vector for the router and intent heads: mean over real tokens, or [CLS]."""
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def heads(
        self, pooled: torch.Tensor, tokens: torch.Tensor, routed: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(router, all intents, all tags) logits from pooled and per-token encoder features;
        the router reads `routed` where given (router_input="layers"), else `pooled`."""
        intent_logits = torch.cat([head(pooled) for head in self.intent_heads.values()], dim=-1)
        slot_logits = torch.cat([head(tokens) for head in self.slot_heads.values()], dim=-1)
        return self.router(pooled if routed is None else routed), intent_logits, slot_logits

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(token states, sentence vector, router input) of a hard-shared encoder."""
        layers = self.router_input == "layers"
        out = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=layers
        )
        hidden = out.last_hidden_state
        sentence = self.pool(hidden, attention_mask)
        if not layers:
            return hidden, sentence, sentence
        # hidden_states[0] is the embedding layer's output: not a transformer layer.
        routed = torch.stack([self.pool(h, attention_mask) for h in out.hidden_states[1:]]).mean(0)
        return hidden, sentence, routed

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        skill_ids: torch.Tensor | None = None,
        intent_labels: torch.Tensor | None = None,
        slot_labels: torch.Tensor | None = None,
    ) -> JointOutput:
        if self.sharing is None:
            hidden, sentence, routed = self.encode(input_ids, attention_mask)
            pooled = self.dropout(sentence)
            router_logits, intent_logits, slot_logits = self.heads(
                pooled,
                self.dropout(hidden),
                None if routed is sentence else self.dropout(routed),
            )
        else:
            sentence, router_logits, intent_logits, slot_logits, penalty = self._soft_heads(
                input_ids, attention_mask
            )
            routed = sentence
        out = JointOutput(
            router_logits=router_logits,
            intent_logits=intent_logits,
            slot_logits=slot_logits,
            pooled=sentence,
            routed=routed,
        )
        if skill_ids is None:
            return out
        if self.sharing is not None and self.training and self.orthogonality_weight > 0:
            out.penalty = self.orthogonality_weight * penalty
        if intent_labels is None or slot_labels is None:
            raise ValueError("training needs skill_ids, intent_labels and slot_labels together")
        out.losses = task_losses(
            index=self.index,
            router_logits=router_logits,
            router_targets=skill_ids,
            intent_logits=intent_logits,
            slot_logits=slot_logits,
            skill_ids=skill_ids,
            intent_labels=intent_labels,
            slot_labels=slot_labels,
            label_smoothing=self.label_smoothing,
        )
        return out

    @property
    def encoder_config(self) -> PretrainedConfig:
        """The (one column's) transformers config."""
        config: PretrainedConfig = self.encoder.config  # type: ignore[assignment]
        return config

    @property
    def hard_encoder(self) -> PreTrainedModel:
        """The one encoder of a hard-shared model."""
        if not isinstance(self.encoder, PreTrainedModel):
            raise SharingError(
                f"this model shares its encoder softly ({self.sharing.mode if self.sharing else ''}"
                "); this needs a hard-shared model (sharing=hard)"
            )
        return self.encoder

    @property
    def soft_encoder(self) -> SoftSharedEncoder:
        if not isinstance(self.encoder, SoftSharedEncoder):
            raise SharingError("this model shares its encoder hard (one column)")
        return self.encoder

    def _soft_heads(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(router input, router, all intents, all tags logits, sluice penalty) from the
        columns: each skill's heads read their own column; the router reads the sentence
        column, or with skill groups the mean of all columns (it must tell every skill apart)."""
        assert self.sharing is not None
        states, penalty = self.soft_encoder(input_ids, attention_mask)
        pooled = [self.pool(h, attention_mask) for h in states]
        sentence = pooled[SENTENCE] if self.sharing.by_task else torch.stack(pooled).mean(0)
        names = list(self.intent_heads)
        intent_logits = torch.cat(
            [
                self.intent_heads[name](self.dropout(pooled[self.sharing.sentence_column(name)]))
                for name in names
            ],
            dim=-1,
        )
        slot_logits = torch.cat(
            [
                self.slot_heads[name](self.dropout(states[self.sharing.token_column(name)]))
                for name in names
            ],
            dim=-1,
        )
        return sentence, self.router(self.dropout(sentence)), intent_logits, slot_logits, penalty

    def task_names(self) -> list[str]:
        """Every task the loss weighting can see, in a fixed order."""
        names = ["router"]
        for s in self.skills:
            names += [f"intent/{s.name}", f"slot/{s.name}"]
        return names

    # -- the model folder (nlu.model.modeldir owns the files) -------------------------------

    def meta(self, max_length: int) -> ModelMeta:
        return ModelMeta(
            skills=self.skills,
            pooling=self.pooling,
            dropout=self.dropout_rate,
            max_length=max_length,
            sharing=self.sharing,
            router_input=self.router_input,
        )

    def to_folder(
        self, *, tokenizer: Tokenizer, max_length: int, training_config: str | None
    ) -> ModelFolder:
        return ModelFolder(
            meta=self.meta(max_length),
            tokenizer=tokenizer,
            encoder_config=self.encoder_config.to_diff_dict(),
            weights=dict(self.state_dict()),
            training_config=training_config,
        )

    @classmethod
    def from_folder(cls, folder: ModelFolder) -> JointModel:
        """The network of a folder loaded for the torch backend, in eval mode."""
        if folder.weights is None:
            raise ModelDirError("this model folder was loaded without its PyTorch weights")
        config = dict(folder.encoder_config)
        try:
            encoder_config = AutoConfig.for_model(config.pop("model_type"), **config)
        except (KeyError, ValueError, TypeError) as err:
            raise ModelDirError(
                f"{modeldir.ENCODER_CONFIG_FILE} is not a usable transformers config: "
                f"{str(err)[:160]}"
            ) from err
        encoder = _without_pooler(AutoModel.from_config(encoder_config))
        model = cls(
            encoder=encoder,
            skills=folder.meta.skills,
            pooling=folder.meta.pooling,
            dropout=folder.meta.dropout,
            sharing=folder.meta.sharing,
            router_input=folder.meta.router_input,
        )
        curvature = folder.weights.get("router.curvature")
        try:
            model.router.set_curvature(curvature)
            model.load_state_dict(folder.weights, strict=True)
        except (RuntimeError, ValueError) as err:
            # torch's first line only says "Error(s) in loading state_dict for JointModel:".
            lines = [x.strip() for x in str(err).splitlines() if x.strip()]
            detail = next((x for x in lines if not x.startswith("Error(s) in loading")), "")
            raise ModelDirError(
                f"{modeldir.WEIGHTS_FILE} does not fit {modeldir.META_FILE} and "
                f"{modeldir.ENCODER_CONFIG_FILE} (a folder mixed from two models?): "
                f"{detail[:300]}; save the model again"
            ) from err
        return model.eval()

    @classmethod
    def load(
        cls, directory: str | Path, *, calibrated: bool = True
    ) -> tuple[JointModel, ModelFolder]:
        """The network and its folder (tokenizer, labels, adapters) from a saved model
        (`calibrated`: as `modeldir.load`)."""
        folder = modeldir.load(directory, backend="torch", calibrated=calibrated)
        return cls.from_folder(folder), folder


def build_model(
    *,
    encoder: str,
    skills: Sequence[SkillLabels],
    pooling: str,
    dropout: float,
    sharing: Sharing | None = None,
    router_input: str = "sentence",
) -> tuple[JointModel, Tokenizer]:
    """A new joint model on a pretrained encoder (a name, `default`/`mpnet`, or a path); with
    soft `sharing`, every column starts from the same pretrained weights."""
    path = resolve_encoder(encoder)
    tokenizer = AutoTokenizer.from_pretrained(path)
    backbone = _without_pooler(AutoModel.from_pretrained(path))
    model = JointModel(
        encoder=backbone,
        skills=skills,
        pooling=pooling,
        dropout=dropout,
        sharing=sharing,
        router_input=router_input,
    )
    return model, tokenizer
