"""Black-box teachers for distillation: what each kind says about a text, in one shape.

A teacher is only ever asked for its outputs on texts (never weights or training data):

- `nlu`: a saved nlu model folder (full distributions: soft targets);
- `hf`: a Hugging Face sequence-classification model (intents) and/or token-classification
  model (BIO slot tags), as a team with separate models has them (soft targets);
- `http`: an nlu server's `POST /parse` (ranked skills and intents, slot spans);
- `rasa`: a Rasa server's `POST /model/parse` (`intent`, `intent_ranking`, `entities`);
- `python`: any callable `module:function(texts) -> list[dict]` answering in the nlu or the Rasa
  shape.

Every answer becomes an `Answer` in the teacher's own label names; `nlu.distill` maps them onto
the student's labels. Answers are cached on disk per teacher (`AnswerCache`), so a restart
never asks a teacher twice, and remote teachers are queried in batches with bounded
concurrency and retries.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

TeacherKind = Literal["nlu", "hf", "http", "rasa", "python"]
TEACHER_KINDS: tuple[str, ...] = ("nlu", "hf", "http", "rasa", "python")


class TeacherError(RuntimeError):
    """A teacher cannot be opened, answers in a shape we cannot read, or keeps failing."""


@dataclass
class TeacherConfig:
    """One teacher: where it is, which labels it speaks and how they map onto the student's."""

    name: str
    kind: TeacherKind
    # nlu: the model folder; hf: the intent (sequence-classification) model folder.
    path: str = ""
    # hf: the slot (token-classification) model folder.
    slot_model: str = ""
    # http / rasa: the endpoint (http://host:port); python: "module:function".
    url: str = ""
    function: str = ""
    # The student skill of a teacher that covers one skill and does not name it (hf models whose
    # labels are bare intents, Rasa, callables answering in Rasa's shape).
    skill: str | None = None
    # Renames from the teacher's labels to the student's: skill -> skill, "skill/intent" or
    # intent -> intent, slot -> slot. A null target drops that label on purpose (its mass
    # leaves the distribution; a dropped top intent means the teacher does not claim the text).
    skills: dict[str, str | None] = field(default_factory=dict)
    intents: dict[str, str | None] = field(default_factory=dict)
    slots: dict[str, str | None] = field(default_factory=dict)
    # The label space the teacher speaks, per teacher skill: {skill: {intents: [...], slots:
    # [...]}}. Read from the model for nlu and hf teachers; required for the others.
    labels: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    # Transfer texts this teacher's owner provides (labels in them are ignored): asked of this
    # teacher only, which also makes it the text's skill owner for the router.
    texts: list[str] = field(default_factory=list)
    # http / rasa: headers sent with every request (e.g. {X-API-Key: ...}).
    headers: dict[str, str] = field(default_factory=dict)
    batch_size: int = 32
    concurrency: int = 4
    timeout_s: float = 30.0
    retries: int = 3

    def source(self) -> str:
        """What identifies this teacher's answers in the cache."""
        where = {"nlu": self.path, "hf": f"{self.path}|{self.slot_model}"}.get(self.kind)
        return f"{self.kind}:{where if where is not None else self.url or self.function}"


@dataclass
class WordTags:
    """A teacher's tag distribution for one word, located by character offsets."""

    start: int
    end: int
    tags: dict[str, float]


@dataclass
class Answer:
    """What one teacher said about one text, in the teacher's label names.

    skills: how strongly the teacher claims the text for each of its skills (probabilities;
    all zero or empty: not claimed). intents: the distribution over the intents of its top
    skill (one entry: a hard label). spans: slot spans (start, end, slot). words: per-word tag
    distributions when the teacher exposes them (soft slot targets), else None."""

    skills: dict[str, float]
    intents: dict[str, float]
    spans: list[tuple[int, int, str]]
    words: list[WordTags] | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["words"] = None if self.words is None else [asdict(w) for w in self.words]
        return out

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> Answer:
        words = row.get("words")
        return cls(
            skills={k: float(v) for k, v in row["skills"].items()},
            intents={k: float(v) for k, v in row["intents"].items()},
            spans=[(int(s), int(e), str(t)) for s, e, t in row["spans"]],
            words=None if words is None else [WordTags(**w) for w in words],
        )

    @property
    def top_skill(self) -> str | None:
        if not self.skills or max(self.skills.values()) <= 0:
            return None
        return max(self.skills, key=lambda s: self.skills[s])


Ask = Callable[[Sequence[str]], list[Answer]]


@dataclass
class Teacher:
    config: TeacherConfig
    # Per teacher skill: (intents, slots) it can answer with.
    labels: dict[str, tuple[list[str], list[str]]]
    ask: Ask
    # Remote teachers run their batches concurrently; local ones one batch at a time.
    remote: bool = False

    @property
    def name(self) -> str:
        return self.config.name


# -- answer shapes ---------------------------------------------------------------------------------


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return np.asarray(e / e.sum(-1, keepdims=True))


def _rounded(names: Sequence[str], probs: np.ndarray, floor: float = 1e-4) -> dict[str, float]:
    """A distribution as {name: p}, without the negligible entries (keeps the cache small)."""
    return {n: round(float(p), 5) for n, p in zip(names, probs, strict=True) if p >= floor}


def from_nlu_shape(row: Mapping[str, Any]) -> Answer:
    """An nlu parse result (`POST /parse`, `ParseResult.to_dict`) as an Answer."""
    try:
        in_scope = bool(row.get("in_scope", True))
        ranked = row.get("skills") or ([row["skill"]] if row.get("skill") else [])
        skills = {s["name"]: float(s["confidence"]) * in_scope for s in ranked}
        intents = {i["name"]: float(i["confidence"]) for i in row.get("intents") or []}
        if not intents and row.get("intent"):
            intents = {row["intent"]["name"]: float(row["intent"]["confidence"])}
        spans = [(int(s["start"]), int(s["end"]), str(s["slot"])) for s in row.get("slots", [])]
    except (KeyError, TypeError, ValueError) as err:
        raise TeacherError(f"not an nlu parse result ({type(err).__name__}: {err})") from None
    return Answer(skills=skills, intents=intents, spans=spans)


# The intent Rasa's FallbackClassifier answers when no intent is confident enough.
RASA_FALLBACK = "nlu_fallback"


def from_rasa_shape(row: Mapping[str, Any], skill: str) -> Answer:
    """A Rasa `/model/parse` answer as an Answer for the teacher's one skill. The top intent's
    confidence is the teacher's claim on the text; `nlu_fallback` on top claims nothing."""
    try:
        top = row.get("intent") or {}
        ranking = row.get("intent_ranking") or ([top] if top.get("name") else [])
        intents = {i["name"]: float(i["confidence"]) for i in ranking if i["name"] != RASA_FALLBACK}
        claim = float(top.get("confidence", max(intents.values(), default=0.0)))
        if top.get("name") == RASA_FALLBACK:  # Rasa's own "I did not understand"
            claim = 0.0
        spans = [(int(e["start"]), int(e["end"]), str(e["entity"])) for e in row["entities"]]
    except (KeyError, TypeError, ValueError) as err:
        raise TeacherError(
            f"not a Rasa /model/parse answer ({type(err).__name__}: {err}); it needs intent, "
            "intent_ranking and entities with start, end and entity"
        ) from None
    return Answer(
        skills={skill: claim} if intents and claim > 0 else {}, intents=intents, spans=spans
    )


def from_shape(row: Any, config: TeacherConfig) -> Answer:
    """An answer in either shape (nlu's or Rasa's), told apart by its keys."""
    if not isinstance(row, Mapping):
        raise TeacherError(f"teacher {config.name}: an answer must be an object, got {row!r:.80}")
    if "entities" in row or "intent_ranking" in row:
        if not config.skill:
            raise TeacherError(
                f"teacher {config.name}: it answers in Rasa's shape, which names no skill; set "
                "`skill:` to the student skill it covers"
            )
        return from_rasa_shape(row, config.skill)
    return from_nlu_shape(row)


# -- teacher kinds ---------------------------------------------------------------------------------


def open_teacher(config: TeacherConfig) -> Teacher:
    """A teacher ready to answer, with the label space it speaks."""
    opener = {
        "nlu": _nlu_teacher,
        "hf": _hf_teacher,
        "http": _http_teacher,
        "rasa": _rasa_teacher,
        "python": _python_teacher,
    }.get(config.kind)
    if opener is None:
        raise TeacherError(
            f"teacher {config.name}: kind {config.kind!r}; one of {', '.join(TEACHER_KINDS)}"
        )
    return opener(config)


def _declared(config: TeacherConfig) -> dict[str, tuple[list[str], list[str]]]:
    if not config.labels:
        raise TeacherError(
            f"teacher {config.name} ({config.kind}): declare the labels it answers with, e.g. "
            "labels: {weather: {intents: [get_forecast], slots: [city, date]}}"
        )
    out = {}
    for skill, space in config.labels.items():
        if not isinstance(space, Mapping) or set(space) - {"intents", "slots"}:
            raise TeacherError(
                f"teacher {config.name}: labels.{skill} must be {{intents: [...], slots: [...]}}"
            )
        out[skill] = (list(space.get("intents", [])), list(space.get("slots", [])))
    return out


def _nlu_teacher(config: TeacherConfig) -> Teacher:
    from nlu.alignment import encode, pad_id
    from nlu.features import encodings_inputs
    from nlu.modeldir import load, locate
    from nlu.predict import Parser

    folder = load(locate(config.path))
    parser = Parser.from_folder(folder)
    index = parser.index
    ood = parser.ood

    def ask(texts: Sequence[str]) -> list[Answer]:
        encodings = encode(parser.tokenizer, texts, parser.max_length)
        logits = parser.forward(encodings_inputs(encodings, pad_id(parser.tokenizer)))
        router = _softmax(logits.router / (ood.router_temperature if ood else 1.0))
        in_scope = np.ones(len(texts), dtype=bool)
        if ood is not None:
            in_scope = ood.scores(logits.router, logits.pooled) <= ood.threshold
        answers = []
        for row, enc in enumerate(encodings):
            k = int(router[row].argmax())
            skill = index.skills[k]
            intents = _softmax(logits.intents[row, index.intent_slices[k]])
            starts = enc.word_starts
            tags = _softmax(logits.slots[row][starts][:, index.tag_slices[k]])
            words = [
                WordTags(s, e, _rounded(skill.tags, tags[i])) for i, (s, e) in enumerate(enc.words)
            ]
            answers.append(
                Answer(
                    skills=_rounded(index.names, router[row] * in_scope[row]),
                    intents=_rounded(skill.intents, intents),
                    spans=_spans(enc.words, [max(w.tags, key=w.tags.__getitem__) for w in words]),
                    words=words,
                )
            )
        return answers

    labels = {s.name: (list(s.intents), list(s.slots)) for s in index.skills}
    return Teacher(config, labels, ask)


def _spans(words: Sequence[tuple[int, int]], tags: Sequence[str]) -> list[tuple[int, int, str]]:
    from nlu.alignment import tags_to_spans

    return [(s.start, s.end, s.slot) for s, _ in tags_to_spans(words, tags)]


def _hf_teacher(config: TeacherConfig) -> Teacher:
    """A sequence-classification and/or token-classification model (either may be absent).
    Intent labels are "skill/intent" or bare intents of `skill`; tag labels are BIO tags."""
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    from nlu.alignment import encode, pad_id
    from nlu.features import encodings_inputs

    if not config.path and not config.slot_model:
        raise TeacherError(f"teacher {config.name} (hf): set path (intents) and/or slot_model")
    try:
        intent_model = (
            AutoModelForSequenceClassification.from_pretrained(config.path).eval()
            if config.path
            else None
        )
        slot_model = (
            AutoModelForTokenClassification.from_pretrained(config.slot_model).eval()
            if config.slot_model
            else None
        )
        tokenizer = AutoTokenizer.from_pretrained(config.path or config.slot_model)
    except (OSError, ValueError) as err:
        raise TeacherError(
            f"teacher {config.name} (hf): cannot load {config.path or config.slot_model}: "
            f"{str(err).splitlines()[0][:200]}"
        ) from None
    intent_names = (
        [intent_model.config.id2label[i] for i in range(intent_model.config.num_labels)]
        if intent_model
        else []
    )
    tag_names = (
        [slot_model.config.id2label[i] for i in range(slot_model.config.num_labels)]
        if slot_model
        else []
    )
    bad = [t for t in tag_names if t != "O" and not t.startswith(("B-", "I-"))]
    if bad:
        raise TeacherError(
            f"teacher {config.name} (hf): slot model labels must be BIO tags (O, B-x, I-x); "
            f"found {bad[:3]}"
        )

    def split(label: str) -> tuple[str, str]:
        skill, sep, intent = label.partition("/")
        if sep:
            return skill, intent
        if not config.skill:
            raise TeacherError(
                f"teacher {config.name} (hf): intent label {label!r} names no skill; set "
                "`skill:` to the student skill it covers, or label intents skill/intent"
            )
        return config.skill, label

    pairs = [split(n) for n in intent_names]
    skill_names = sorted({s for s, _ in pairs}) or ([config.skill] if config.skill else [])
    if not skill_names:
        raise TeacherError(
            f"teacher {config.name} (hf): a slot-only teacher needs `skill:` (the student skill "
            "its tags belong to)"
        )
    slots = sorted({t[2:] for t in tag_names if t != "O"})
    labels = {s: ([i for k, i in pairs if k == s], slots) for s in skill_names}
    device = torch.device("cpu")

    @torch.inference_mode()
    def ask(texts: Sequence[str]) -> list[Answer]:
        encodings = encode(tokenizer, texts, 512)
        batch = {
            k: torch.from_numpy(v).to(device)
            for k, v in encodings_inputs(encodings, pad_id(tokenizer)).items()
        }
        intent_p = torch.softmax(intent_model(**batch).logits, -1).numpy() if intent_model else None
        tag_p = torch.softmax(slot_model(**batch).logits, -1).numpy() if slot_model else None
        answers = []
        for row, enc in enumerate(encodings):
            skills: dict[str, float] = {}
            intents: dict[str, float] = {}
            if intent_p is not None:
                for (skill, _), p in zip(pairs, intent_p[row], strict=True):
                    skills[skill] = skills.get(skill, 0.0) + float(p)
                top = max(skills, key=skills.__getitem__)
                mass = [
                    (i, float(p))
                    for (s, i), p in zip(pairs, intent_p[row], strict=True)
                    if s == top
                ]
                intents = _rounded(
                    [i for i, _ in mass], np.array([p for _, p in mass]) / skills[top]
                )
                skills = {s: round(p, 5) for s, p in skills.items()}
            else:
                skills = {skill_names[0]: 1.0}
            words = None
            spans: list[tuple[int, int, str]] = []
            if tag_p is not None:
                dist = tag_p[row][enc.word_starts]
                words = [
                    WordTags(s, e, _rounded(tag_names, dist[i]))
                    for i, (s, e) in enumerate(enc.words)
                ]
                spans = _spans(enc.words, [tag_names[int(d.argmax())] for d in dist])
            answers.append(Answer(skills=skills, intents=intents, spans=spans, words=words))
        return answers

    return Teacher(config, labels, ask)


def _post(url: str, payload: Any, config: TeacherConfig) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **config.headers},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=config.timeout_s) as response:
        return json.loads(response.read())


def _http_teacher(config: TeacherConfig) -> Teacher:
    """An nlu server: batches of texts to POST /parse; its label space from GET /skills unless
    declared."""
    base = config.url.rstrip("/")
    if not base:
        raise TeacherError(f"teacher {config.name} (http): set url, e.g. http://127.0.0.1:8000")
    labels = _declared(config) if config.labels else _served_labels(config, base)
    # The server ranks at most 50 intents and takes at most 64 texts per request.
    top_k = min(50, max(len(i) for i, _ in labels.values()))
    config.batch_size = min(config.batch_size, 64)

    def ask(texts: Sequence[str]) -> list[Answer]:
        body = _post(f"{base}/parse", {"texts": list(texts), "top_k": top_k}, config)
        results = body.get("results") if isinstance(body, Mapping) else body
        if not isinstance(results, list) or len(results) != len(texts):
            raise TeacherError(
                f"{base}/parse answered {str(body)[:120]!r}, not {len(texts)} results"
            )
        return [from_nlu_shape(r) for r in results]

    return Teacher(config, labels, ask, remote=True)


def _served_labels(config: TeacherConfig, base: str) -> dict[str, tuple[list[str], list[str]]]:
    try:
        request = urllib.request.Request(f"{base}/skills", headers=config.headers)
        with urllib.request.urlopen(request, timeout=config.timeout_s) as response:
            body = json.loads(response.read())
        return {s["name"]: (list(s["intents"]), list(s["slot_types"])) for s in body["skills"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TeacherError(
            f"teacher {config.name} (http): cannot read its labels from {base}/skills "
            f"({type(err).__name__}: {err}); is the server up? Or declare `labels:`"
        ) from None


def _rasa_teacher(config: TeacherConfig) -> Teacher:
    """A Rasa server: one text per POST /model/parse (Rasa parses one at a time)."""
    base = config.url.rstrip("/")
    if not base or not config.skill:
        raise TeacherError(
            f"teacher {config.name} (rasa): set url (http://host:5005) and skill (the student "
            "skill its intents belong to)"
        )
    labels = _declared(config)

    def ask(texts: Sequence[str]) -> list[Answer]:
        assert config.skill is not None
        return [
            from_rasa_shape(_post(f"{base}/model/parse", {"text": t}, config), config.skill)
            for t in texts
        ]

    return Teacher(config, labels, ask, remote=True)


def _python_teacher(config: TeacherConfig) -> Teacher:
    module_name, _, attr = config.function.partition(":")
    if not module_name or not attr:
        raise TeacherError(
            f"teacher {config.name} (python): function must be 'module:function', got "
            f"{config.function!r}"
        )
    try:
        function = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise TeacherError(f"teacher {config.name} (python): {config.function}: {err}") from None
    labels = _declared(config)

    def ask(texts: Sequence[str]) -> list[Answer]:
        rows = function(list(texts))
        if not isinstance(rows, list) or len(rows) != len(texts):
            raise TeacherError(
                f"teacher {config.name}: {config.function} must return one answer per text "
                f"(a list of {len(texts)})"
            )
        return [from_shape(r, config) for r in rows]

    return Teacher(config, labels, ask)


# -- the answer cache ------------------------------------------------------------------------------


class AnswerCache:
    """A teacher's answers on disk, one JSON line per text, appended as they arrive: a killed
    run keeps every answer written so far, and the next run asks only for the rest."""

    def __init__(self, directory: Path, config: TeacherConfig) -> None:
        digest = hashlib.sha256(config.source().encode()).hexdigest()[:10]
        self.path = directory / f"{config.name}-{digest}.jsonl"
        self.answers: dict[str, Answer] = {}
        if self.path.is_file():
            self._read()

    def _read(self) -> None:
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        good = 0  # bytes of whole records
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
                self.answers[row["text"]] = Answer.from_json(row["answer"])
            except (ValueError, KeyError, TypeError):
                if number == len(lines):
                    # The line a killed run was writing: cut it off, its text is asked again.
                    logger.warning("%s: dropping an unfinished last line", self.path)
                    with self.path.open("r+b") as handle:
                        handle.truncate(good)
                    break
                raise TeacherError(
                    f"{self.path}:{number}: not a cached answer; delete the file to ask the "
                    "teacher again"
                ) from None
            good += len(line) + 1

    def missing(self, texts: Sequence[str]) -> list[str]:
        return list(dict.fromkeys(t for t in texts if t not in self.answers))

    def add(self, texts: Sequence[str], answers: Sequence[Answer]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            for text, answer in zip(texts, answers, strict=True):
                handle.write(json.dumps({"text": text, "answer": answer.to_json()}) + "\n")
                self.answers[text] = answer


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), max(1, size)):
        yield list(items[start : start + size])


def _with_retries(teacher: Teacher, texts: list[str]) -> list[Answer]:
    config = teacher.config
    last = ""
    for attempt in range(config.retries + 1):
        try:
            answers = teacher.ask(texts)
            if len(answers) != len(texts):
                raise TeacherError(f"{len(answers)} answers for {len(texts)} texts")
            return answers
        except (OSError, TimeoutError, urllib.error.URLError, ValueError, TeacherError) as err:
            last = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
            if attempt < config.retries:
                delay = min(0.25 * 2**attempt, 5.0)
                logger.warning(
                    "teacher %s: %s; retrying in %.2f s (%d/%d)",
                    teacher.name,
                    last,
                    delay,
                    attempt + 1,
                    config.retries,
                )
                time.sleep(delay)
    raise TeacherError(
        f"teacher {teacher.name} ({config.source()}) failed {config.retries + 1} times on a batch "
        f"of {len(texts)} texts (first: {texts[0]!r}): {last}. The answers so far are kept; fix "
        "the teacher and run again to resume"
    )


def ask_all(teacher: Teacher, texts: Sequence[str], cache_dir: Path) -> dict[str, Answer]:
    """The teacher's answers to `texts`, from the cache where it has them, else asked in
    batches (remote teachers `concurrency` batches at a time) and cached as they come."""
    cache = AnswerCache(cache_dir, teacher.config)
    todo = cache.missing(texts)
    if todo:
        logger.info(
            "teacher %s: %d texts to ask (%d cached)", teacher.name, len(todo), len(cache.answers)
        )
    started = time.perf_counter()
    batches = list(_chunks(todo, teacher.config.batch_size))
    if teacher.remote and teacher.config.concurrency > 1:
        with ThreadPoolExecutor(max_workers=teacher.config.concurrency) as pool:
            futures = {pool.submit(_with_retries, teacher, b): b for b in batches}
            try:
                for future in as_completed(futures):
                    cache.add(futures[future], future.result())
            except BaseException:
                for pending in futures:
                    pending.cancel()
                raise
    else:
        for batch in batches:
            cache.add(batch, _with_retries(teacher, batch))
    if todo:
        logger.info(
            "teacher %s: %d answers in %.1f s",
            teacher.name,
            len(todo),
            time.perf_counter() - started,
        )
    return {t: cache.answers[t] for t in texts}
