"""Load examples from skill folders, JSONL files and JointBERT-style directories.

Every loader returns `nlu.schema.Example`s; `to_dataset` turns them into a `datasets.Dataset`
with columns text, skill, intent, slots (list of {start, end, slot}).

Formats:
- skill folder (or a folder of skill folders): `skill.yaml` templates -> train/dev,
  hand-written `tests.yaml` -> test. See `nlu.data.skills`.
- JSONL: one object per line, `{"text", "skill", "intent", "slots": [{"start", "end", "slot"}]}`
  with character offsets (end exclusive); `{"text", "skill": null}` is an out-of-scope example
  (something the assistant should refuse). A file is one split; a folder holding `train.jsonl`
  (and optionally `dev.jsonl`, `test.jsonl`) in this format is a dataset with its own splits.
- CLINC150 (`data_full.json` or its folder): each domain is a skill, no slots; `oos` rows are
  out-of-scope examples. See `nlu.data.corpora`.
- JointBERT / Slot-Gated directory (ATIS, SNIPS): `<split>/seq.in`, `seq.out` (BIO per
  whitespace token), `label`. The skill is the directory name.
- MASSIVE locale file (`en-US.jsonl`, all partitions) and SLURP files or folder: see
  `nlu.data.corpora`; each scenario is a skill.
- `hub:OWNER/NAME[:CONFIG]`: a MASSIVE- or SLURP-layout dataset from the Hugging Face hub
  (needs the network).
"""

from __future__ import annotations

import json
import logging
import random
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from nlu.config import DataConfig
from nlu.data.corpora import (
    CLINC_FILE,
    SLURP_FILES,
    jsonl_rows,
    read_clinc,
    read_hub,
    read_massive,
    read_slurp,
    sniff_jsonl,
)
from nlu.data.skills import (
    MARKUP,
    OUT_OF_SCOPE_FILE,
    TESTS_FILE,
    SkillSpec,
    expand_skill,
    find_skill_dirs,
    parse_annotated,
    parse_out_of_scope_file,
    parse_skill_file,
    parse_tests_file,
)
from nlu.labels import SkillLabels, labels_from_examples
from nlu.schema import DataError, Example, Span, raise_collected

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")


# -- JSONL ----------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[Example]:
    examples = []
    problems: list[str] = []  # every bad line, not only the first
    split: list[str] = []  # spans that cut a word: warned about once per file
    for number, row in jsonl_rows(path, problems):
        try:
            example = _jsonl_example(row, path, number)
        except DataError as err:
            problems.append(str(err))
            continue
        for span in example.slots:
            if split_word(example.text, span):
                split.append(
                    f"{path}:{number}: span {span.start}:{span.end} ({span.slot}) "
                    f"{example.value(span)!r} cuts a word of {example.text!r}"
                )
        examples.append(example)
    raise_collected(problems)
    if not examples:
        raise DataError(f"{path}: no examples")
    if split:
        more = f" (and {len(split) - 3} more)" if len(split) > 3 else ""
        logger.warning(
            "%s%s; a slot's offsets should cover whole words (end is exclusive)",
            "; ".join(split[:3]),
            more,
        )
    return examples


def _jsonl_example(row: Any, path: Path, number: int) -> Example:
    if "slots" not in row and isinstance(row.get("text"), str) and MARKUP.search(row["text"]):
        # `[value](slot)` markup instead of offsets, as in tests.yaml.
        try:
            text, spans = parse_annotated(row["text"])
        except DataError as err:
            raise DataError(f"{path}:{number}: {err}") from err
        row = {**row, "text": text, "slots": [s.to_dict() for s in spans]}
    # `"skill": null` (intent null or absent) marks an out-of-scope example.
    out_of_scope = "skill" in row and row["skill"] is None
    needed = ("text",) if out_of_scope else ("text", "skill", "intent")
    missing = [k for k in needed if not isinstance(row.get(k), str)]
    if missing:
        raise DataError(
            f"{path}:{number}: missing or non-string field(s): {', '.join(missing)} "
            '(an out-of-scope example has "skill": null)'
        )
    if out_of_scope and (row.get("intent") is not None or row.get("slots")):
        raise DataError(
            f'{path}:{number}: an out-of-scope example ("skill": null) has no intent and no slots'
        )
    unknown = set(row) - {"text", "skill", "intent", "slots", "id"}
    if unknown:
        raise DataError(f"{path}:{number}: unknown field(s) {sorted(unknown)}")
    slots = row.get("slots", [])
    if not isinstance(slots, list) or not all(
        isinstance(s, dict)
        and isinstance(s.get("start"), int)
        and isinstance(s.get("end"), int)
        and isinstance(s.get("slot"), str)
        for s in slots
    ):
        raise DataError(
            f'{path}:{number}: slots must be a list of {{"start": int, "end": int, "slot": str}}'
        )
    try:
        return Example.from_dict({**row, "slots": slots})
    except DataError as err:
        raise DataError(f"{path}:{number}: {err}") from err


def split_word(text: str, span: Span) -> bool:
    """Whether a span starts or ends inside a word (usually offsets off by one)."""
    inside = str.isalnum
    starts_inside = span.start > 0 and inside(text[span.start - 1]) and inside(text[span.start])
    ends_inside = span.end < len(text) and inside(text[span.end - 1]) and inside(text[span.end])
    return starts_inside or ends_inside


def write_jsonl(path: Path, examples: Iterable[Example]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for ex in examples:
            handle.write(json.dumps(ex.to_dict(), ensure_ascii=False) + "\n")


# -- JointBERT / Slot-Gated ---------------------------------------------------------------------


def bio_to_example(
    tokens: Sequence[str], tags: Sequence[str], *, skill: str, intent: str
) -> Example:
    """Whitespace tokens + BIO tags -> text joined by single spaces + character spans.

    An I- tag that does not continue a span of the same type starts a new span (the lenient
    reading conlleval and seqeval's default mode use).
    """
    text = " ".join(tokens)
    spans: list[Span] = []
    position = 0
    open_slot: str | None = None
    start = end = 0
    for token, tag in zip(tokens, tags, strict=True):
        t_start, t_end = position, position + len(token)
        position = t_end + 1
        continues = tag.startswith("I-") and open_slot == tag[2:]
        if open_slot is not None and not continues:
            spans.append(Span(start, end, open_slot))
            open_slot = None
        if tag == "O":
            continue
        if continues:
            end = t_end
        else:
            open_slot, start, end = tag[2:], t_start, t_end
    if open_slot is not None:
        spans.append(Span(start, end, open_slot))
    return Example(text, skill, intent, tuple(spans))


def read_jointbert(directory: Path, split: str, *, skill: str | None = None) -> list[Example]:
    folder = directory / split
    if split == "dev" and not folder.is_dir() and (directory / "valid").is_dir():
        folder = directory / "valid"
    paths = {name: folder / name for name in ("seq.in", "seq.out", "label")}
    for p in paths.values():
        if not p.is_file():
            raise DataError(
                f"{p}: missing; a JointBERT split folder holds seq.in, seq.out and label"
            )
    texts, tags, labels = (p.read_text(encoding="utf-8").splitlines() for p in paths.values())
    if not len(texts) == len(tags) == len(labels):
        raise DataError(
            f"{folder}: seq.in has {len(texts)} lines, seq.out {len(tags)}, label {len(labels)}; "
            "they must match line for line"
        )
    skill = skill or directory.name
    examples = []
    for number, (line, tag_line, label) in enumerate(
        zip(texts, tags, labels, strict=True), start=1
    ):
        # Split on any whitespace: SNIPS lines carry leading, trailing and double spaces.
        tokens, bio = line.split(), tag_line.split()
        if len(tokens) != len(bio):
            raise DataError(
                f"{paths['seq.out']}:{number}: {len(bio)} tags for {len(tokens)} tokens in {line!r}"
            )
        bad = [t for t in bio if t != "O" and not (t[:2] in ("B-", "I-") and len(t) > 2)]
        if bad:
            raise DataError(f"{paths['seq.out']}:{number}: invalid BIO tag(s) {bad}")
        if not label.strip():
            raise DataError(f"{paths['label']}:{number}: empty intent label")
        examples.append(bio_to_example(tokens, bio, skill=skill, intent=label.strip()))
    return examples


# -- skill folders -----------------------------------------------------------------------------


def read_skills(
    path: Path, split: str, *, samples_per_template: int, dev_fraction: float, seed: int
) -> tuple[list[Example], list[SkillLabels]]:
    examples: list[Example] = []
    labels: list[SkillLabels] = []
    for skill_dir in find_skill_dirs(path):
        spec = parse_skill_file(skill_dir / "skill.yaml")
        labels.append(spec.labels)
        if split == "test":
            tests = skill_dir / TESTS_FILE
            if not tests.is_file():
                raise DataError(
                    f"{tests}: missing; the test split of a skill is its hand-written {TESTS_FILE}"
                )
            examples += parse_tests_file(tests, spec)
        else:
            examples += _template_split(spec, split, samples_per_template, dev_fraction, seed)
    negatives = path / OUT_OF_SCOPE_FILE
    if negatives.is_file():
        texts = parse_out_of_scope_file(negatives)
        if split == "test":
            examples += [Example(t, None, None) for t in texts["test"]]
        else:
            pool = [Example(t, None, None) for t in texts["train"]]
            examples += [e for e in pool if _is_dev(e, dev_fraction, seed) == (split == "dev")]
    return examples, labels


def _is_dev(ex: Example, dev_fraction: float, seed: int) -> bool:
    # A stable per-text coin decides train vs dev, so the split does not depend on file order.
    return zlib.crc32(f"{seed}:{ex.text}".encode()) / 2**32 < dev_fraction


def _template_split(
    spec: SkillSpec, split: str, samples_per_template: int, dev_fraction: float, seed: int
) -> list[Example]:
    # Train and dev come from one expansion: expand once per file version, not once per split.
    key = (str(spec.path), spec.path.stat().st_mtime_ns, samples_per_template, seed)
    if key not in _EXPANDED:
        if len(_EXPANDED) >= 256:  # bounded: long-lived processes read many versions
            _EXPANDED.clear()
        _EXPANDED[key] = expand_skill(spec, samples_per_template=samples_per_template, seed=seed)
    generated = _EXPANDED[key]
    return [ex for ex in generated if _is_dev(ex, dev_fraction, seed) == (split == "dev")]


_EXPANDED: dict[tuple[str, int, int, int], list[Example]] = {}


# -- dispatch ------------------------------------------------------------------------------------


@dataclass
class Loaded:
    examples: list[Example]
    # Label spaces declared by skill files (descriptions, intents' slots); empty for other formats.
    declared: list[SkillLabels] = field(default_factory=list)


# A folder of nlu JSONL files, one per split (dev.jsonl and test.jsonl optional).
SPLIT_FILES = {"train": "train.jsonl", "dev": "dev.jsonl", "test": "test.jsonl"}

# What `detect_format` answers, and what each reads as.
FORMATS = {
    "hub": "a Hugging Face hub dataset (MASSIVE or SLURP layout)",
    "clinc150": "CLINC150 (data_full.json)",
    "massive": "a MASSIVE locale file (all partitions)",
    "slurp-file": "one SLURP file (a single split)",
    "slurp-folder": "a SLURP folder (train.jsonl, devel.jsonl, test.jsonl)",
    "jsonl": "one nlu JSONL file (a single split)",
    "jsonl-folder": "a folder of nlu JSONL split files (train.jsonl, dev.jsonl, test.jsonl)",
    "jointbert": "a JointBERT folder (<split>/seq.in, seq.out, label)",
    "skills": "skill folders (skill.yaml, tests.yaml)",
}
_logged: set[tuple[str, str]] = set()


def detect_format(path: str | Path) -> str:
    """Which reader `path` needs (a key of FORMATS), decided by content, not by file names
    alone: a folder's train.jsonl is SLURP only if its records are SLURP records."""
    if str(path).startswith("hub:"):
        return "hub"
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.name == CLINC_FILE or (path / CLINC_FILE).is_file():
        return "clinc150"
    if path.is_file():
        if path.suffix not in (".jsonl", ".json"):
            raise DataError(
                f"{path}: expected a .jsonl file, a skill folder, a folder of split files or a "
                "benchmark folder"
            )
        kind = sniff_jsonl(path)
        return {"massive": "massive", "slurp": "slurp-file"}.get(kind, "jsonl")
    if (path / "train" / "seq.in").is_file() or any(
        (path / s / "seq.in").is_file() for s in ("dev", "valid", "test")
    ):
        return "jointbert"
    split_files = [path / name for name in {*SPLIT_FILES.values(), *SLURP_FILES.values()}]
    present = [f for f in split_files if f.is_file()]
    if present:
        if any(sniff_jsonl(f) == "slurp" for f in present):
            return "slurp-folder"
        return "jsonl-folder"
    return "skills"


def read_split_folder(path: Path, split: str) -> list[Example]:
    """`<path>/<split>.jsonl` of a folder of nlu JSONL split files."""
    file = path / SPLIT_FILES[split]
    if not file.is_file():
        have = sorted(f.name for f in path.glob("*.jsonl"))
        raise DataError(
            f"{file}: missing; a folder of split files holds {SPLIT_FILES['train']} and "
            f"optionally {SPLIT_FILES['dev']} and {SPLIT_FILES['test']} (found: "
            f"{', '.join(have) or 'none'})"
        )
    return read_jsonl(file)


def load_split(
    path: str | Path,
    split: str,
    *,
    samples_per_template: int = 20,
    dev_fraction: float = 0.1,
    seed: int = 0,
) -> Loaded:
    """Examples of one split from any supported source; a JSONL file is its own split."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    kind = detect_format(path)
    if (str(path), kind) not in _logged:
        _logged.add((str(path), kind))
        logger.info("%s: read as %s", path, FORMATS[kind])
    if kind == "hub":
        return Loaded(read_hub(str(path)[4:], split))
    path = Path(path)
    if kind == "clinc150":
        return Loaded(read_clinc(path, split))
    if kind == "massive":
        return Loaded(read_massive(path, split))
    if kind in ("slurp-file", "slurp-folder"):
        return Loaded(read_slurp(path, split))
    if kind == "jsonl":
        return Loaded(read_jsonl(path))
    if kind == "jsonl-folder":
        return Loaded(read_split_folder(path, split))
    if kind == "jointbert":
        return Loaded(read_jointbert(path, split))
    examples, declared = read_skills(
        path, split, samples_per_template=samples_per_template, dev_fraction=dev_fraction, seed=seed
    )
    return Loaded(examples, declared)


@dataclass
class TrainData:
    train: list[Example]
    dev: list[Example]
    labels: list[SkillLabels]


def load_train_dev(cfg: DataConfig, *, seed: int) -> TrainData:
    """Train and dev examples from every source, and the label space they define.

    Dev comes from `dev_data` when given, else from each source's own dev split; a file that is
    a single split gives a seeded `dev_fraction` of itself."""
    if not cfg.data:
        raise DataError(
            "no training data: set `data` to skill folders, JSONL files or benchmark folders"
        )

    def split(source: str, name: str) -> Loaded:
        return load_split(
            source,
            name,
            samples_per_template=cfg.samples_per_template,
            dev_fraction=cfg.dev_fraction,
            seed=seed,
        )

    train: list[Example] = []
    dev: list[Example] = []
    declared: list[SkillLabels] = []
    for source in cfg.data:
        loaded = split(source, "train")
        declared += loaded.declared
        if cfg.dev_data:
            train += loaded.examples
        elif not has_own_split(source, "dev"):
            kept, held = random_split(loaded.examples, cfg.dev_fraction, seed)
            train += kept
            dev += held
        else:
            train += loaded.examples
            dev += split(source, "dev").examples
    for source in cfg.dev_data:
        dev += split(source, "dev").examples
    if not cfg.train_negatives:
        train = [e for e in train if e.in_scope]
    labels = labels_from_examples(train, {d.name: d for d in declared})
    return TrainData(train=train, dev=dev, labels=labels)


def skills_without_tests(path: Path) -> list[Path]:
    """The skill folders under `path` that have no hand-written tests file."""
    return [d for d in find_skill_dirs(path) if not (d / TESTS_FILE).is_file()]


def check_test_files(cfg: DataConfig) -> None:
    """Read the hand-written tests of every skill-folder source (they are not trained on, so
    nothing else reads them before `nlu evaluate`): their problems, all of them, now."""
    for source in cfg.data:
        if detect_format(source) == "skills" and not skills_without_tests(Path(source)):
            load_split(source, "test", samples_per_template=1, dev_fraction=cfg.dev_fraction)


def has_own_split(path: str | Path, split: str) -> bool:
    """Whether `path` has its own `split` ("dev" or "test"). Not for a file that holds a single
    split (nlu JSONL, one SLURP file), nor for a folder of split files without that split's file:
    their dev is a seeded share of train, and their test would be the training data itself."""
    kind = detect_format(path)
    if kind == "jsonl-folder":
        return (Path(path) / SPLIT_FILES[split]).is_file()
    return kind not in ("jsonl", "slurp-file")


T = TypeVar("T")


def random_split(examples: Sequence[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    cut = round(len(order) * fraction)
    held = set(order[:cut])
    return [e for i, e in enumerate(examples) if i not in held], [examples[i] for i in sorted(held)]


# -- label coverage ------------------------------------------------------------------------------


def unseen_labels(train: Sequence[SkillLabels], examples: Sequence[Example]) -> dict[str, Any]:
    """Skills, intents and slot types in `examples` that training never saw, with counts."""
    known = {s.name: s for s in train}
    skills: Counter[str] = Counter()
    intents: Counter[str] = Counter()
    slots: Counter[str] = Counter()
    for ex in examples:
        if ex.skill is None:
            continue
        labels = known.get(ex.skill)
        if labels is None:
            skills[ex.skill] += 1
            continue
        if ex.intent not in labels.intents:
            intents[f"{ex.skill}/{ex.intent}"] += 1
        for span in ex.slots:
            if span.slot not in labels.slots:
                slots[f"{ex.skill}/{span.slot}"] += 1
    return {"skills": dict(skills), "intents": dict(intents), "slot_types": dict(slots)}


# -- datasets ------------------------------------------------------------------------------------


def dataset_features() -> datasets.Features:
    import datasets

    return datasets.Features(
        {
            "text": datasets.Value("string"),
            "skill": datasets.Value("string"),
            "intent": datasets.Value("string"),
            "slots": datasets.List(
                {
                    "start": datasets.Value("int32"),
                    "end": datasets.Value("int32"),
                    "slot": datasets.Value("string"),
                }
            ),
        }
    )


def to_dataset(examples: Sequence[Example]) -> datasets.Dataset:
    import datasets

    features = dataset_features()
    return datasets.Dataset.from_list([ex.to_dict() for ex in examples], features=features)


def from_dataset(dataset: datasets.Dataset) -> list[Example]:
    return [Example.from_dict(row) for row in dataset]
