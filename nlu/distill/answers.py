"""What a teacher is and what it answers, in one shape: the teacher config, `Answer` (ranked
skills and intents, slot spans or per-word tag distributions in the teacher's own label
names), and the readers of the nlu and Rasa answer shapes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
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

    # The teacher's name in logs, errors and the cache.
    name: str
    # nlu (a model folder), hf (Hugging Face intent and/or slot models), http (an nlu server), rasa
    # (a Rasa server) or python (a callable).
    kind: TeacherKind
    # nlu: the model folder; hf: the intent (sequence-classification) model folder.
    path: str = ""
    # hf: the slot (token-classification) model folder.
    slot_model: str = ""
    # http / rasa: the endpoint (http://host:port); python: "module:function".
    url: str = ""
    # python: "module:function", called with a list of texts, answering in the nlu or Rasa shape.
    function: str = ""
    # The student skill of a teacher that covers one skill and does not name it (hf models whose
    # labels are bare intents, Rasa, callables answering in Rasa's shape).
    skill: str | None = None
    # Renames from the teacher's labels to the student's: skill -> skill, "skill/intent" or
    # intent -> intent, slot -> slot. A null target drops that label on purpose (its mass
    # leaves the distribution; a dropped top intent means the teacher does not claim the text).
    skills: dict[str, str | None] = field(default_factory=dict)
    # Renames of the teacher's intents ("skill/intent" or intent -> intent); null drops one.
    intents: dict[str, str | None] = field(default_factory=dict)
    # Renames of the teacher's slot names; null drops one.
    slots: dict[str, str | None] = field(default_factory=dict)
    # The label space the teacher speaks, per teacher skill: {skill: {intents: [...], slots:
    # [...]}}. Read from the model for nlu and hf teachers; required for the others.
    labels: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    # Transfer texts this teacher's owner provides (labels in them are ignored): asked of this
    # teacher only, which also makes it the text's skill owner for the router.
    texts: list[str] = field(default_factory=list)
    # http / rasa: headers sent with every request (e.g. {X-API-Key: ...}).
    headers: dict[str, str] = field(default_factory=dict)
    # Texts per request to the teacher.
    batch_size: int = 32
    # Requests in flight at once (http, rasa).
    concurrency: int = 4
    # Seconds one request may take.
    timeout_s: float = 30.0
    # Attempts per batch before the run stops with the teacher's error.
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
