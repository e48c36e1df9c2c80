"""The model's forward pass as a numpy -> Logits function, for each backend: PyTorch (a
`JointModel`) and ONNX Runtime (the exported graph). The parser and the training engine call
them alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nlu.model.modeldir import ModelDirError

if TYPE_CHECKING:
    from nlu.model.joint import JointModel


@dataclass
class Logits:
    router: np.ndarray  # [batch, skills]
    intents: np.ndarray  # [batch, total intents]
    slots: np.ndarray  # [batch, tokens, total tags]
    # The pooled sentence vectors [batch, hidden]; None from graphs exported before they were.
    pooled: np.ndarray | None = None


Forward = Callable[[dict[str, np.ndarray]], Logits]


def torch_forward(model: JointModel) -> Forward:
    """Forward pass of a `JointModel` (eval mode, no autograd) as a numpy -> Logits function."""
    import torch

    @torch.inference_mode()
    def forward(batch: dict[str, np.ndarray]) -> Logits:
        device = next(model.parameters()).device
        out = model(**{k: torch.from_numpy(v).to(device) for k, v in batch.items()})
        return Logits(
            router=out.router_logits.float().cpu().numpy(),
            intents=out.intent_logits.float().cpu().numpy(),
            slots=out.slot_logits.float().cpu().numpy(),
            pooled=out.pooled.float().cpu().numpy(),
        )

    return forward


def onnx_forward(path: Path | None, *, threads: int | None = None) -> Forward:
    import onnxruntime as ort

    if path is None:
        raise ModelDirError("this model folder was loaded without its ONNX graph")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    names = [o.name for o in session.get_outputs()]

    def forward(batch: dict[str, np.ndarray]) -> Logits:
        out = dict(zip(names, session.run(None, batch), strict=True))
        return Logits(
            router=out["router_logits"],
            intents=out["intent_logits"],
            slots=out["slot_logits"],
            pooled=out.get("pooled"),
        )

    return forward
