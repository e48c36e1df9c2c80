"""Does out-of-scope rejection hold when a team's own skills join the shipped ones? (issue 34)

    python benchmarks/imported_rejection.py --out runs/rejection            # shipped + 2 imported
    python benchmarks/imported_rejection.py --out runs/rejection-shipped --shipped-only
    python benchmarks/imported_rejection.py --out runs/rejection-s1 --seed 1   # another seed

Builds a skills folder: the five shipped skills with skills/out_of_scope.yaml, plus (unless
--shipped-only) two real public projects imported as a user would (`nlu import`, 20 % held
out as tests): the helpdesk-assistant Rasa project and the plan-my-trip Alexa model from
tests/fixtures/real. Trains configs/demo.yaml on it (default settings; reused when the run
exists), then refits the detector with each method at the demo's target in-scope recall
(`nlu calibrate`, no retraining) and reports, per method:
- accepted: the share of the shipped out-of-scope tests and of benchmarks/data/unrelated.txt
  (60 texts none of the skills handles) that the model accepts (lower is better);
- rejected: the share of the hand-written in-scope tests (the shipped skills' tests.yaml, and
  the imported skills' held-out tests) that the model rejects (lower is better).
`auto` is what training chose by itself. Writes <out>/rejection.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from nlu.config import OodConfig, load_config
from nlu.data.importers import read_alexa, read_rasa, write_import
from nlu.data.loaders import load_split
from nlu.inference.parser import Parser
from nlu.model import modeldir
from nlu.training.calibrate import recalibrate
from nlu.training.train import train

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "tests" / "fixtures" / "real"
SHIPPED = ("alarm", "music", "smart_home", "timer", "weather")
METHODS = ("energy", "mahalanobis", "msp", "temperature")


def build_skills(folder: Path, *, shipped_only: bool) -> None:
    if folder.exists():
        return
    shutil.copytree(ROOT / "skills", folder)
    if shipped_only:
        return
    rasa = read_rasa([REAL / "rasa" / "helpdesk-assistant"], skill="helpdesk")
    write_import(rasa, folder, test_fraction=0.2)
    alexa = read_alexa(REAL / "alexa" / "ask-sdk-java-plantripdialog.json", skill="trips")
    write_import(alexa, folder, test_fraction=0.2)


def unrelated() -> list[str]:
    lines = (ROOT / "benchmarks" / "data" / "unrelated.txt").read_text().splitlines()
    return [t for t in lines if t.strip() and not t.startswith("#")]


def measure(model: Path, skills: Path) -> dict[str, Any]:
    parser = Parser.from_pretrained(model)
    tests = load_split(skills, "test").examples
    groups = {
        "shipped out-of-scope tests": [e.text for e in tests if e.skill is None],
        "unrelated texts": unrelated(),
        "shipped in-scope tests": [e.text for e in tests if e.skill in SHIPPED],
        "imported in-scope tests": [e.text for e in tests if e.skill and e.skill not in SHIPPED],
    }
    row: dict[str, Any] = {"method": parser.ood.method if parser.ood else "none"}
    for name, texts in groups.items():
        if not texts:
            continue
        accepted = sum(r.in_scope for r in parser.parse(texts))
        share = (
            accepted
            if "out-of-scope" in name or name == "unrelated texts"
            else len(texts) - accepted
        )
        verb = "accepted" if share is accepted else "rejected"
        row[f"{name} {verb} (%)"] = round(100 * share / len(texts), 1)
        row[f"{name} n"] = len(texts)
    return row


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/rejection"))
    ap.add_argument("--shipped-only", action="store_true")
    ap.add_argument("--seed", type=int, default=None, help="training seed (default: the config's)")
    args = ap.parse_args()
    skills = args.out / "skills"
    build_skills(skills, shipped_only=args.shipped_only)
    overrides = [f"data={skills}", f"output_dir={args.out / 'run'}"]
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    cfg = load_config(ROOT / "configs" / "demo.yaml", overrides)
    model = args.out / "run" / "model"
    if not (model / modeldir.META_FILE).is_file():
        train(cfg)
    folder = modeldir.load(model)
    chosen = folder.ood.report.get("chosen", {}) if folder.ood else {}
    rows = [{**measure(model, skills), "method": f"auto ({chosen.get('method')})"}]
    for method in METHODS:
        recalibrate(model, OodConfig(oos_method=method, target_recall=cfg.ood.target_recall))  # type: ignore[arg-type]
        rows.append(measure(model, skills))
    recalibrate(model, OodConfig(oos_method="auto", target_recall=cfg.ood.target_recall))
    report = {"skills": sorted(p.name for p in skills.iterdir() if p.is_dir()), "rows": rows}
    (args.out / "rejection.json").write_text(json.dumps(report, indent=2))
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
