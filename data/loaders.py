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

import logging
import math
import random
import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from nlu.config import DataConfig
from nlu.data.corpora import (
    CLINC_FILE,
    SLURP_FILES,
    read_clinc,
    read_hub,
    read_massive,
    read_slurp,
    sniff_jsonl,
)
from nlu.data.formats import read_jointbert, read_jsonl
from nlu.data.skills import (
    OUT_OF_SCOPE_FILE,
    TESTS_FILE,
    SkillSpec,
    expand_skill,
    find_skill_dirs,
    parse_out_of_scope_file,
    parse_skill_file,
    parse_tests_file,
)
from nlu.labels import SkillLabels, labels_from_examples
from nlu.schema import DataError, Example

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")


# -- skill folders -----------------------------------------------------------------------------


def read_skills(
    path: Path,
    split: str,
    *,
    samples_per_template: int,
    dev_fraction: float,
    seed: int,
    shared_negatives: bool = True,
) -> tuple[list[Example], list[SkillLabels]]:
    examples: list[Example] = []
    labels: list[SkillLabels] = []
    in_scope: list[Example] = []  # every skill's train+dev texts, for the negatives' check
    versions: list[tuple[str, int]] = []  # which files those texts come from
    negative_files: list[tuple[Path, bool]] = []  # (file, shared beside the skill folders)
    for skill_dir in find_skill_dirs(path):
        spec = parse_skill_file(skill_dir / "skill.yaml")
        labels.append(spec.labels)
        generated = _expanded(spec, samples_per_template, seed)
        in_scope += generated
        versions.append((str(spec.path), spec.path.stat().st_mtime_ns))
        if split == "test":
            tests = skill_dir / TESTS_FILE
            if not tests.is_file():
                raise DataError(
                    f"{tests}: missing; the test split of a skill is its hand-written {TESTS_FILE}"
                    " (`nlu import ... --test-fraction 0.2` writes one from imported data)"
                )
            examples += parse_tests_file(tests, spec)
        else:
            examples += [e for e in generated if _is_dev(e, dev_fraction, seed) == (split == "dev")]
        if (skill_dir / OUT_OF_SCOPE_FILE).is_file():
            negative_files.append((skill_dir / OUT_OF_SCOPE_FILE, False))
    if shared_negatives and (path / OUT_OF_SCOPE_FILE).is_file():
        negative_files.append((path / OUT_OF_SCOPE_FILE, True))
    for file, shared in negative_files:
        texts = parse_out_of_scope_file(file)
        pool = texts["test"] if split == "test" else texts["train"]
        if shared:  # written for other skills: leave out what one of these skills handles
            version = (tuple(versions), samples_per_template, seed)
            claimed = claimed_negatives(file, texts["train"] + texts["test"], in_scope, version)
            pool = [t for t in pool if t not in claimed]
        negatives = [Example(t, None, None) for t in pool]
        if split != "test":
            negatives = [e for e in negatives if _is_dev(e, dev_fraction, seed) == (split == "dev")]
        examples += negatives
    return examples, labels


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z0-9']+", text.casefold()))


def claimed_negatives(
    file: Path, negatives: list[str], in_scope: list[Example], version: Hashable
) -> frozenset[str]:
    """The shared negatives that a skill claims: the same text or a near-same one (at least 80 %
    of the words of both in common, in any order), since training it as "none of the skills"
    would contradict that skill. Found once per version of the file and of the skills
    (`version`: train, dev and test read the same), and logged then."""
    key = (str(file), file.stat().st_mtime_ns, version)
    if key in _CLAIMED:
        return _CLAIMED[key]
    by_size: dict[int, dict[frozenset[str], Example]] = defaultdict(dict)
    for ex in in_scope:
        words = _words(ex.text)
        by_size[len(words)].setdefault(words, ex)
    claimed: dict[str, str] = {}  # negative -> the skill text that claims it
    for text in negatives:
        words = _words(text)
        # |A & B| / |A | B| >= 0.8 needs the smaller set to be at least 0.8 of the larger.
        sizes = range(math.ceil(0.8 * len(words)), math.floor(len(words) / 0.8) + 1)
        claim = next(
            (
                ex
                for n in sizes
                for other, ex in by_size.get(n, {}).items()
                if len(words & other) / max(len(words | other), 1) >= 0.8
            ),
            None,
        )
        if claim is not None:
            claimed[text] = f"{text!r} ({claim.skill}/{claim.intent}: {claim.text!r})"
    if claimed:
        logger.warning(
            "%s: %d negative(s) not used because a skill handles the same text: %s; edit the "
            "file, or set data.shared_negatives=false to use only your skills' own negatives",
            file,
            len(claimed),
            "; ".join(list(claimed.values())[:5]) + (" ..." if len(claimed) > 5 else ""),
        )
    if len(_CLAIMED) >= 64:  # bounded, as the expansions are
        _CLAIMED.clear()
    _CLAIMED[key] = frozenset(claimed)
    return _CLAIMED[key]


_CLAIMED: dict[tuple[object, ...], frozenset[str]] = {}


def _is_dev(ex: Example, dev_fraction: float, seed: int) -> bool:
    # A stable per-text coin decides train vs dev, so the split does not depend on file order.
    return zlib.crc32(f"{seed}:{ex.text}".encode()) / 2**32 < dev_fraction


def _expanded(spec: SkillSpec, samples_per_template: int, seed: int) -> list[Example]:
    # Train and dev come from one expansion: expand once per file version, not once per split.
    key = (str(spec.path), spec.path.stat().st_mtime_ns, samples_per_template, seed)
    if key not in _EXPANDED:
        if len(_EXPANDED) >= 256:  # bounded: long-lived processes read many versions
            _EXPANDED.clear()
        _EXPANDED[key] = expand_skill(spec, samples_per_template=samples_per_template, seed=seed)
    return _EXPANDED[key]


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
    shared_negatives: bool = True,
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
        path,
        split,
        samples_per_template=samples_per_template,
        dev_fraction=dev_fraction,
        seed=seed,
        shared_negatives=shared_negatives,
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
            shared_negatives=cfg.shared_negatives,
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


def __getattr__(name: str) -> Any:
    # Readers and writers of single formats lived here before 0.2 (CHANGELOG.md).
    from nlu.data import formats

    if name.startswith("_") or not hasattr(formats, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import warnings

    warnings.warn(
        f"nlu.data.loaders.{name} moved to nlu.data.formats.{name} in nlu 0.2",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(formats, name)
