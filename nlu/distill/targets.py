"""The student's label space fused from the teachers', the transfer texts, and the targets:
teachers' answers turned into soft and hard targets over the student's labels, batched
beside the gold ones, and the loss that mixes them."""

from __future__ import annotations

import dataclasses
import logging
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from nlu.distill.answers import Answer, Teacher, TeacherError
from nlu.labels import LabelIndex, SkillLabels
from nlu.model.alignment import Encoding, Tokenizer, encode, spans_to_tags
from nlu.schema import DataError, Example, Span, raise_collected
from nlu.text import text_problem

if typing.TYPE_CHECKING:
    from nlu.model.joint import JointOutput
from nlu.distill.config import KDConfig

logger = logging.getLogger(__name__)


# -- stage: the student's label space --------------------------------------------------------------


@dataclass
class LabelMap:
    """One teacher's labels -> the student's (None: dropped on purpose)."""

    skills: dict[str, str | None]
    intents: dict[tuple[str, str], str | None]
    slots: dict[str, str | None]

    def intent(self, skill: str, intent: str, teacher: str) -> str | None:
        try:
            return self.intents[(skill, intent)]
        except KeyError:
            raise TeacherError(
                f"teacher {teacher} answered intent {intent!r} of skill {skill!r}, which it did "
                "not declare; add it to its labels (or map it in intents:)"
            ) from None

    def slot(self, slot: str, teacher: str) -> str | None:
        try:
            return self.slots[slot]
        except KeyError:
            raise TeacherError(
                f"teacher {teacher} answered slot {slot!r}, which it did not declare; add it to "
                "its labels (or map it in slots:)"
            ) from None


def label_map(teacher: Teacher) -> LabelMap:
    """The teacher's renames applied to the labels it speaks; a rename of a label it does not
    speak is an error (a typo would otherwise be silently ignored)."""
    config = teacher.config
    spoken_intents = {(s, i) for s, (intents, _) in teacher.labels.items() for i in intents}
    spoken_slots = {slot for _, slots in teacher.labels.values() for slot in slots}
    for kind, renames, spoken in (
        ("skills", config.skills, set(teacher.labels)),
        (
            "intents",
            config.intents,
            {i for _, i in spoken_intents} | {f"{s}/{i}" for s, i in spoken_intents},
        ),
        ("slots", config.slots, spoken_slots),
    ):
        stray = sorted(set(renames) - spoken)
        if stray:
            raise TeacherError(
                f"teacher {teacher.name}: {kind} maps {stray[0]!r}, which the teacher does not "
                f"answer with (it knows: {', '.join(sorted(spoken))[:300]})"
            )
    intents: dict[tuple[str, str], str | None] = {}
    for s, i in spoken_intents:
        key = f"{s}/{i}"
        intents[(s, i)] = config.intents[key] if key in config.intents else config.intents.get(i, i)
    return LabelMap(
        skills={s: config.skills.get(s, s) for s in teacher.labels},
        intents=intents,
        slots={slot: config.slots.get(slot, slot) for slot in spoken_slots},
    )


def student_labels(
    teachers: Sequence[Teacher], maps: Mapping[str, LabelMap], gold: Sequence[SkillLabels]
) -> list[SkillLabels]:
    """The student's skills: gold data's plus every teacher's (mapped). A teacher label with no
    counterpart in a gold skill, or two teachers claiming one skill with different label sets,
    is an error before any teacher is asked."""
    by_skill: dict[str, SkillLabels] = {s.name: s for s in gold}
    owner: dict[str, str] = {s.name: "the gold data" for s in gold}
    for teacher in teachers:
        lmap = maps[teacher.name]
        for skill, (intents, slots) in teacher.labels.items():
            target = lmap.skills[skill]
            if target is None:
                continue
            mapped_intents = sorted(
                {m for i in intents if (m := lmap.intents[(skill, i)]) is not None}
            )
            mapped_slots = sorted({m for s in slots if (m := lmap.slots[s]) is not None})
            known = by_skill.get(target)
            if known is None:
                by_skill[target] = SkillLabels(target, mapped_intents, mapped_slots)
                owner[target] = f"teacher {teacher.name}"
                continue
            if owner[target] == "the gold data":
                extra = [f"intent {i!r}" for i in mapped_intents if i not in known.intents] + [
                    f"slot {s!r}" for s in mapped_slots if s not in known.slots
                ]
                if extra:
                    raise TeacherError(
                        f"teacher {teacher.name}: {extra[0]} of skill {target!r} has no "
                        f"counterpart in the gold data's {target} (intents: "
                        f"{', '.join(known.intents)}; slots: {', '.join(known.slots)}); map it "
                        "with intents:/slots: {teacher label: student label}, or to null to drop it"
                    )
                continue
            if (known.intents, known.slots) != (mapped_intents, mapped_slots):
                diff = sorted(
                    set(known.intents).symmetric_difference(mapped_intents)
                    | set(known.slots).symmetric_difference(mapped_slots)
                )
                raise TeacherError(
                    f"teachers {owner[target].removeprefix('teacher ')} and {teacher.name} both "
                    f"claim skill {target!r} with different label sets (they differ in: "
                    f"{', '.join(diff[:6])}); map both onto one label set or give the skills "
                    "different names"
                )
    return [by_skill[name] for name in sorted(by_skill)]


# -- stage: transfer texts -------------------------------------------------------------------------


def read_texts(source: str) -> list[str]:
    """Texts of a source, labels ignored: a .txt file (one text per line) or any data source
    (its train split). Empty or unreadable texts are errors naming their line."""
    path = Path(source)
    if path.suffix == ".txt":
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        problems, texts = [], []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue  # blank lines separate nothing in a text list
            problem = text_problem(line)
            if problem:
                problems.append(f"{path}:{number}: {problem}")
            texts.append(line.strip())
        raise_collected(problems)
        return texts
    from nlu.data.loaders import load_split

    return [e.text for e in load_split(source, "train").examples]


# -- stage: targets --------------------------------------------------------------------------------


@dataclass
class Target:
    """What the student learns from one text: a hard example (the top answers, or gold) and
    the soft distributions, in the student's label space. router None: out of scope."""

    example: Example
    router: np.ndarray | None
    intent: np.ndarray | None
    tags: np.ndarray | None  # [student words, the skill's tags]


def _normalised(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {k: v / total for k, v in weights.items()} if total > 0 else {}


def mapped_claims(answer: Answer, lmap: LabelMap, teacher: str) -> dict[str, float]:
    """The teacher's claims per student skill. Its intents belong to its top skill: when that
    skill, or its top intent, is dropped (mapped to null), the teacher claims nothing."""
    undeclared = sorted(set(answer.skills) - set(lmap.skills))
    if undeclared:
        raise TeacherError(
            f"teacher {teacher} answered skill {undeclared[0]!r}, which it did not declare "
            f"(it declared: {', '.join(sorted(lmap.skills))})"
        )
    top = answer.top_skill
    if top is None or lmap.skills[top] is None:
        return {}
    if answer.intents:
        best = max(answer.intents, key=answer.intents.__getitem__)
        if lmap.intent(top, best, teacher) is None:
            return {}
    claims: dict[str, float] = {}
    for skill, p in answer.skills.items():
        target = lmap.skills[skill]
        if target is not None and p > 0:
            claims[target] = max(claims.get(target, 0.0), p)
    return claims


def build_target(
    text: str,
    encoding: Encoding,
    answers: Mapping[str, Answer],
    maps: Mapping[str, LabelMap],
    index: LabelIndex,
    *,
    owned: bool,
    min_claim: float,
) -> Target:
    """The student's target for one text from the teachers asked about it."""
    claims = {name: mapped_claims(a, maps[name], name) for name, a in answers.items()}
    best: dict[str, tuple[float, str]] = {}
    for name, by_skill in claims.items():
        for claimed, p in by_skill.items():
            if p > best.get(claimed, (-1.0, ""))[0]:
                best[claimed] = (p, name)
    top = max(best, key=lambda s: best[s][0]) if best else None
    if top is None or (not owned and best[top][0] < min_claim):
        return Target(Example(text, None, None), None, None, None)
    router = np.zeros(len(index.names), dtype=np.float32)
    for name, (p, _) in best.items():
        router[index.position[name]] = p
    router /= router.sum()
    teacher = best[top][1]
    answer, lmap = answers[teacher], maps[teacher]
    skill = index.skill(top)
    source_skill = answer.top_skill or ""
    intents: dict[str, float] = {}
    for name, p in answer.intents.items():
        mapped = lmap.intent(source_skill, name, teacher)
        if mapped is not None:
            intents[mapped] = intents.get(mapped, 0.0) + p
    intents = _normalised(intents)
    if not intents:
        raise TeacherError(f"teacher {teacher} claimed {text!r} for {top} without an intent")
    intent = np.array([intents.get(i, 0.0) for i in skill.intents], dtype=np.float32)
    spans = []
    for start, end, slot in answer.spans:
        mapped = lmap.slot(slot, teacher)
        if mapped is not None:
            spans.append(Span(start, end, mapped))
    try:
        example = Example(text, top, skill.intents[int(intent.argmax())], tuple(sorted(spans)))
    except DataError as err:
        raise TeacherError(
            f"teacher {teacher}: its slot spans do not fit the text: {err}"
        ) from None
    hard = spans_to_tags(encoding.words, example.slots).tags
    tag_ids = index.tag_ids[top]
    tags = np.zeros((len(encoding.words), len(skill.tags)), dtype=np.float32)
    soft = {(w.start, w.end): w.tags for w in answer.words or []}
    for w, (word, tag) in enumerate(zip(encoding.words, hard, strict=True)):
        dist = soft.get(word)
        if dist is None:
            tags[w, tag_ids[tag]] = 1.0
            continue
        for name, p in dist.items():
            mapped_tag = "O"
            if name != "O":
                mapped_slot = lmap.slot(name[2:], teacher)
                mapped_tag = "O" if mapped_slot is None else f"{name[:2]}{mapped_slot}"
            tags[w, tag_ids[mapped_tag]] += p
        tags[w] /= max(tags[w].sum(), 1e-9)
    return Target(example, router, intent, tags)


def gold_target(example: Example, encoding: Encoding, index: LabelIndex) -> Target:
    """Gold labels as one-hot soft targets: the soft loss then pulls towards them too."""
    if not example.in_scope or example.skill is None or example.intent is None:
        return Target(example, None, None, None)
    skill = index.skill(example.skill)
    router = np.zeros(len(index.names), dtype=np.float32)
    router[index.position[skill.name]] = 1.0
    intent = np.zeros(len(skill.intents), dtype=np.float32)
    intent[index.intent_ids[skill.name][example.intent]] = 1.0
    hard = spans_to_tags(encoding.words, example.slots).tags
    tags = np.zeros((len(encoding.words), len(skill.tags)), dtype=np.float32)
    for w, tag in enumerate(hard):
        tags[w, index.tag_ids[skill.name][tag]] = 1.0
    return Target(example, router, intent, tags)


def with_gold(
    targets: Sequence[Target],
    gold: Sequence[Example],
    index: LabelIndex,
    tokenizer: Tokenizer,
    max_length: int,
) -> list[Target]:
    """Gold examples join the teachers' targets. A text both labelled and answered keeps the
    teacher's distributions and takes its hard labels from gold (classic distillation: true
    labels plus the teacher's soft ones), unless gold puts it in another skill than the
    teacher did: then gold alone. Gold texts no teacher answered are one-hot targets."""
    by_text = {e.text: e for e in gold}
    out: list[Target] = []
    for target in targets:
        label = by_text.pop(target.example.text, None)
        if label is None:
            out.append(target)
        elif label.skill is not None and label.skill == target.example.skill:
            out.append(dataclasses.replace(target, example=label))
        else:
            (enc,) = encode(tokenizer, [label.text], max_length)
            out.append(gold_target(label, enc, index))
    rest = list(by_text.values())
    encodings = encode(tokenizer, [e.text for e in rest], max_length)
    out += [gold_target(e, enc, index) for e, enc in zip(rest, encodings, strict=True)]
    return out


# -- stage: batches with soft targets --------------------------------------------------------------


class SoftTargets:
    """Soft targets per training row, padded into a batch beside the hard labels."""

    def __init__(
        self, targets: Sequence[Target], encodings: Sequence[Encoding], index: LabelIndex
    ) -> None:
        self.targets = list(targets)
        self.encodings = list(encodings)
        self.index = index
        self.n_intents = sum(len(s.intents) for s in index.skills)
        self.n_tags = sum(len(s.tags) for s in index.skills)

    def batch(self, rows: Sequence[int], width: int) -> dict[str, torch.Tensor]:
        n = len(rows)
        router = np.zeros((n, len(self.index.names)), dtype=np.float32)
        intent = np.zeros((n, self.n_intents), dtype=np.float32)
        tags = np.zeros((n, width, self.n_tags), dtype=np.float32)
        skill = np.full(n, -1, dtype=np.int64)
        has = np.zeros(n, dtype=bool)
        positions = np.zeros((n, width), dtype=bool)
        for b, row in enumerate(rows):
            target = self.targets[row]
            if target.router is None or target.example.skill is None:
                continue
            k = self.index.position[target.example.skill]
            has[b], skill[b] = True, k
            router[b] = target.router
            if target.intent is not None:
                intent[b, self.index.intent_slices[k]] = target.intent
            if target.tags is not None:
                starts = [p for p in self.encodings[row].word_starts if p < width]
                tags[b, starts, self.index.tag_slices[k]] = target.tags[: len(starts)]
                positions[b, starts] = True
        return {
            "soft_rows": torch.from_numpy(has),
            "soft_skill": torch.from_numpy(skill),
            "soft_router": torch.from_numpy(router),
            "soft_intent": torch.from_numpy(intent),
            "soft_tags": torch.from_numpy(tags),
            "soft_positions": torch.from_numpy(positions),
        }


def _soften(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """p^(1/T), renormalised: the teacher's distribution at temperature T (works from
    probabilities, so black boxes that return no logits soften too)."""
    if temperature == 1.0:
        return p
    logp = torch.log(p.clamp(min=1e-8)) / temperature
    return torch.softmax(logp.masked_fill(p <= 0, -1e4), dim=-1) * (p.sum(-1, keepdim=True) > 0)


def _kl(student_logits: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """Σ KL(target || softmax(logits / T)) over rows (target rows already softened)."""
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    return F.kl_div(log_q, target, reduction="sum")


def kd_loss(
    output: JointOutput, soft: Mapping[str, torch.Tensor], index: LabelIndex, temperature: float
) -> torch.Tensor:
    """The soft loss: router, intent and slot KL to the teachers' distributions, each averaged
    over its rows (tokens for slots), summed, times T^2."""
    assert output.router_logits is not None
    assert output.intent_logits is not None and output.slot_logits is not None
    rows = soft["soft_rows"]
    zero = output.router_logits.new_zeros(())
    if not bool(rows.any()):
        return zero
    T = temperature
    router_t = _soften(soft["soft_router"][rows], T)
    router = _kl(output.router_logits[rows], router_t, T) / int(rows.sum())
    skills = soft["soft_skill"]
    intent, slot = zero, zero
    n_tokens = int(soft["soft_positions"][rows].sum())
    for k in skills[rows].unique().tolist():
        mine = rows & (skills == k)
        i_slice, t_slice = index.intent_slices[k], index.tag_slices[k]
        intent_t = _soften(soft["soft_intent"][mine][:, i_slice], T)
        intent = intent + _kl(output.intent_logits[mine][:, i_slice], intent_t, T)
        where = soft["soft_positions"][mine]
        if bool(where.any()):
            tags_t = _soften(soft["soft_tags"][mine][:, :, t_slice][where], T)
            slot = slot + _kl(output.slot_logits[mine][:, :, t_slice][where], tags_t, T)
    n_rows = int(rows.sum())
    return (router + intent / n_rows + slot / max(n_tokens, 1)) * T * T


def mixed_loss(
    index: LabelIndex, kd: KDConfig
) -> Callable[[JointOutput, Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]:
    def loss(
        output: JointOutput, soft: Mapping[str, torch.Tensor], hard: torch.Tensor
    ) -> torch.Tensor:
        if kd.alpha == 0.0:
            return hard
        return (1 - kd.alpha) * hard + kd.alpha * kd_loss(output, soft, index, kd.temperature)

    return loss
