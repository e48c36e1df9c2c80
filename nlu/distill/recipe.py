"""Distillation: fuse black-box teachers into one joint model, or compress a large one.

`distill(cfg)` runs the training recipe's stages with teacher targets instead of (or beside)
gold labels:

1. open the teachers (`nlu.distill.teachers`) and fuse their label spaces into the student's,
   checking every mapping before anything is asked (a label with no counterpart, or two
   teachers that claim one skill with different label sets, is an error naming them);
2. read the transfer texts (each teacher owner's own texts, plus shared texts asked of every
   teacher) and ask the teachers, through the on-disk answer cache;
3. turn answers into targets: the router's from which teacher claims the text and how
   confidently, the intents' from the claiming teacher's distribution, the slots' per student
   word through character offsets (a teacher with another tokenizer still lines up; a word
   the teacher has no distribution for takes the tag of its spans, derived by the one
   offset -> tag function);
4. train the student with the training engine's `fit`, the loss
   `(1 - alpha) * hard + alpha * soft`: hard cross-entropy on gold labels where given and on
   the teachers' top answers elsewhere, soft temperature-scaled KL to the teachers'
   distributions.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nlu.config import ConfigError, dump
from nlu.distill.answers import Answer, Teacher
from nlu.distill.cache import ask_all
from nlu.distill.teachers import open_teacher
from nlu.labels import LabelIndex
from nlu.model.alignment import Encoding, Tokenizer, encode
from nlu.schema import Example

if typing.TYPE_CHECKING:
    from nlu.data.loaders import TrainData
    from nlu.training.engine import ModelSetup, TrainResult

from nlu.distill.config import DistillConfig
from nlu.distill.targets import (
    LabelMap,
    SoftTargets,
    Target,
    build_target,
    label_map,
    mixed_loss,
    read_texts,
    student_labels,
    with_gold,
)

logger = logging.getLogger(__name__)


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
    from nlu.data.loaders import TrainData, load_train_dev
    from nlu.model.encoders import check_encoder
    from nlu.training.engine import setup_model, train_model
    from nlu.training.run import finish_run, start_run
    from nlu.training.rundir import setup_run

    student = cfg.student
    resolved = dump(cfg)
    run_dir = setup_run(student.output)
    check_encoder(student.model.encoder)
    teachers = [open_teacher(t) for t in cfg.teachers]
    maps = {t.name: label_map(t) for t in teachers}
    gold = load_train_dev(student.data, seed=student.seed) if student.data.data else None
    labels = student_labels(teachers, maps, gold.labels if gold else [])

    run = start_run(run_dir, student, resolved=resolved)
    empty = TrainData(train=[], dev=[], labels=labels)
    setup = setup_model(student, empty)
    index = setup.model.index
    # The main process asks the teachers and fills the cache; the others then read it.
    with run.accelerator.main_process_first():
        transfer = label_transfer(cfg, teachers, maps, index, setup.tokenizer, setup.max_length)
    examples, dev, soft = training_targets(cfg, transfer, gold, setup)
    result = train_model(
        run, setup, examples, dev, extra=soft.batch, loss_hook=mixed_loss(index, cfg.kd)
    )
    return finish_run(
        run, setup, result, fit_on=(examples, dev), summary={"transfer": transfer.counts}
    )


def training_targets(
    cfg: DistillConfig, transfer: Transfer, gold: TrainData | None, setup: ModelSetup
) -> tuple[list[Example], list[Example], SoftTargets]:
    """The student's examples (teacher targets, with the gold ones where given), the dev
    examples that select its epoch, and the soft targets batched beside them."""
    from nlu.data.loaders import load_split, random_split

    student, index = cfg.student, setup.model.index
    targets = transfer.targets
    # Labelled dev data selects the epoch: the gold data's own dev split or dev_data.
    dev = list(gold.dev) if gold else []
    for source in [] if gold else student.data.dev_data:
        dev += load_split(source, "dev", seed=student.seed).examples
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
    return examples, dev, SoftTargets(targets, [known[e.text] for e in examples], index)
