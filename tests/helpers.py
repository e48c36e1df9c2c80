"""What tests share besides fixtures: where things are, a loopback server, a tiny federation."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from nlu.config import build

if TYPE_CHECKING:
    from nlu.federated.config import FederatedConfig
    from nlu.result import ParseResult

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SKILLS = ROOT / "skills"
CONFIGS = ROOT / "configs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    model_dir: Path, *options: str, timeout: float = 60.0
) -> tuple[subprocess.Popen[bytes], int]:
    """`nlu serve MODEL --port P OPTIONS` in its own process, once /health answers; the caller
    stops it. stdout and stderr are piped (a test may read them after it stops)."""
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "nlu.cli", "serve", str(model_dir), "--port", str(port)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [*cmd, *options], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    proc.wait()
    pytest.fail(f"the server ({' '.join(options) or 'defaults'}) did not start in {timeout:.0f} s")


# Local training that learns the tiny skills in a few rounds (the tests' tiny encoder).
TINY = {
    "samples_per_template": 10,
    "dev_fraction": 0.2,
    "batch_size": 8,
    "learning_rate": 1e-3,
    "head_learning_rate": 3e-3,
    "oos_method": "none",
    "seed": 0,
    "local_epochs": 3,
}


def fed_config(tiny_encoder: str, out: Path, **changes: Any) -> FederatedConfig:
    """Two skill owners (the lights skill folder, the timer file) on the tiny encoder."""
    from nlu.federated.config import FederatedConfig

    values = {
        "data": [str(FIXTURES / "skills"), str(FIXTURES / "timer.jsonl")],
        "encoder": tiny_encoder,
        "output_dir": str(out),
        "rounds": 4,
        **TINY,
        **changes,
    }
    return build(FederatedConfig, values, source="test")


def said(text: str, skill: str, intent: str, confidence: float, *slots: Any) -> ParseResult:
    """A hand-made parse result: `slots` as (slot, start, end) in `text`."""
    from nlu.result import ParseResult, Scored, SkillChoice, SlotValue

    return ParseResult(
        text=text,
        skill=SkillChoice(skill, 0.9, False),
        intent=Scored(intent, confidence),
        intents=[Scored(intent, confidence)],
        slots=[SlotValue(n, text[a:b], a, b, 0.9) for n, a, b in slots],
        truncated=False,
    )


def broken_tests(tmp_path: Path) -> Path:
    """A copy of the fixture skills whose tests.yaml names an unknown slot and intent."""
    import shutil

    skills = tmp_path / "skills"
    shutil.copytree(FIXTURES / "skills", skills)
    (skills / "lights" / "tests.yaml").write_text(
        "turn_on:\n  - lights on in the [hall](room)\n  - lights on in the [hall](rooom)\n"
        "dance:\n  - do a dance\n"
    )
    return skills


def dated_parser(model_dir: Path) -> Any:
    """The tiny skill's parser with its `room` slot made a date slot whose "kitchen" stands for
    "tomorrow": a parse of "turn on the kitchen lights" then shows the request's "now"."""
    import dataclasses

    from nlu.inference.parser import Parser

    parser = Parser.from_pretrained(model_dir)
    (skill,) = parser.skills
    dated = dataclasses.replace(
        skill, slot_kinds={"room": "date"}, slot_values={"room": {"kitchen": "tomorrow"}}
    )
    return Parser(
        forward=parser.forward,
        skills=[dated],
        tokenizer=parser.tokenizer,
        max_length=parser.max_length,
        backend=parser.backend,
        ood=parser.ood,
    )
