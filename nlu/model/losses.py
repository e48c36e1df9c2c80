"""The joint model's task losses: the router's (outlier exposure for out-of-scope texts), each
skill's intent and slot cross-entropies, kept apart for the multi-task weighting."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from nlu.labels import LabelIndex
from nlu.model.alignment import IGNORE_INDEX

logger = logging.getLogger(__name__)


@dataclass
class TaskLosses:
    """The losses of one batch, before any weighting (`nlu.training.mtl.LossWeighting`
    combines them).

    by_task: per task ("router", "intent/<skill>", "slot/<skill>") its mean loss and its share
    of the batch (examples, or labelled tokens for slots), so Σ share · loss is the plain joint
    loss. by_kind: that plain joint loss per kind ("router", "intent", "slot").
    """

    by_task: dict[str, tuple[torch.Tensor, float]]
    by_kind: dict[str, torch.Tensor]


def task_losses(
    *,
    index: LabelIndex,
    router_logits: torch.Tensor,
    router_targets: torch.Tensor,
    intent_logits: torch.Tensor,
    slot_logits: torch.Tensor,
    skill_ids: torch.Tensor,
    intent_labels: torch.Tensor,
    slot_labels: torch.Tensor,
    label_smoothing: float = 0.0,
) -> TaskLosses:
    """Cross-entropies where each example is scored only against its own skill's labels (and
    smoothed over them only). The router may see other rows than the heads (add-skill trains
    it on replayed examples of the old skills too).

    Out-of-scope rows (target -100) train only the router, towards a uniform distribution over
    the skills (outlier exposure, Hendrycks et al. 2019): the "oos" task."""
    in_scope = router_targets != IGNORE_INDEX
    n_in = int(in_scope.sum())
    if n_in == len(router_targets):
        router_loss = F.cross_entropy(
            router_logits, router_targets, label_smoothing=label_smoothing
        )
    elif n_in:
        router_loss = F.cross_entropy(
            router_logits[in_scope], router_targets[in_scope], label_smoothing=label_smoothing
        )
    else:
        router_loss = router_logits.new_zeros(())
    labelled = (slot_labels != IGNORE_INDEX).sum().clamp(min=1)
    tasks: dict[str, tuple[torch.Tensor, float]] = {
        "router": (router_loss, n_in / len(router_targets))
    }
    kinds: dict[str, torch.Tensor] = {}
    if n_in < len(router_targets):
        log_probs = F.log_softmax(router_logits[~in_scope], dim=-1)
        # KL(uniform || router): cross-entropy to the uniform distribution less its entropy,
        # so a perfectly undecided router scores 0 (same gradient).
        kinds["oos"] = -log_probs.mean(-1).mean() - math.log(router_logits.shape[-1])
        tasks["oos"] = (kinds["oos"], 1 - n_in / len(router_targets))
    rows_in = max(1, int((skill_ids != IGNORE_INDEX).sum()))
    intent_sum = router_logits.new_zeros(())
    slot_sum = router_logits.new_zeros(())
    for k in skill_ids.unique().tolist():
        if k == IGNORE_INDEX:
            continue
        rows = skill_ids == k
        name = index.names[k]
        intents = intent_logits[rows][:, index.intent_slices[k]]
        intent_k = F.cross_entropy(
            intents, intent_labels[rows], reduction="sum", label_smoothing=label_smoothing
        )
        tags = slot_logits[rows][:, :, index.tag_slices[k]]
        slot_k = F.cross_entropy(
            tags.reshape(-1, tags.shape[-1]),
            slot_labels[rows].reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
            label_smoothing=label_smoothing,
        )
        n_rows = int(rows.sum())
        n_tokens = int((slot_labels[rows] != IGNORE_INDEX).sum())
        tasks[f"intent/{name}"] = (intent_k / n_rows, n_rows / rows_in)
        if n_tokens:
            tasks[f"slot/{name}"] = (slot_k / n_tokens, n_tokens / float(labelled))
        intent_sum = intent_sum + intent_k
        slot_sum = slot_sum + slot_k
    # Plain joint loss per kind; an "oos" entry only when the batch has out-of-scope rows.
    kinds = {
        "router": router_loss,
        "intent": intent_sum / rows_in,
        "slot": slot_sum / labelled,
        **kinds,
    }
    return TaskLosses(by_task=tasks, by_kind=kinds)
