"""Parse texts with a trained model: encode -> logits (predict) -> structured results (decode)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nlu.alignment import Encoding, encode
from nlu.decode import decode
from nlu.model import JointModel


class UnknownSkillError(ValueError):
    pass


@dataclass
class Logits:
    router: np.ndarray  # [batch, skills]
    intents: np.ndarray  # [batch, total intents]
    slots: np.ndarray  # [batch, tokens, total tags]


def pad_batch(encodings: Sequence[Encoding], pad_id: int) -> dict[str, torch.Tensor]:
    """Dynamic padding to the longest text in the batch."""
    width = max(len(e.input_ids) for e in encodings)
    ids = torch.full((len(encodings), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encodings), width), dtype=torch.long)
    for row, enc in enumerate(encodings):
        ids[row, : len(enc.input_ids)] = torch.tensor(enc.input_ids)
        mask[row, : len(enc.input_ids)] = 1
    return {"input_ids": ids, "attention_mask": mask}


@torch.inference_mode()
def model_logits(model: JointModel, batch: dict[str, torch.Tensor]) -> Logits:
    device = next(model.parameters()).device
    out = model(**{k: v.to(device) for k, v in batch.items()})
    return Logits(
        router=out.router_logits.float().cpu().numpy(),
        intents=out.intent_logits.float().cpu().numpy(),
        slots=out.slot_logits.float().cpu().numpy(),
    )


class Parser:
    """A loaded model directory; `parse` is what `nlu predict`, evaluation and the server call."""

    def __init__(self, model: JointModel, tokenizer: Any, max_length: int) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> Parser:
        model, tokenizer, max_length = JointModel.from_pretrained(directory)
        return cls(model, tokenizer, max_length)

    @property
    def skills(self) -> list[str]:
        return self.model.index.names

    def check_skill(self, skill: str | None) -> None:
        if skill is not None and skill not in self.model.index.position:
            raise UnknownSkillError(
                f"unknown skill {skill!r}; this model knows: {', '.join(self.skills)}"
            )

    def parse(
        self,
        texts: Sequence[str],
        *,
        skill: str | None = None,
        top_k: int = 5,
        batch_size: int = 64,
    ) -> list[dict[str, Any]]:
        self.check_skill(skill)
        results: list[dict[str, Any]] = []
        for start in range(0, len(texts), batch_size):
            results += parse_batch(
                self.model,
                self.tokenizer,
                texts[start : start + batch_size],
                max_length=self.max_length,
                skill=skill,
                top_k=top_k,
            )
        return results


def parse_batch(
    model: JointModel,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int,
    skill: str | None = None,
    top_k: int = 5,
) -> list[dict[str, Any]]:
    """One forward pass over `texts`; the single code path for evaluation and serving."""
    encodings = encode(tokenizer, texts, max_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    logits = model_logits(model, pad_batch(encodings, pad_id))
    return [
        decode(
            text=text,
            encoding=enc,
            router_logits=logits.router[row],
            intent_logits=logits.intents[row],
            slot_logits=logits.slots[row],
            index=model.index,
            skill=skill,
            top_k=top_k,
        )
        for row, (text, enc) in enumerate(zip(texts, encodings, strict=True))
    ]
