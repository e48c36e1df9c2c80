"""Distillation: black-box teachers (nlu.distill.teachers) fused into one joint model
(nlu.distill.recipe)."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch

from nlu.config import ConfigError, load, replace
from nlu.data.formats import read_jsonl
from nlu.data.loaders import load_split
from nlu.distill.answers import TeacherConfig, TeacherError
from nlu.distill.cache import AnswerCache, ask_all
from nlu.distill.config import DistillConfig, KDConfig
from nlu.distill.targets import kd_loss, label_map, student_labels
from nlu.distill.teachers import open_teacher
from nlu.evaluation.metrics import score
from nlu.inference.parser import Parser
from nlu.labels import LabelIndex, SkillLabels
from nlu.model.joint import JointOutput
from nlu.training.engine import TrainResult
from tests.helpers import CONFIGS, FIXTURES, start_server

TIMER = FIXTURES / "timer.jsonl"
# The timer expert speaks its own label names; the student's are the fixture's.
RASA_INTENTS = {"set": "timer_set", "cancel": "timer_cancel", "remaining": "timer_remaining"}


# -- stand-in remote teachers: real HTTP servers on loopback ---------------------------------------


class QuietServer(ThreadingHTTPServer):
    """A client that gave up (the timeout tests) makes the handler's write fail after the test
    has moved on: expected, so not printed into a later test's captured stderr."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class Stub:
    """A loopback HTTP server whose handler is a function of (path, body) -> (status, body)."""

    def __init__(self, answer: Callable[[str, Any], tuple[int, Any]]) -> None:
        self.requests = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                stub.requests += 1
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, reply = answer(self.path, body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def rasa_timer_answer(path: str, body: Any) -> tuple[int, Any]:
    """A Rasa server for the timer skill: it knows the fixture's texts (its private data) and
    answers in Rasa's /model/parse shape with its own label names."""
    assert path == "/model/parse"
    gold = {e.text: e for e in read_jsonl(TIMER)}
    example = gold.get(body["text"])
    if example is None:
        return 200, {
            "intent": {"name": "nlu_fallback", "confidence": 0.3},
            "intent_ranking": [],
            "entities": [],
            "text": body["text"],
        }
    top = RASA_INTENTS[str(example.intent)]
    ranking = [{"name": top, "confidence": 0.9}] + [
        {"name": name, "confidence": 0.05} for name in RASA_INTENTS.values() if name != top
    ]
    entities = [
        {
            "start": s.start,
            "end": s.end,
            "entity": "length",
            "value": body["text"][s.start : s.end],
            "confidence_entity": 0.99,
        }
        for s in example.slots
    ]
    return 200, {"intent": ranking[0], "intent_ranking": ranking, "entities": entities}


@pytest.fixture
def rasa_timer() -> Iterator[Stub]:
    stub = Stub(rasa_timer_answer)
    yield stub
    stub.close()


def rasa_teacher(url: str, **changes: Any) -> TeacherConfig:
    return TeacherConfig(
        name="timer_expert",
        kind="rasa",
        url=url,
        skill="timer",
        labels={"timer": {"intents": list(RASA_INTENTS.values()), "slots": ["length"]}},
        intents={v: k for k, v in RASA_INTENTS.items()},
        slots={"length": "duration"},
        texts=[str(TIMER)],
        **changes,
    )


# -- fusion --------------------------------------------------------------------------------------


def test_two_black_box_experts_fuse_into_one_student(
    trained: TrainResult,
    rasa_timer: Stub,
    make_config: Callable[..., Any],
    tiny_skill: Path,
    tmp_path: Path,
) -> None:
    """An nlu model folder (lights) and a Rasa endpoint (timer, other label names) teach one
    student that never sees a label: it must route, classify and tag both skills."""
    from nlu.distill.recipe import distill

    student = replace(make_config(tmp_path / "run"), data=[], epochs=25)
    cfg = DistillConfig(
        teachers=[
            TeacherConfig(
                name="lights_expert",
                kind="nlu",
                path=str(trained.model_dir),
                texts=[str(tiny_skill)],
            ),
            rasa_teacher(rasa_timer.url, batch_size=8),
        ],
        kd=KDConfig(cache_dir=str(tmp_path / "cache"), alpha=0.5, temperature=2.0),
        student=student,
    )
    result = distill(cfg)
    parser = Parser.from_pretrained(result.model_dir)
    assert parser.skill_names == ["lights", "timer"]
    assert parser.index.skill("timer").intents == ["cancel", "remaining", "set"]
    lights = load_split(tiny_skill, "train", samples_per_template=20, seed=0).examples
    for examples in (lights, read_jsonl(TIMER)):
        metrics = score(
            examples, parser.parse([e.text for e in examples]), tokenizer=parser.tokenizer
        )["overall"]
        assert metrics["router_accuracy"] == 100.0, metrics
        assert metrics["intent_accuracy"] >= 90.0, metrics
        assert metrics["slot_f1"] >= 90.0, metrics
    # Every timer text was asked once; a second run answers from the cache.
    asked = rasa_timer.requests
    assert asked == len({e.text for e in read_jsonl(TIMER)})
    teacher = open_teacher(cfg.teachers[1])
    ask_all(teacher, [e.text for e in read_jsonl(TIMER)], tmp_path / "cache")
    assert rasa_timer.requests == asked
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["transfer"]["owned"] == len({e.text for e in lights}) + asked


def test_kd_loss_is_zero_only_when_the_student_matches() -> None:
    index = LabelIndex.of([SkillLabels("a", ["x", "y"], ["s"]), SkillLabels("b", ["z"], [])])
    torch.manual_seed(0)
    router = torch.randn(2, 2)
    intents = torch.randn(2, 3)
    slots = torch.randn(2, 4, 4)
    out = JointOutput(router_logits=router, intent_logits=intents, slot_logits=slots)
    positions = torch.tensor([[False, True, True, False], [False, True, False, False]])
    matching = {
        "soft_rows": torch.tensor([True, True]),
        "soft_skill": torch.tensor([0, 1]),
        "soft_router": torch.softmax(router, -1),
        "soft_intent": torch.cat(
            [
                torch.softmax(intents[:, :2], -1) * torch.tensor([[1.0], [0.0]]),
                torch.tensor([[0.0], [1.0]]),
            ],
            -1,
        ),
        "soft_tags": torch.cat([torch.softmax(slots[:, :, :3], -1), torch.ones(2, 4, 1)], -1),
        "soft_positions": positions,
    }
    assert float(kd_loss(out, matching, index, temperature=1.0)) == pytest.approx(0, abs=1e-5)
    other = dict(matching, soft_router=torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert float(kd_loss(out, other, index, temperature=1.0)) > 0.01
    # Skill a's tags at a position the student gets wrong.
    wrong = dict(matching, soft_tags=matching["soft_tags"].flip(-1))
    assert float(kd_loss(out, wrong, index, temperature=1.0)) > 0.01


# -- label mapping ---------------------------------------------------------------------------------


def python_teacher(name: str, skill: str, speaks: list[str], tags: list[str], **kw: Any) -> Any:
    """A teacher that speaks these intents and slots of `skill` (never asked here)."""
    return open_teacher(
        TeacherConfig(
            name=name,
            kind="python",
            function="json:loads",
            labels={skill: {"intents": speaks, "slots": tags}},
            **kw,
        )
    )


def test_two_teachers_claiming_one_skill_with_other_labels_is_an_error() -> None:
    a = python_teacher("a", "weather", ["forecast"], ["city"])
    b = python_teacher("b", "weather", ["forecast", "alerts"], ["city"])
    with pytest.raises(TeacherError, match=r"teachers a and b both claim skill 'weather'.*alerts"):
        student_labels([a, b], {t.name: label_map(t) for t in (a, b)}, [])
    # The same label set (an ensemble) is fine, and so is one mapped onto the other.
    c = python_teacher(
        "c",
        "meteo",
        ["forecast", "warn"],
        ["town"],
        skills={"meteo": "weather"},
        intents={"warn": "alerts"},
        slots={"town": "city"},
    )
    labels = student_labels([b, c], {t.name: label_map(t) for t in (b, c)}, [])
    assert [(s.name, s.intents, s.slots) for s in labels] == [
        ("weather", ["alerts", "forecast"], ["city"])
    ]


def test_a_teacher_label_without_a_counterpart_in_gold_is_an_error() -> None:
    teacher = python_teacher("vendor", "timer", ["set", "snooze"], ["duration"])
    gold = [SkillLabels("timer", ["cancel", "set"], ["duration"])]
    with pytest.raises(TeacherError, match="vendor: intent 'snooze' of skill 'timer' has no count"):
        student_labels([teacher], {"vendor": label_map(teacher)}, gold)
    dropped = python_teacher(
        "vendor", "timer", ["set", "snooze"], ["duration"], intents={"snooze": None}
    )
    labels = student_labels([dropped], {"vendor": label_map(dropped)}, gold)
    assert labels == gold


def test_a_mapping_of_a_label_the_teacher_does_not_speak_is_an_error() -> None:
    teacher = python_teacher("vendor", "timer", ["set"], ["duration"], slots={"lenght": "duration"})
    with pytest.raises(TeacherError, match="vendor: slots maps 'lenght'"):
        label_map(teacher)


def test_undeclared_answers_and_missing_labels_are_errors(rasa_timer: Stub) -> None:
    with pytest.raises(TeacherError, match="declare the labels it answers with"):
        open_teacher(TeacherConfig(name="x", kind="rasa", url=rasa_timer.url, skill="timer"))
    from transformers import AutoTokenizer

    from nlu.distill.answers import Answer
    from nlu.distill.targets import build_target
    from nlu.model.alignment import encode
    from nlu.model.encoders import resolve_encoder

    teacher = python_teacher("vendor", "timer", ["set"], ["duration"])
    index = LabelIndex.of(student_labels([teacher], {"vendor": label_map(teacher)}, []))
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder("default"))
    (enc,) = encode(tokenizer, ["snooze for 5 minutes"], 32)
    answer = Answer({"timer": 0.9}, {"snooze": 0.9}, [])
    with pytest.raises(TeacherError, match=r"vendor answered intent 'snooze'.*did not declare"):
        build_target(
            "snooze for 5 minutes",
            enc,
            {"vendor": answer},
            {"vendor": label_map(teacher)},
            index,
            owned=True,
            min_claim=0.5,
        )


def test_config_file_keys_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "distill.yaml"
    path.write_text("teachers:\n  - {name: a, kind: nlu, path: x, colour: red}\nepochs: 1\n")
    with pytest.raises(ConfigError, match="teacher a: unknown key 'colour'"):
        load(DistillConfig, path)
    path.write_text("teachers:\n  - {name: a, kind: nlu, path: x}\nalpha: 0.7\nepochs: 1\n")
    cfg = load(DistillConfig, path, ["temperature=3", "learning_rate=5e-5"])
    assert (cfg.kd.alpha, cfg.kd.temperature, cfg.student.optim.learning_rate) == (0.7, 3.0, 5e-5)
    assert cfg.student.data.data == []  # gold data is optional for distillation
    with pytest.raises(ConfigError, match="alpha"):
        load(DistillConfig, path, ["alpha=2"])


# -- remote teachers: batching, caching, retries, failures --------------------------------------


def counting_teacher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[int]]:
    module = tmp_path / "expert_mod.py"
    module.write_text(
        "CALLS = []\n"
        "def parse(texts):\n"
        "    CALLS.append(len(texts))\n"
        "    return [{'intent': {'name': 'set', 'confidence': 0.8},\n"
        "             'intent_ranking': [{'name': 'set', 'confidence': 0.8}],\n"
        "             'entities': []} for t in texts]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("expert_mod", None)
    teacher = open_teacher(
        TeacherConfig(
            name="py",
            kind="python",
            function="expert_mod:parse",
            skill="timer",
            labels={"timer": {"intents": ["set"], "slots": []}},
            batch_size=4,
        )
    )
    import expert_mod  # type: ignore[import-not-found]

    return teacher, expert_mod.CALLS


def test_cache_resumes_after_a_kill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    teacher, calls = counting_teacher(tmp_path, monkeypatch)
    texts = [f"set timer {i}" for i in range(10)]
    first = ask_all(teacher, texts[:6], tmp_path / "cache")
    assert calls == [4, 2] and first[texts[0]].intents == {"set": 0.8}
    # A kill while writing leaves a torn last line: that answer is asked again, nothing else.
    cache = AnswerCache(tmp_path / "cache", teacher.config).path
    data = cache.read_bytes()
    cache.write_bytes(data[: len(data) - 20])
    answers = ask_all(teacher, texts, tmp_path / "cache")
    assert calls == [4, 2, 4, 1] and len(answers) == 10
    assert len(AnswerCache(tmp_path / "cache", teacher.config).answers) == 10


def flaky(fail_first: int, *, status: int = 500, delay: float = 0.0) -> Callable[..., Any]:
    seen = {"n": 0}

    def answer(path: str, body: Any) -> tuple[int, Any]:
        seen["n"] += 1
        time.sleep(delay if seen["n"] <= fail_first else 0.0)
        if seen["n"] <= fail_first:
            return status, {"detail": "boom"}
        return rasa_timer_answer(path, body)

    return answer


def test_a_teacher_that_fails_once_is_retried(tmp_path: Path) -> None:
    stub = Stub(flaky(1))
    try:
        teacher = open_teacher(rasa_teacher(stub.url, retries=2, concurrency=1))
        texts = [e.text for e in read_jsonl(TIMER)][:3]
        answers = ask_all(teacher, texts, tmp_path)
        assert answers[texts[0]].skills == {"timer": 0.9}
    finally:
        stub.close()


def test_a_teacher_that_keeps_failing_is_a_clear_error(tmp_path: Path) -> None:
    stub = Stub(flaky(10**6))
    try:
        teacher = open_teacher(rasa_teacher(stub.url, retries=1))
        with pytest.raises(TeacherError, match=r"teacher timer_expert .* failed 2 times.*500"):
            ask_all(teacher, ["set a timer for 5 minutes"], tmp_path)
    finally:
        stub.close()


def test_a_teacher_that_times_out_is_a_clear_error(tmp_path: Path) -> None:
    stub = Stub(flaky(10**6, status=200, delay=1.0))
    try:
        teacher = open_teacher(rasa_teacher(stub.url, retries=1, timeout_s=0.2))
        with pytest.raises(TeacherError, match=r"timer_expert .* failed 2 times.*timed out"):
            ask_all(teacher, ["set a timer for 5 minutes"], tmp_path)
    finally:
        stub.close()


@pytest.mark.slow
def test_an_nlu_server_teaches_what_its_model_parses(
    trained: TrainResult, tiny_skill: Path, tmp_path: Path
) -> None:
    """`nlu serve` in its own process as an http teacher: labels from GET /skills, answers
    equal to parsing with the model itself."""
    proc, port = start_server(trained.model_dir)
    try:
        teacher = open_teacher(
            TeacherConfig(name="served", kind="http", url=f"http://127.0.0.1:{port}")
        )
        assert teacher.labels == {
            "lights": (["set_color", "turn_off", "turn_on"], ["color", "room"])
        }
        texts = [e.text for e in load_split(tiny_skill, "test").examples]
        answers = ask_all(teacher, texts, tmp_path)
        parsed = Parser.from_pretrained(trained.model_dir).parse(texts)
        for text, result in zip(texts, parsed, strict=True):
            answer = answers[text]
            assert result.intent is not None
            assert max(answer.intents, key=answer.intents.__getitem__) == result.intent.name
            assert answer.spans == [(s.start, s.end, s.slot) for s in result.slots]
    finally:
        proc.kill()
        proc.wait()


def test_a_hugging_face_pair_teaches_through_character_offsets(
    tiny_encoder: str, tmp_path: Path
) -> None:
    """A sequence- and a token-classification model (labels "skill/intent" and BIO tags) as a
    teacher: its label space comes from the models, its per-word tag distributions land on the
    student's words by character offsets, mapped onto the student's names."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    from nlu.distill.targets import build_target
    from nlu.model.alignment import encode

    intents = ["media/play", "media/stop", "home/lights_on"]
    tags = ["O", "B-song", "I-song"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    for folder, auto, names in (
        ("intent", AutoModelForSequenceClassification, intents),
        ("slots", AutoModelForTokenClassification, tags),
    ):
        model = auto.from_pretrained(
            tiny_encoder,
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)},
        )
        model.save_pretrained(tmp_path / folder)
        tokenizer.save_pretrained(tmp_path / folder)
    teacher = open_teacher(
        TeacherConfig(
            name="hf",
            kind="hf",
            path=str(tmp_path / "intent"),
            slot_model=str(tmp_path / "slots"),
            slots={"song": "track"},
        )
    )
    assert teacher.labels == {
        "home": (["lights_on"], ["song"]),
        "media": (["play", "stop"], ["song"]),
    }
    text = "play Bohemian Rhapsody, please"
    (answer,) = teacher.ask([text])
    assert sum(answer.skills.values()) == pytest.approx(1.0, abs=1e-3)
    assert answer.words is not None
    assert [text[w.start : w.end] for w in answer.words] == [
        "play",
        "Bohemian",
        "Rhapsody",
        ",",
        "please",
    ]
    maps = {"hf": label_map(teacher)}
    index = LabelIndex.of(student_labels([teacher], maps, []))
    assert [(s.name, s.slots) for s in index.skills] == [("home", ["track"]), ("media", ["track"])]
    (enc,) = encode(tokenizer, [text], 32)
    target = build_target(text, enc, {"hf": answer}, maps, index, owned=True, min_claim=0.5)
    assert target.tags is not None and target.tags.shape == (5, 3)
    # Each word's distribution is the teacher's, renamed (B-song -> B-track), not a one-hot.
    first = answer.words[1].tags
    skill = index.skill(str(target.example.skill))
    assert target.tags[1, skill.tags.index("B-track")] == pytest.approx(
        first.get("B-song", 0.0) / sum(first.values()), abs=1e-4
    )


def test_the_example_config_loads() -> None:
    cfg = load(DistillConfig, CONFIGS / "distill_example.yaml")
    assert [t.kind for t in cfg.teachers] == ["nlu", "rasa", "hf"]
    assert cfg.teachers[1].intents == {"timer_set": "set", "timer_cancel": "cancel"}
    assert cfg.kd.transfer == ["data/unlabelled.txt"] and cfg.student.optim.epochs == 3


def test_gold_labels_replace_the_hard_labels_and_keep_the_soft_ones() -> None:
    import numpy as np
    from transformers import AutoTokenizer

    from nlu.distill.targets import Target, with_gold
    from nlu.model.alignment import encode
    from nlu.model.encoders import resolve_encoder
    from nlu.schema import Example, Span

    index = LabelIndex.of(
        [SkillLabels("timer", ["cancel", "set"], ["duration"]), SkillLabels("music", ["play"], [])]
    )
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder("default"))
    soft = np.array([0.3, 0.7], dtype=np.float32)
    taught = Target(Example("set one", "timer", "set"), np.array([1.0, 0.0]), soft, None)
    other = Target(Example("play it", "timer", "set"), np.array([1.0, 0.0]), soft, None)
    gold = [
        Example("set one", "timer", "cancel"),  # the teacher's top intent was wrong
        Example("play it", "music", "play"),  # gold puts it in another skill
        Example("timer for 5 minutes", "timer", "set", (Span(10, 19, "duration"),)),
    ]
    out = with_gold([taught, other], gold, index, tokenizer, 32)
    assert [t.example for t in out] == gold
    assert out[0].intent is soft  # the teacher's distribution stays
    assert out[1].router is not None and list(out[1].router) == [0.0, 1.0]  # one-hot on music
    (enc,) = encode(tokenizer, [gold[2].text], 32)
    assert out[2].tags is not None and out[2].tags.shape == (len(enc.words), 3)


def test_shared_texts_go_to_the_most_confident_claim_or_out_of_scope() -> None:
    from transformers import AutoTokenizer

    from nlu.distill.answers import Answer, from_rasa_shape
    from nlu.distill.targets import build_target
    from nlu.model.alignment import encode
    from nlu.model.encoders import resolve_encoder

    a = python_teacher("a", "weather", ["forecast"], [])
    b = python_teacher("b", "timer", ["set"], [])
    maps = {t.name: label_map(t) for t in (a, b)}
    index = LabelIndex.of(student_labels([a, b], maps, []))
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder("default"))
    text = "will it rain"
    (enc,) = encode(tokenizer, [text], 32)

    def target(claim_a: float, claim_b: float) -> Any:
        answers = {
            "a": Answer({"weather": claim_a}, {"forecast": 1.0}, []),
            "b": Answer({"timer": claim_b}, {"set": 1.0}, []),
        }
        return build_target(text, enc, answers, maps, index, owned=False, min_claim=0.5)

    claimed = target(0.9, 0.3)
    assert claimed.example.skill == "weather" and claimed.example.intent == "forecast"
    assert claimed.router is not None
    assert list(claimed.router) == pytest.approx([0.25, 0.75])  # [timer, weather], normalised
    unclaimed = target(0.4, 0.3)
    assert unclaimed.example.skill is None and unclaimed.router is None
    # Rasa's fallback intent on top claims nothing.
    fallback = from_rasa_shape(
        {
            "intent": {"name": "nlu_fallback", "confidence": 0.7},
            "intent_ranking": [
                {"name": "nlu_fallback", "confidence": 0.7},
                {"name": "set", "confidence": 0.2},
            ],
            "entities": [],
        },
        "timer",
    )
    assert fallback.skills == {} and fallback.intents == {"set": 0.2}


def test_a_dropped_top_skill_claims_nothing_and_an_undeclared_skill_is_an_error() -> None:
    from nlu.distill.answers import Answer
    from nlu.distill.targets import mapped_claims

    teacher = open_teacher(
        TeacherConfig(
            name="vendor",
            kind="python",
            function="json:loads",
            labels={"timer": {"intents": ["set"]}, "shopping": {"intents": ["add"]}},
            skills={"shopping": None},
        )
    )
    lmap = label_map(teacher)
    assert mapped_claims(Answer({"timer": 0.8, "shopping": 0.2}, {"set": 1.0}, []), lmap, "v") == {
        "timer": 0.8
    }
    # Its intents are about shopping, which the student does not learn: no claim at all.
    assert mapped_claims(Answer({"timer": 0.3, "shopping": 0.7}, {"add": 1.0}, []), lmap, "v") == {}
    with pytest.raises(TeacherError, match="answered skill 'weather', which it did not declare"):
        mapped_claims(Answer({"weather": 0.9}, {"set": 1.0}, []), lmap, "vendor")


def test_the_cli_reports_a_bad_teacher_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nlu.cli import main

    config = tmp_path / "distill.yaml"
    config.write_text(
        "teachers:\n"
        "  - {name: vendor, kind: rasa, url: 'http://127.0.0.1:9', skill: timer}\n"
        f"output_dir: {tmp_path / 'run'}\n"
    )
    assert main(["distill", str(config)]) == 2
    err = capsys.readouterr().err
    assert "nlu distill: error: teacher vendor (rasa): declare the labels" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()
