"""Simulation partitions of the data among clients, and the federation's one label space
merged from the clients' label names."""

from __future__ import annotations

import dataclasses
import json
import logging
import typing
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from nlu.labels import SkillLabels
from nlu.schema import Example

if typing.TYPE_CHECKING:
    pass
from nlu.federated.config import FederationConfig, FederationError

logger = logging.getLogger(__name__)

# -- partitions (simulation) -----------------------------------------------------------------------


def partition(
    examples: Sequence[Example], fed: FederationConfig, clients: int, client: int, seed: int
) -> list[Example]:
    """Client `client`'s share of `examples`; a pure function of the examples' labels, so the
    train and dev splits of a source are cut alike and every run cuts the same."""
    if fed.partition == "skill":
        skills = sorted({e.skill for e in examples if e.skill is not None})
        mine = {s for j, s in enumerate(skills) if j % clients == client}
    groups: dict[tuple[str, str], list[int]] = {}
    for i, e in enumerate(examples):
        groups.setdefault((e.skill or "", e.intent or ""), []).append(i)
    out: list[int] = []
    for key in sorted(groups):
        rows = groups[key]
        if fed.partition == "skill" and key[0]:
            out += rows if key[0] in mine else []
            continue
        # One generator per intent: its shares do not depend on which other intents exist.
        rng = np.random.default_rng([seed, zlib.crc32("/".join(key).encode())])
        if fed.partition == "dirichlet":
            shares = rng.dirichlet([fed.dirichlet_alpha] * clients)
        else:  # iid, and the out-of-scope examples of skill partitions
            shares = np.full(clients, 1.0 / clients)
        order = rng.permutation(len(rows))
        cuts = np.concatenate([[0], np.round(np.cumsum(shares) * len(rows)).astype(int)])
        out += [rows[j] for j in order[cuts[client] : cuts[client + 1]]]
    return [examples[i] for i in sorted(out)]


# -- labels ----------------------------------------------------------------------------------------


def merge_labels(
    reported: Mapping[str, Sequence[SkillLabels]],
    *,
    owned: bool,
    fixed: Sequence[SkillLabels] | None = None,
    fixed_from: str = "",
) -> list[SkillLabels]:
    """The federation's label space from each client's label names, checked before round 1.

    `fixed` (a model the federation starts from): every client label must be in it. Else the
    union; where clients own their data (`owned`: deployment, or skill partitions) a skill on
    several clients must carry the same intents and slots on each (its owners share one
    definition), while shards of one data set may miss rare labels."""
    problems: list[str] = []
    if fixed is not None:
        known = {s.name: s for s in fixed}
        for client, skills in reported.items():
            for s in skills:
                if s.name not in known:
                    problems.append(
                        f"{client}: skill {s.name!r} is not in the federation's label space "
                        f"({fixed_from}: {', '.join(sorted(known))})"
                    )
                    continue
                for kind, mine, theirs in (
                    ("intent", s.intents, known[s.name].intents),
                    ("slot", s.slots, known[s.name].slots),
                ):
                    for label in sorted(set(mine) - set(theirs)):
                        problems.append(
                            f"{client}: {kind} {s.name}/{label} is not in the federation's "
                            f"label space ({fixed_from})"
                        )
        if problems:
            raise FederationError("; ".join(problems[:10]))
        return list(fixed)
    first: dict[str, tuple[str, SkillLabels]] = {}
    merged: dict[str, SkillLabels] = {}
    for client, skills in sorted(reported.items()):
        for skill in skills:
            if skill.name not in merged:
                first[skill.name] = (client, skill)
                merged[skill.name] = dataclasses.replace(skill)
                continue
            other, first_labels = first[skill.name]
            if owned:
                for kind, a, b in (
                    ("intents", skill.intents, first_labels.intents),
                    ("slots", skill.slots, first_labels.slots),
                ):
                    if set(a) != set(b):
                        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
                        problems.append(
                            f"skill {skill.name!r} has different {kind} on {client} and {other}: "
                            f"only {client}: {only_a or '-'}, only {other}: {only_b or '-'}"
                        )
            m = merged[skill.name]
            m.intents = sorted(set(m.intents) | set(skill.intents))
            m.slots = sorted(set(m.slots) | set(skill.slots))
    if problems:
        raise FederationError(
            "; ".join(problems[:10])
            + ". A skill's owners must share one label set: give every owner the same skill "
            "definition, or rename one of the skills"
        )
    if not merged:
        raise FederationError("no client holds any labelled example")
    return [merged[name] for name in sorted(merged)]


def labels_to_json(labels: Sequence[SkillLabels]) -> str:
    return json.dumps([s.to_dict() for s in labels])


def labels_from_json(text: str) -> list[SkillLabels]:
    return [SkillLabels.from_dict(row) for row in json.loads(text)]
