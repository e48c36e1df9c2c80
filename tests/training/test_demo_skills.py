"""Train the real default encoder briefly on the shipped skills; check the hand-written tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from nlu.config import TrainConfig, replace
from nlu.evaluation.evaluate import evaluate
from nlu.training.train import train
from tests.helpers import SKILLS


@pytest.mark.slow
def test_default_encoder_generalises_to_hand_written_tests(tmp_path: Path) -> None:
    cfg = replace(
        TrainConfig(),
        data=[str(SKILLS)],
        encoder="default",
        samples_per_template=10,
        epochs=2,
        output_dir=str(tmp_path),
        seed=0,
        # This test is about the classifier and export parity; rejection on the demo skills is
        # measured in benchmarks/results/studies/out-of-scope.md and tested in
        # tests/test_out_of_scope.py.
        oos_method="none",
    )
    result = train(cfg)
    metrics = evaluate(model_dir=result.model_dir, data=[SKILLS], split="test")["overall"]
    assert metrics["n"] >= 150
    # Chance is 1/19 intents; these utterances were never produced by the templates.
    assert metrics["router_accuracy"] >= 90.0, metrics
    assert metrics["intent_accuracy"] >= 85.0, metrics
    assert metrics["slot_f1"] >= 75.0, metrics
    assert metrics["exact_match"] >= 60.0, metrics

    # Export parity on the demo skills: ONNX fp32 makes the same decisions as PyTorch;
    # per-channel int8 keeps (nearly) all of them.
    from nlu.data.loaders import load_split
    from nlu.inference.parser import Parser
    from nlu.model.export import export_onnx

    texts = [e.text for e in load_split(SKILLS, "test").examples if e.in_scope]
    export_onnx(model_dir=result.model_dir, out_dir=tmp_path / "onnx")
    export_onnx(model_dir=result.model_dir, out_dir=tmp_path / "int8", quantize="int8")

    def decisions(directory: Path) -> list[tuple[str, str, list[tuple[str, int, int]]]]:
        return [
            (
                r.skill.name if r.skill else "",
                r.intent.name if r.intent else "",
                [(s.slot, s.start, s.end) for s in r.slots],
            )
            for r in Parser.from_pretrained(directory).parse(texts)
        ]

    reference = decisions(result.model_dir)
    assert decisions(tmp_path / "onnx") == reference
    int8 = decisions(tmp_path / "int8")
    agreement = sum(a == b for a, b in zip(int8, reference, strict=True)) / len(texts)
    # This briefly trained model is less confident than the shipped demo model, so int8 flips
    # more decisions: measured 95.0% here (151/159) vs 99.2% (521/525, tests + dev) for the
    # 4-epoch demo model of configs/demo.yaml.
    assert agreement >= 0.93, agreement

    # Slot resolution on what the model found (issue target: >= 95 % of the correctly found
    # slots whose text the skill lists carry that listed value).
    from datetime import datetime

    from nlu.resolve import normalise, parse_kind

    now = datetime(2026, 11, 26, 9, 0)
    examples = [e for e in load_split(SKILLS, "test").examples if e.in_scope]
    parser = Parser.from_pretrained(result.model_dir)
    listed = right = 0
    for example, parsed in zip(examples, parser.parse(texts, reference_time=now), strict=True):
        if parsed.skill is None or parsed.skill.name != example.skill:
            continue
        skill = next(s for s in parser.skills if s.name == example.skill)
        found = {(s.start, s.end, s.slot): s for s in parsed.slots}
        for span in example.slots:
            hit = found.get((span.start, span.end, span.slot))
            want = skill.slot_values.get(span.slot, {}).get(normalise(example.value(span)))
            if hit is None or want is None:
                continue
            kind = skill.slot_kinds.get(span.slot)
            listed += 1
            right += hit.resolved == ((parse_kind(kind, want, now) or want) if kind else want)
    assert listed >= 100 and right / listed >= 0.95, (right, listed)
