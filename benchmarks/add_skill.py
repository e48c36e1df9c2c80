"""Transfer learning: add a skill to a trained model (frozen encoder) vs. retrain everything.

    python benchmarks/add_skill.py [--new timer]

1. base: joint model on the four other demo skills (configs/demo.yaml settings);
2. added: `nlu add-skill base skills/<new>` (encoder, old heads and old router rows frozen);
3. retrained: one joint model on all five skills from scratch (the alternative).
Scores on the hand-written test files (never produced by templates): the new skill's intent
accuracy / slot F1 / exact match for (2) and (3); the old skills' routing accuracy before and
after adding; and the wall time of (2) against (3), measured in the same run. Writes
benchmarks/results/add_skill.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

SKILLS = ["alarm", "music", "smart_home", "timer", "weather"]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--new", default="timer", choices=SKILLS)
    ap.add_argument("--out", default="runs/add_skill")
    ap.add_argument("--results", default="benchmarks/results/add_skill")
    args = ap.parse_args()

    from nlu.config import load_config, replace
    from nlu.evaluation.evaluate import evaluate
    from nlu.training.add_skill import add_skill
    from nlu.training.train import train

    out = Path(args.out)
    old = [f"skills/{s}" for s in SKILLS if s != args.new]
    new = f"skills/{args.new}"
    base_cfg = load_config("configs/demo.yaml", [f"output_dir={out / 'base'}"])
    base_cfg = replace(base_cfg, data=old)
    base = train(base_cfg)

    started = time.perf_counter()
    added = add_skill(model_dir=base.model_dir, skill_data=[new], out_dir=out / "added")
    add_seconds = time.perf_counter() - started

    full_cfg = load_config("configs/demo.yaml", [f"output_dir={out / 'retrained'}"])
    full_cfg = replace(full_cfg, data=[*old, new])
    started = time.perf_counter()
    full = train(full_cfg)
    full_seconds = time.perf_counter() - started

    def scores(model: Path, data: list[str]) -> dict[str, Any]:
        return dict(evaluate(model_dir=model, data=data, split="test")["overall"])

    keys = ("router_accuracy", "intent_accuracy", "slot_f1", "exact_match")
    result = {
        "new_skill": args.new,
        "new_skill_test": {
            "added (frozen encoder)": scores(added.model_dir, [new]),
            "retrained (all skills)": scores(full.model_dir, [new]),
        },
        "old_skills_test": {
            "base (before adding)": scores(base.model_dir, old),
            "added (after adding)": scores(added.model_dir, old),
            "retrained (all skills)": scores(full.model_dir, old),
        },
        "seconds": {
            "add_skill_total": round(add_seconds, 1),
            "add_skill_training": added.seconds,
            "retrain_total": round(full_seconds, 1),
            "retrain_training": full.train_seconds,
        },
    }
    lines = [
        f"New skill: {args.new} (hand-written test file); old skills: "
        + ", ".join(s for s in SKILLS if s != args.new)
        + ".",
        "",
        "| model | data | " + " | ".join(keys) + " |",
        "|---|---|" + "---|" * len(keys),
    ]
    for part in ("new_skill_test", "old_skills_test"):
        for name, m in result[part].items():
            label = "new skill" if part == "new_skill_test" else "old skills"
            lines.append(f"| {name} | {label} | " + " | ".join(str(m[k]) for k in keys) + " |")
    s = result["seconds"]
    lines += [
        "",
        f"Wall time: add-skill {s['add_skill_total']} s (of which {s['add_skill_training']} s "
        f"features + head training) vs. full retraining {s['retrain_total']} s: ratio "
        f"{s['retrain_total'] / s['add_skill_total']:.1f}x.",
    ]
    text = "\n".join(lines)
    print(text)
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    results.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
