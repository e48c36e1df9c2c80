"""A team's two real projects join the shipped skills: the demo config, as it ships (default
out-of-scope settings, no manual calibrate), still routes and still rejects what no skill
handles (issue 34; figures in benchmarks/results/studies/imported-rejection.md)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nlu.data.importers import read_alexa, read_rasa, write_import
from tests.helpers import CONFIGS, FIXTURES, ROOT, SKILLS

REAL = FIXTURES / "real"


@pytest.mark.slow
def test_demo_config_with_two_imported_projects_routes_and_rejects(tmp_path: Path) -> None:
    from nlu.config import load_config
    from nlu.data.loaders import load_split
    from nlu.inference.parser import Parser
    from nlu.training.train import train

    skills = tmp_path / "skills"
    shutil.copytree(SKILLS, skills)
    write_import(
        read_rasa([REAL / "rasa/helpdesk-assistant"], skill="helpdesk"), skills, test_fraction=0.2
    )
    trips = read_alexa(REAL / "alexa/ask-sdk-java-plantripdialog.json", skill="trips")
    write_import(trips, skills, test_fraction=0.2)
    cfg = load_config(CONFIGS / "demo.yaml", [f"data={skills}", f"output_dir={tmp_path / 'run'}"])
    parser = Parser.from_pretrained(train(cfg).model_dir)

    tests = load_split(skills, "test").examples
    unrelated = [
        t
        for t in (ROOT / "benchmarks/data/unrelated.txt").read_text().splitlines()
        if t.strip() and not t.startswith("#")
    ]
    oos = [e.text for e in tests if e.skill is None]
    shipped = [e for e in tests if e.skill in {"alarm", "music", "smart_home", "timer", "weather"}]
    imported = [e for e in tests if e.skill in {"helpdesk", "trips"}]

    def accepted(texts: list[str]) -> float:
        return sum(r.in_scope for r in parser.parse(texts)) / len(texts)

    assert accepted(unrelated) <= 0.10
    assert accepted(oos) <= 0.15  # the target is 10 %; measured 9.8 % (one seed)
    assert 1 - accepted([e.text for e in shipped]) <= 0.05  # target 3 %; measured 1.9 %
    routed = parser.parse([e.text for e in imported])
    right = sum(
        r.skill is not None and r.skill.name == e.skill
        for r, e in zip(routed, imported, strict=True)
    )
    assert right / len(imported) >= 0.75  # 18 held-out texts; rejection costs a few
