"""Distillation: fuse black-box teachers into one joint model, or compress a large one.

`distill(cfg)` runs the training recipe's stages with teacher targets instead of (or beside)
gold labels:

1. open the teachers (`nlu.teachers`) and fuse their label spaces into the student's, checking
   every mapping before anything is asked (a label with no counterpart, or two teachers that
   claim one skill with different label sets, is an error naming them);
2. read the transfer texts (each teacher owner's own texts, plus shared texts asked of every
   teacher) and ask the teachers, through the on-disk answer cache;
3. turn answers into targets: the router's from which teacher claims the text and how
   confidently, the intents' from the claiming teacher's distribution, the slots' per student
   word through character offsets (a teacher with another tokenizer still lines up; a word
   the teacher has no distribution for takes the tag of its spans, derived by the one
   offset -> tag function);
4. train the student with `nlu.train.fit`, the loss `(1 - alpha) * hard + alpha * soft`: hard
   cross-entropy on gold labels where given and on the teachers' top answers elsewhere, soft
   temperature-scaled KL to the teachers' distributions.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from torch.nn import functional as F

from nlu.alignment import Encoding, Tokenizer, encode, spans_to_tags
from nlu.config import ConfigError, TrainConfig, make_config, read_values
from nlu.labels import LabelIndex, SkillLabels
from nlu.schema import DataError, Example, Span, raise_collected
from nlu.teachers import Answer, Teacher, TeacherConfig, TeacherError, ask_all, open_teacher
from nlu.text import text_problem

if typing.TYPE_CHECKING:
    from nlu.model import JointOutput
    from nlu.train import TrainResult

logger = logging.getLogger(__name__)

Unclaimed = Literal["negative", "drop"]


@dataclass
class KDConfig:
    # Shared transfer texts asked of every teacher: text files (one per line), JSONL or any
    # data source (its train split; labels ignored).
    transfer: list[str] = field(default_factory=list)
    # Weight of the soft (teacher distribution) loss; the hard labels (gold where given, else
    # the teachers' top answers) take 1 - alpha.
    alpha: float = 0.5
    # Softens teacher and student distributions alike (Hinton et al. 2015); the soft loss is
    # scaled by temperature^2 so its gradients keep their size.
    temperature: float = 2.0
    # A shared text whose best claim is below this is unclaimed: an out-of-scope example
    # ("negative") or left out ("drop", counted in the log).
    min_claim: float = 0.5
    unclaimed: Unclaimed = "negative"
    cache_dir: str = "runs/teacher_cache"


@dataclass
class DistillConfig:
    teachers: list[TeacherConfig]
    kd: KDConfig = field(default_factory=KDConfig)
    # The student: encoder, optimiser, multi-task, output ... as for `nlu train`. Its `data`
    # is optional gold (labelled) data, `dev_data` labelled dev data for model selection (else
    # a `dev_fraction` share of the teacher-labelled texts).
    student: TrainConfig = field(default_factory=TrainConfig)


KD_KEYS = {f.name for f in dataclasses.fields(KDConfig)}
TEACHER_KEYS = {f.name for f in dataclasses.fields(TeacherConfig)}


def _kd_value(key: str, value: Any) -> Any:
    hint = typing.get_type_hints(KDConfig)[key]
    if hint == list[str]:
        return [v for v in value.split(",") if v] if isinstance(value, str) else list(value)
    if typing.get_origin(hint) is Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{key}={value!r}; one of {', '.join(typing.get_args(hint))}")
        return value
    try:
        return hint(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be {hint.__name__}, got {value!r}") from None


def teacher_config(row: Any, *, source: str) -> TeacherConfig:
    if not isinstance(row, Mapping) or "name" not in row or "kind" not in row:
        raise ConfigError(f"{source}: each teacher is a mapping with at least name and kind")
    unknown = sorted(set(row) - TEACHER_KEYS)
    if unknown:
        raise ConfigError(
            f"{source}: teacher {row['name']}: unknown key {unknown[0]!r}; known: "
            f"{', '.join(sorted(TEACHER_KEYS))}"
        )
    values = dict(row)
    for key in ("texts",):
        if isinstance(values.get(key), str):
            values[key] = [values[key]]
    return TeacherConfig(**values)


def make_distill_config(values: Mapping[str, Any], *, source: str) -> DistillConfig:
    values = dict(values)
    rows = values.pop("teachers", None)
    if not isinstance(rows, list) or not rows:
        raise ConfigError(f"{source}: `teachers:` must list at least one teacher")
    teachers = [teacher_config(r, source=source) for r in rows]
    names = [t.name for t in teachers]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: teacher names must be unique, got {names}")
    kd_values = dict(values.pop("kd", None) or {})
    for key in list(values):
        if key in KD_KEYS:
            kd_values[key] = values.pop(key)
        elif key.startswith("kd."):
            kd_values[key[3:]] = values.pop(key)
    unknown = sorted(set(kd_values) - KD_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown key kd.{unknown[0]}; known: {sorted(KD_KEYS)}")
    kd = KDConfig(**{k: _kd_value(k, v) for k, v in kd_values.items()})
    if not 0.0 <= kd.alpha <= 1.0 or kd.temperature <= 0 or not 0.0 <= kd.min_claim <= 1.0:
        raise ConfigError(
            f"{source}: alpha and min_claim are in [0, 1] and temperature > 0 (got alpha="
            f"{kd.alpha}, temperature={kd.temperature}, min_claim={kd.min_claim})"
        )
    values.setdefault("data", [])  # gold data is optional here
    student = make_config(values, source=source)
    return DistillConfig(teachers=teachers, kd=kd, student=student)


def load_distill_config(path: str | Path, overrides: Sequence[str] = ()) -> DistillConfig:
    return make_distill_config(read_values(path, overrides), source=str(path))


def dump_distill_config(cfg: DistillConfig) -> str:
    # Student keys at the top level, as `nlu train` saves them: the model folder's config
    # reads back with nlu.config.parse_config (which skips `teachers` and `kd`).
    student = dataclasses.asdict(cfg.student)
    return yaml.safe_dump(
        {
            **student,
            "kd": dataclasses.asdict(cfg.kd),
            "teachers": [dataclasses.asdict(t) for t in cfg.teachers],
        },
        sort_keys=False,
    )


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


# -- the recipe ------------------------------------------------------------------------------------


@dataclass
class Transfer:
    """The teacher-labelled training set."""

    targets: list[Target]
    counts: dict[str, int]
    # The student's tokenization of every transfer text (batches need its word positions).
    encodings: dict[str, Encoding]


def label_transfer(
    cfg: DistillConfig,
    teachers: Sequence[Teacher],
    maps: Mapping[str, LabelMap],
    index: LabelIndex,
    tokenizer: Tokenizer,
    max_length: int,
) -> Transfer:
    """Ask the teachers (through the cache) and build the targets of every transfer text."""
    cache = Path(cfg.kd.cache_dir)
    owned: dict[str, str] = {}
    contested: dict[str, set[str]] = {}
    for teacher in teachers:
        for source in teacher.config.texts:
            for text in read_texts(source):
                first = owned.setdefault(text, teacher.name)
                if first != teacher.name:
                    contested.setdefault(text, {first}).add(teacher.name)
    if contested:
        text, names = next(iter(contested.items()))
        logger.warning(
            "%d texts are in several owners' texts; each goes to the first teacher listed "
            "(e.g. %r: %s)",
            len(contested),
            text,
            ", ".join(sorted(names)),
        )
    shared = [t for source in cfg.kd.transfer for t in read_texts(source) if t not in owned]
    shared = list(dict.fromkeys(shared))
    if not owned and not shared:
        raise ConfigError(
            "no transfer texts: give teachers their owners' `texts:` and/or shared `transfer:` "
            "sources"
        )
    answers: dict[str, dict[str, Answer]] = {}
    for teacher in teachers:
        mine = [t for t, owner in owned.items() if owner == teacher.name] + shared
        for text, answer in ask_all(teacher, mine, cache).items():
            answers.setdefault(text, {})[teacher.name] = answer
    texts = list(owned) + shared
    encodings = encode(tokenizer, texts, max_length)
    targets, counts = [], {"owned": len(owned), "shared": len(shared), "unclaimed": 0, "dropped": 0}
    for text, enc in zip(texts, encodings, strict=True):
        target = build_target(
            text, enc, answers[text], maps, index, owned=text in owned, min_claim=cfg.kd.min_claim
        )
        if target.router is None:
            counts["unclaimed"] += 1
            if cfg.kd.unclaimed == "drop":
                counts["dropped"] += 1
                continue
        targets.append(target)
    logger.info("transfer set: %s", counts)
    return Transfer(targets, counts, dict(zip(texts, encodings, strict=True)))


def distill(cfg: DistillConfig) -> TrainResult:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from nlu.calibrate import fit_out_of_scope
    from nlu.data.loaders import TrainData, load_split, load_train_dev, random_split
    from nlu.model import check_encoder
    from nlu.mtl import LossWeighting
    from nlu.train import fit, setup_batches, setup_model, setup_optimizer, setup_run

    def load_dev(source: str) -> list[Example]:
        return load_split(source, "dev", seed=student.seed).examples

    student = cfg.student
    if student.finetune.init_from:
        raise ConfigError("distillation trains a new student; init_from is not supported here")
    resolved = dump_distill_config(cfg)
    run = setup_run(student.output)
    check_encoder(student.model.encoder)
    teachers = [open_teacher(t) for t in cfg.teachers]
    maps = {t.name: label_map(t) for t in teachers}
    gold = load_train_dev(student.data, seed=student.seed) if student.data.data else None
    labels = student_labels(teachers, maps, gold.labels if gold else [])

    accelerator = Accelerator(
        mixed_precision=student.optim.mixed_precision,
        gradient_accumulation_steps=student.optim.gradient_accumulation_steps,
    )
    set_seed(student.seed)
    if accelerator.is_main_process:
        run.root.mkdir(parents=True, exist_ok=True)
        (run.root / "config.yaml").write_text(resolved)
    empty = TrainData(train=[], dev=[], labels=labels)
    setup = setup_model(
        student.model,
        student.finetune,
        empty,
        label_smoothing=student.optim.label_smoothing,
        orthogonality_weight=student.mtl.orthogonality_weight,
    )
    index = setup.model.index
    # The main process asks the teachers and fills the cache; the others then read it.
    with accelerator.main_process_first():
        transfer = label_transfer(cfg, teachers, maps, index, setup.tokenizer, setup.max_length)
    targets = transfer.targets
    # Labelled dev data selects the epoch: the gold data's own dev split or dev_data.
    dev = list(gold.dev) if gold else [e for s in student.data.dev_data for e in load_dev(s)]
    if not dev:
        kept, held = random_split(targets, student.data.dev_fraction, student.seed)
        targets, dev = kept, [t.example for t in held]
        logger.info("dev: %d teacher-labelled texts held out (no labelled dev data)", len(dev))
    if gold:
        targets = with_gold(targets, gold.train, index, setup.tokenizer, setup.max_length)
    examples = [t.example for t in targets]
    known = transfer.encodings  # gold-only texts are the ones not tokenized yet
    new = list(dict.fromkeys(e.text for e in examples if e.text not in known))
    if new:
        known.update(zip(new, encode(setup.tokenizer, new, setup.max_length), strict=True))
    soft = SoftTargets(targets, [known[e.text] for e in examples], index)

    loader, sampler = setup_batches(
        examples,
        setup,
        batch_size=student.optim.batch_size,
        mtl=student.mtl,
        epochs=student.optim.epochs,
        seed=student.seed,
        extra=soft.batch,
    )
    weighting = LossWeighting.from_config(
        student.mtl,
        setup.model.task_names(),
        train_router=True,
        negatives=any(not e.in_scope for e in examples),
    )
    optimizer, scheduler = setup_optimizer(
        student.optim, setup.model, weighting, steps_per_epoch=len(loader)
    )
    result = fit(
        accelerator,
        setup,
        loader,
        sampler,
        optimizer,
        scheduler,
        weighting,
        dev=dev,
        optim=student.optim,
        run=run,
        keep_checkpoints=student.output.keep_checkpoints,
        training_config=resolved,
        distill=mixed_loss(index, cfg.kd),
    )
    if accelerator.is_main_process:
        detector = fit_out_of_scope(student.ood, run.model_dir, examples, dev, seed=student.seed)
        result.out_of_scope = detector.report if detector else None
        summary = {k: str(v) if isinstance(v, Path) else v for k, v in result.__dict__.items()}
        summary["transfer"] = transfer.counts
        (run.root / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    accelerator.end_training()
    return result
