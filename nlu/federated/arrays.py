"""The model both sides hold and the arrays that travel: the federation's model built from its
label space, the digest of what stays frozen, and which arrays a round sends and loads."""

from __future__ import annotations

import logging
import typing
from collections.abc import Sequence

from nlu.labels import SkillLabels

if typing.TYPE_CHECKING:
    import torch
    from flwr.app import ArrayRecord

    from nlu.model.alignment import Tokenizer
    from nlu.model.joint import JointModel

from nlu.federated.config import FederatedConfig, FederationError

logger = logging.getLogger(__name__)


def federation_model(
    cfg: FederatedConfig, labels: Sequence[SkillLabels]
) -> tuple[JointModel, Tokenizer]:
    """The network the server and every client build alike (the arrays then travel into it):
    `init_from`'s model, or a new one on the encoder; with a LoRA adapter for `updates: lora`."""
    from nlu.model.joint import JointModel, build_model

    student = cfg.student
    tokenizer: Tokenizer
    if student.finetune.init_from:
        model, folder = JointModel.load(student.finetune.init_from)
        tokenizer = folder.tokenizer
    else:
        import torch

        # The heads' initial weights: the same for the same seed, whatever ran before here.
        with torch.random.fork_rng():
            torch.manual_seed(student.seed)
            model, tokenizer = build_model(
                encoder=student.model.encoder,
                skills=labels,
                pooling=student.model.pooling,
                dropout=student.model.dropout,
                router_input=student.model.router_input,
            )
    if cfg.federation.updates in ("lora", "lora_b"):
        import torch

        from nlu.model import adapters

        # Seeded: with lora_b the A matrices never travel, so each machine must build the same.
        with torch.random.fork_rng():
            torch.manual_seed(student.seed)
            adapters.wrap_for_training(
                model, rank=student.finetune.lora_rank, modules=student.finetune.lora_modules
            )
        if cfg.federation.updates == "lora_b":
            for name, param in model.encoder.named_parameters():
                if ".lora_A." in name:
                    param.requires_grad_(False)
    return model, tokenizer


def frozen_digest(model: JointModel) -> str:
    """A fingerprint of the LoRA A matrices that lora_b keeps at home ("" without them): the
    server sends its own, so a machine that built different ones stops instead of averaging
    B matrices that mean something else there."""
    import hashlib

    frozen = [
        (name, param)
        for name, param in sorted(model.named_parameters())
        if ".lora_A." in name and not param.requires_grad
    ]
    if not frozen:
        return ""
    digest = hashlib.sha256()
    for name, param in frozen:
        digest.update(name.encode())
        digest.update(param.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


HEAD_PREFIXES = ("router.", "intent_heads.", "slot_heads.")


def shared_arrays(model: JointModel) -> dict[str, torch.Tensor]:
    """The arrays that travel: every floating-point tensor of the model (buffers of token ids
    stay home); with LoRA updates only the adapters that train and the heads (the frozen
    encoder, and lora_b's frozen A matrices, are the same on every machine)."""
    state = {k: v.detach() for k, v in model.state_dict().items() if v.is_floating_point()}
    if any(".lora_" in k for k in state):
        frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
        state = {
            k: v
            for k, v in state.items()
            if (".lora_" in k and k not in frozen) or k.startswith(HEAD_PREFIXES)
        }
    return state


def load_arrays(model: JointModel, arrays: ArrayRecord) -> None:
    import torch

    state = {k: torch.from_numpy(a.numpy().copy()) for k, a in arrays.items()}
    # A quadratic router's curvature comes with the arrays to evaluate, not those to train.
    model.router.set_curvature(state.pop("router.curvature", None))
    missing = set(shared_arrays(model)) - set(state) - {"router.curvature"}
    if missing:
        raise FederationError(f"the server's arrays lack {sorted(missing)[:3]}")
    model.load_state_dict(state, strict=False)
