"""Slot value resolution on a conformance suite (issue 35): right, missed (null) and wrong
values by kind, and what a call costs.

    python benchmarks/slot_values.py                          # ours, on the shipped suite
    python benchmarks/slot_values.py --baseline-rev 9b3fda5   # and the resolver of that commit
    python benchmarks/slot_values.py --suite my_values.yaml   # a suite of your own

A case is right when the value is the expected one (or, for an ambiguous span, the expected
candidates), a miss when the value is null, wrong when it is another value: the outcome that
must never happen. The baseline is `nlu/resolve.py` as it was at --baseline-rev (text2num and
dateparser, which it imports, must be installed); its kinds lacked `ordinal`, whose cases it
misses. Cost: microseconds a call, each expression once with an empty cache (cold) and again
(warm), and the ratio of ours to the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from common import write_results  # benchmarks/ is the script's folder

from nlu.resolve import Reference, Resolution, interpret
from nlu.resolve.conformance import Checked, check, load_suite
from nlu.resolve.kinds import _interpret

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "tests" / "fixtures" / "values" / "conformance.yaml"
Interpret = Callable[[str, str, Reference], Resolution]


def old_module(rev: str) -> ModuleType:
    """`nlu/resolve.py` as it was at commit `rev` (a single module then)."""
    source = subprocess.run(
        ["git", "show", f"{rev}:nlu/resolve.py"], cwd=ROOT, capture_output=True, text=True
    )
    if source.returncode:
        sys.exit(f"--baseline-rev {rev}: no nlu/resolve.py there ({source.stderr.strip()})")
    path = Path(tempfile.mkdtemp()) / "old_resolve.py"
    path.write_text(source.stdout)
    spec = importlib.util.spec_from_file_location("old_resolve", path)
    assert spec and spec.loader
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules["old_resolve"] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def baseline(rev: str) -> tuple[Interpret, Callable[[], None]]:
    """The resolver of commit `rev` as an `interpret`, and its cache clearer."""
    module = old_module(rev)

    def old(kind: str, text: str, reference: Reference) -> Resolution:
        if kind not in module.KINDS:
            return Resolution(None, "no_match")
        got = module.resolve(text, module.SlotCatalog({}, kind), reference=reference.moment)
        return Resolution(got.value, got.status)

    return old, module._parse_kind.cache_clear


def cost(
    interpret_: Interpret, clear: Callable[[], None], cases: Any, refs: Any
) -> dict[str, float]:
    cold: list[float] = []
    warm: list[float] = []
    for case in cases:
        clear()
        for times in (cold, warm):
            start = time.perf_counter()
            interpret_(case.kind, case.text, refs[case.reference])
            times.append((time.perf_counter() - start) * 1e6)
    return {"cold_us_median": statistics.median(cold), "warm_us_median": statistics.median(warm)}


def table(checked: list[Checked]) -> dict[str, dict[str, int]]:
    rows: dict[str, Counter[str]] = {}
    for c in checked:
        rows.setdefault(c.case.kind, Counter())[c.outcome] += 1
    rows["all"] = sum(rows.values(), Counter())
    return {k: {o: v[o] for o in ("right", "miss", "wrong")} for k, v in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", type=Path, default=SUITE)
    parser.add_argument("--baseline-rev", help="also score nlu/resolve.py of this commit")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "slot_values")
    args = parser.parse_args()
    references, cases = load_suite(args.suite)
    contenders: dict[str, tuple[Interpret, Callable[[], None]]] = {
        "ours": (interpret, _interpret.cache_clear)
    }
    if args.baseline_rev:
        contenders[f"baseline {args.baseline_rev}"] = baseline(args.baseline_rev)
    results: dict[str, Any] = {}
    lines = [f"suite: {args.suite} ({len(cases)} cases)", ""]
    lines += [
        "| resolver | kind | cases | right | miss (null) | wrong | right % |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (interpret_, clear) in contenders.items():
        checked = check(cases, references, interpret_)
        rows = table(checked)
        for kind, row in rows.items():
            n = sum(row.values())
            lines.append(
                f"| {name} | {kind} | {n} | {row['right']} | {row['miss']} | {row['wrong']} "
                f"| {100 * row['right'] / n:.1f} |"
            )
        results[name] = {
            "table": rows,
            "cost": cost(interpret_, clear, cases, references),
            "not_right": [
                {"kind": c.case.kind, "text": c.case.text, "reference": c.case.reference,
                 "expected": c.case.expected or list(c.case.ambiguous), "got": c.got.value,
                 "status": c.got.status, "outcome": c.outcome}
                for c in checked if c.outcome != "right"
            ],
        }  # fmt: skip
    lines += ["", "| resolver | cold µs/call (median) | warm µs/call (median) |", "|---|---|---|"]
    for name, result in results.items():
        c = result["cost"]
        lines.append(f"| {name} | {c['cold_us_median']:.0f} | {c['warm_us_median']:.1f} |")
    if len(results) > 1:
        ours, base = (r["cost"]["cold_us_median"] for r in list(results.values())[:2])
        lines.append(f"\ncold cost, ours / baseline: {ours / base:.2f}")
    for name, result in results.items():
        if result["not_right"]:
            lines += ["", f"not right ({name}):"]
            lines += [
                f"- {r['outcome']}: {r['kind']} {r['text']!r} ({r['reference']}): expected "
                f"{r['expected']}, got {r['got']} ({r['status']})"
                for r in result["not_right"]
            ]
    text = "\n".join(lines)
    print(text)
    write_results(args.out / "slot_values", text, results)


if __name__ == "__main__":
    main()
