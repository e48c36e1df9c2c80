"""Black-box teachers for distillation: what each kind says about a text, in one shape.

A teacher is only ever asked for its outputs on texts (never weights or training data):

- `nlu`: a saved nlu model folder (full distributions: soft targets);
- `hf`: a Hugging Face sequence-classification model (intents) and/or token-classification
  model (BIO slot tags), as a team with separate models has them (soft targets);
- `http`: an nlu server's `POST /parse` (ranked skills and intents, slot spans);
- `rasa`: a Rasa server's `POST /model/parse` (`intent`, `intent_ranking`, `entities`);
- `python`: any callable `module:function(texts) -> list[dict]` answering in the nlu or the Rasa
  shape.

Every answer becomes an `Answer` in the teacher's own label names; `nlu.distill.recipe` maps
them onto the student's labels. Answers are cached on disk per teacher (`nlu.distill.cache`), so a
restart never asks a teacher twice, and remote teachers are queried in batches with bounded
concurrency and retries.
"""

from __future__ import annotations

import importlib
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nlu.distill.answers import (
    TEACHER_KINDS,
    Answer,
    Teacher,
    TeacherConfig,
    TeacherError,
    WordTags,
    _rounded,
    _softmax,
    from_nlu_shape,
    from_rasa_shape,
    from_shape,
)

logger = logging.getLogger(__name__)


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
    from nlu.inference.parser import Parser
    from nlu.model.alignment import encode, pad_id
    from nlu.model.features import encodings_inputs
    from nlu.model.modeldir import load, locate

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
    from nlu.model.alignment import tags_to_spans

    return [(s.start, s.end, s.slot) for s, _ in tags_to_spans(words, tags)]


def _hf_teacher(config: TeacherConfig) -> Teacher:
    """A sequence-classification and/or token-classification model (either may be absent).
    Intent labels are "skill/intent" or bare intents of `skill`; tag labels are BIO tags."""
    import torch

    from nlu.model.alignment import encode, pad_id
    from nlu.model.features import encodings_inputs

    intent_model, slot_model, tokenizer = _hf_models(config)
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
    pairs, labels = _hf_labels(config, intent_names, tag_names)
    skill_names = list(labels)

    @torch.inference_mode()
    def ask(texts: Sequence[str]) -> list[Answer]:
        encodings = encode(tokenizer, texts, 512)
        batch = {
            k: torch.from_numpy(v)
            for k, v in encodings_inputs(encodings, pad_id(tokenizer)).items()
        }
        intent_p = torch.softmax(intent_model(**batch).logits, -1).numpy() if intent_model else None
        tag_p = torch.softmax(slot_model(**batch).logits, -1).numpy() if slot_model else None
        answers = []
        for row, enc in enumerate(encodings):
            skills, intents = (
                _hf_intents(pairs, intent_p[row])
                if intent_p is not None
                else ({skill_names[0]: 1.0}, {})
            )
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


def _hf_models(config: TeacherConfig) -> tuple[Any, Any, Any]:
    """The teacher's intent model, slot model (either may be None) and tokenizer."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

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
    return intent_model, slot_model, tokenizer


def _hf_labels(
    config: TeacherConfig, intent_names: Sequence[str], tag_names: Sequence[str]
) -> tuple[list[tuple[str, str]], dict[str, tuple[list[str], list[str]]]]:
    """(skill, intent) per intent label, and the label space the teacher speaks per skill."""
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
    return pairs, {s: ([i for k, i in pairs if k == s], slots) for s in skill_names}


def _hf_intents(
    pairs: Sequence[tuple[str, str]], probs: np.ndarray
) -> tuple[dict[str, float], dict[str, float]]:
    """A row's intent distribution as skill shares and the top skill's intents."""
    skills: dict[str, float] = {}
    for (skill, _), p in zip(pairs, probs, strict=True):
        skills[skill] = skills.get(skill, 0.0) + float(p)
    top = max(skills, key=skills.__getitem__)
    mass = [(i, float(p)) for (s, i), p in zip(pairs, probs, strict=True) if s == top]
    intents = _rounded([i for i, _ in mass], np.array([p for _, p in mass]) / skills[top])
    return {s: round(p, 5) for s, p in skills.items()}, intents


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
