"""Multi-task controls: which skill's examples a batch draws, and how task losses are weighted.

Tasks are the router plus, per skill, its intent and its slot task (`router`, `intent/<skill>`,
`slot/<skill>`). Every example still reaches its own skill's heads; these controls only change
how often a skill is seen (sampling) and how much each task's loss counts (weighting).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Sampler

from nlu.config import MultiTaskConfig, Sampling, Weighting, choices
from nlu.model.losses import TaskLosses

SAMPLING = choices(Sampling)
WEIGHTING = choices(Weighting)


def skill_probabilities(
    sizes: Sequence[int], *, strategy: str, temperature: float, epoch: int, epochs: int
) -> list[float]:
    """Probability of drawing each skill in `epoch` (0-based).

    proportional: p ∝ n; temperature: p ∝ n^(1/T); uniform: p = 1/K; annealed (Stickland &
    Murray, BERT and PALs): p ∝ n^α with α = 1 − 0.8·epoch/(epochs − 1), from proportional
    towards uniform over training.
    """
    if strategy not in SAMPLING:
        raise ValueError(f"sampling must be one of {SAMPLING}, not {strategy!r}")
    if strategy == "proportional":
        alpha = 1.0
    elif strategy == "temperature":
        if temperature <= 0:
            raise ValueError(f"sampling_temperature must be > 0, not {temperature}")
        alpha = 1.0 / temperature
    elif strategy == "uniform":
        alpha = 0.0
    else:
        alpha = 1.0 - 0.8 * epoch / max(1, epochs - 1)
    weights = [n**alpha if n > 0 else 0.0 for n in sizes]
    total = sum(weights)
    return [w / total for w in weights]


class SkillSampler(Sampler[int]):
    """Example indices for one epoch of `len(skill_of)` draws.

    Proportional sampling is a plain shuffle (every example once per epoch). Otherwise each
    draw picks a skill with its probability, then that skill's next example from its own
    shuffled order, which restarts when used up: small skills repeat, large ones are subsampled.
    Deterministic given (seed, epoch), so resumed runs see the same order.
    """

    def __init__(
        self,
        skill_of: Sequence[int],
        *,
        strategy: str,
        temperature: float,
        epochs: int,
        seed: int,
    ) -> None:
        self.skill_of = list(skill_of)
        self.strategy = strategy
        self.temperature = temperature
        self.epochs = epochs
        self.seed = seed
        self.epoch = 0
        self.members: dict[int, list[int]] = defaultdict(list)
        for index, skill in enumerate(self.skill_of):
            self.members[skill].append(index)
        self.skills = sorted(self.members)
        skill_probabilities(  # validate the strategy now, not at the first epoch
            [1], strategy=strategy, temperature=temperature, epoch=0, epochs=epochs
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def probabilities(self) -> dict[int, float]:
        p = skill_probabilities(
            [len(self.members[k]) for k in self.skills],
            strategy=self.strategy,
            temperature=self.temperature,
            epoch=self.epoch,
            epochs=self.epochs,
        )
        return dict(zip(self.skills, p, strict=True))

    def __len__(self) -> int:
        return len(self.skill_of)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.strategy == "proportional" or len(self.skills) == 1:
            # One skill: every strategy is the same distribution; keep the plain shuffle.
            yield from torch.randperm(len(self.skill_of), generator=generator).tolist()
            return
        p = self.probabilities()
        draws = torch.multinomial(
            torch.tensor([p[k] for k in self.skills]), len(self), True, generator=generator
        ).tolist()
        orders: dict[int, list[int]] = {}
        cursor: dict[int, int] = defaultdict(int)
        for draw in draws:
            skill = self.skills[draw]
            members = self.members[skill]
            if skill not in orders or cursor[skill] == len(members):
                perm = torch.randperm(len(members), generator=generator).tolist()
                orders[skill], cursor[skill] = [members[i] for i in perm], 0
            yield orders[skill][cursor[skill]]
            cursor[skill] += 1


class LossWeighting(nn.Module):
    """The one place where task losses become the training loss.

    Combines per-task losses: Σ_t share_t · w_t · L_t (+ Kendall's regulariser). share_t is the
    task's share of the batch (examples for router and intents, labelled tokens for slots), so
    with every w_t = 1 this equals the plain joint loss, whatever the weighting.

    static: router/intent/slot weights on the plain joint loss of each kind. uncertainty
    (Kendall, Gal & Cipolla 2018): a learned log-variance s_t per task, term exp(−s_t)·L_t +
    s_t. dwa (Liu, Johns & Davison 2019, dynamic weight average): w_t = T·softmax(r_t/τ), r_t =
    mean loss of the last period over the one before; the paper's period is an epoch, ours is
    `period` optimizer steps because CPU runs last few epochs.

    Its state is checkpointed with the run: the learned log-variances as parameters of a
    prepared model, DWA's running means and weights in `self.dwa`, which the recipe registers
    with `accelerator.register_for_checkpointing`.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        strategy: str,
        static: dict[str, float],
        dwa_temperature: float = 2.0,
        period: int = 100,
    ) -> None:
        super().__init__()
        if strategy not in WEIGHTING:
            raise ValueError(f"loss_weighting must be one of {WEIGHTING}, not {strategy!r}")
        self.tasks = list(tasks)
        self.strategy = strategy
        self.kind_weights = dict(static)
        self.static = [static.get(t.split("/")[0], 1.0) for t in self.tasks]
        self.dwa_temperature = dwa_temperature
        self.period = period
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)), requires_grad=False)
        if strategy == "uncertainty":
            self.log_vars.requires_grad_(True)
        self.dwa = DWAState(len(self.tasks))
        self.position = {t: i for i, t in enumerate(self.tasks)}

    @classmethod
    def from_config(
        cls,
        cfg: MultiTaskConfig,
        tasks: Sequence[str],
        *,
        train_router: bool = True,
        negatives: bool = False,
    ) -> LossWeighting:
        """`train_router=False` (a single skill's data): the router's loss is left out.
        `negatives`: the data has out-of-scope examples (the "oos" task)."""
        routed = [t for t in tasks if train_router or t != "router"]
        return cls(
            routed + (["oos"] if negatives and train_router else []),
            strategy=cfg.loss_weighting,
            static={
                "router": cfg.router_loss_weight if train_router else 0.0,
                "intent": cfg.intent_loss_weight,
                "slot": cfg.slot_loss_weight,
                "oos": cfg.oos_loss_weight if train_router else 0.0,
            },
            dwa_temperature=cfg.dwa_temperature,
            period=cfg.dwa_period,
        )

    def forward(self, losses: TaskLosses) -> torch.Tensor:
        if self.strategy == "static":
            kinds, w = losses.by_kind, self.kind_weights
            total = (
                w["router"] * kinds["router"]
                + w["intent"] * kinds["intent"]
                + w["slot"] * kinds["slot"]
            )
            if "oos" in kinds:  # only batches with out-of-scope rows have this loss
                total = total + w.get("oos", 1.0) * kinds["oos"]
            return total
        tasks = {t: v for t, v in losses.by_task.items() if t in self.position}
        total = next(iter(tasks.values()))[0].new_zeros(())
        for task, (loss, share) in tasks.items():
            i = self.position[task]
            if self.strategy == "uncertainty":
                term = torch.exp(-self.log_vars[i]) * loss + self.log_vars[i]
            else:
                term = self.dwa.weights[i] * loss
                self.dwa.sums[i] += float(loss.detach())
                self.dwa.counts[i] += 1
            total = total + share * term
        return total

    def step(self) -> None:
        """Call once per optimizer step; DWA updates its weights at the end of each period."""
        if self.strategy == "dwa":
            self.dwa.step(period=self.period, temperature=self.dwa_temperature)

    def effective_weights(self) -> dict[str, float]:
        if self.strategy == "uncertainty":
            values = torch.exp(-self.log_vars.detach()).tolist()
        elif self.strategy == "dwa":
            values = self.dwa.weights
        else:
            values = self.static
        return {t: round(float(v), 4) for t, v in zip(self.tasks, values, strict=True)}


class DWAState:
    """Dynamic weight average's running state: per task the current weight, the loss sums and
    counts of this period, and the previous period's mean. A checkpointable object
    (`state_dict` / `load_state_dict`), so resume continues the weighting exactly."""

    def __init__(self, tasks: int) -> None:
        self.weights = [1.0] * tasks
        self.sums = [0.0] * tasks
        self.counts = [0] * tasks
        self.previous: list[float | None] = [None] * tasks
        self.steps = 0

    def step(self, *, period: int, temperature: float) -> None:
        self.steps += 1
        if self.steps % period:
            return
        means = [s / c if c else None for s, c in zip(self.sums, self.counts, strict=True)]
        ratios = [
            m / p if m is not None and p else 1.0 for m, p in zip(means, self.previous, strict=True)
        ]
        if any(p is not None for p in self.previous):
            exps = [math.exp(r / temperature) for r in ratios]
            self.weights = [len(exps) * e / sum(exps) for e in exps]
        pairs = zip(means, self.previous, strict=True)
        self.previous = [m if m is not None else p for m, p in pairs]
        self.sums = [0.0] * len(self.sums)
        self.counts = [0] * len(self.counts)

    def state_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
