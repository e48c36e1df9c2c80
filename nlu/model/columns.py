"""The columns of soft parameter sharing (see nlu/sharing.py for what and why)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask

from nlu.model.sharing import Sharing, SharingError

OWN_WEIGHT = 0.9  # mixing weight a column keeps on itself at the start


def initial_mixing(units: int, layers: int) -> torch.Tensor:
    """[layers, units, units]: OWN_WEIGHT on the diagonal, the rest spread evenly."""
    eye = torch.eye(units)
    other = (1.0 - OWN_WEIGHT) / max(units - 1, 1)
    one = eye * OWN_WEIGHT + (1 - eye) * other
    return one.repeat(layers, 1, 1)


class SoftSharedEncoder(nn.Module):
    """Columns of one BERT-style encoder with learned mixing after every layer.

    `forward` returns one last-hidden-state per column and the sluice orthogonality penalty
    (zero for cross-stitch, and outside training)."""

    def __init__(self, encoder: PreTrainedModel, sharing: Sharing) -> None:
        super().__init__()
        layers = getattr(getattr(encoder, "encoder", None), "layer", None)
        if getattr(encoder, "embeddings", None) is None or not isinstance(layers, nn.ModuleList):
            raise SharingError(
                f"soft sharing needs a BERT-style encoder (embeddings + encoder.layer); "
                f"{type(encoder).__name__} is not one: use sharing=hard with it"
            )
        hidden = int(encoder.config.hidden_size)
        if hidden % sharing.subspaces:
            raise SharingError(
                f"subspaces={sharing.subspaces} does not divide the hidden size {hidden}"
            )
        self.sharing = sharing
        self.config = encoder.config
        self.columns = nn.ModuleList(
            [encoder] + [copy.deepcopy(encoder) for _ in range(sharing.columns - 1)]
        )
        self.n_layers = len(layers)
        units = sharing.columns * sharing.subspaces
        self.mixing = nn.Parameter(initial_mixing(units, self.n_layers))
        self.layer_mixing: nn.Parameter | None = None
        if sharing.mode == "sluice":
            # Each column's output: a weighted sum of its embeddings and layer outputs,
            # starting as the last layer alone.
            start = torch.zeros(sharing.columns, self.n_layers + 1)
            start[:, -1] = 1.0
            self.layer_mixing = nn.Parameter(start)

    def mixing_parameters(self) -> list[nn.Parameter]:
        return [self.mixing] + ([self.layer_mixing] if self.layer_mixing is not None else [])

    def _mix(self, states: list[torch.Tensor], weights: torch.Tensor) -> list[torch.Tensor]:
        s = self.sharing.subspaces
        units = torch.stack([part for h in states for part in h.chunk(s, dim=-1)])
        mixed = torch.einsum("ij,j...->i...", weights, units)
        return [torch.cat(list(mixed[k * s : (k + 1) * s]), dim=-1) for k in range(len(states))]

    def _orthogonality(self, states: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """Σ over columns and subspace pairs of ||A^T B||_F^2 / tokens, on real tokens."""
        keep = mask.bool()
        total = states[0].new_zeros(())
        for h in states:
            parts = [p[keep] for p in h.chunk(self.sharing.subspaces, dim=-1)]
            for i in range(len(parts)):
                for j in range(i + 1, len(parts)):
                    total = total + (parts[i].T @ parts[j]).pow(2).sum() / max(len(parts[i]), 1)
        return total

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        columns: Any = self.columns
        states = [column.embeddings(input_ids=input_ids) for column in columns]
        mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=states[0], attention_mask=attention_mask
        )
        history: list[list[torch.Tensor]] = [[h] for h in states]
        penalty = states[0].new_zeros(())
        for layer in range(self.n_layers):
            outputs = []
            for column, h in zip(columns, states, strict=True):
                out = column.encoder.layer[layer](h, attention_mask=mask)
                outputs.append(out[0] if isinstance(out, tuple) else out)
            states = self._mix(outputs, self.mixing[layer])
            if self.layer_mixing is not None:
                for k, h in enumerate(states):
                    history[k].append(h)
                if self.training and self.sharing.subspaces > 1:
                    penalty = penalty + self._orthogonality(states, attention_mask)
        penalty = penalty / max(self.n_layers, 1)
        if self.layer_mixing is None:
            return states, penalty
        outputs = [
            torch.einsum("l,l...->...", self.layer_mixing[k], torch.stack(history[k]))
            for k in range(len(states))
        ]
        return outputs, penalty
