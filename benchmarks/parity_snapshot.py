"""Parse results of every hand-written test on PyTorch, ONNX fp32 and ONNX int8, as one JSON.

Used to prove that a refactor changed no behaviour: run it on a model trained by the old code
and on one trained by the new code (same seed), then `--compare` the two snapshots. The file
also records the SHA-256 of `model.safetensors`, so byte-identical weights show at a glance.

    python benchmarks/parity_snapshot.py runs/demo/model --out /tmp/new.json
    python benchmarks/parity_snapshot.py --compare /tmp/old.json /tmp/new.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

# A fixed clock: date and time slot values resolve relative to it.
REFERENCE_TIME = "2026-11-26T09:00:00"


def hand_written_texts(skills: Path) -> list[str]:
    from nlu.data.loaders import load_split

    texts = [e.text for e in load_split(str(skills), "test").examples]
    return sorted(set(texts))


def snapshot(model_dir: Path, skills: Path) -> dict[str, Any]:
    import nlu
    from nlu.model.export import export_onnx
    from nlu.result import ParseOptions

    texts = hand_written_texts(skills)
    from datetime import datetime

    options = [ParseOptions(reference_time=datetime.fromisoformat(REFERENCE_TIME))] * len(texts)
    weights = (model_dir / "model.safetensors").read_bytes()
    out: dict[str, Any] = {"sha256": hashlib.sha256(weights).hexdigest(), "texts": texts}
    with tempfile.TemporaryDirectory() as tmp:
        folders = {"torch": model_dir}
        for name, quantize in (("onnx_fp32", None), ("onnx_int8", "int8")):
            folders[name] = Path(tmp) / name
            export_onnx(model_dir=model_dir, out_dir=folders[name], quantize=quantize)
        for name, folder in folders.items():
            parser = nlu.load(folder, backend="torch" if name == "torch" else "onnx")
            results = parser.parse_with_options(texts, options)
            out[name] = [r.to_dict() for r in results]
    return out


def compare(old: dict[str, Any], new: dict[str, Any]) -> int:
    print(f"model.safetensors identical: {old['sha256'] == new['sha256']}")
    bad = 0
    for backend in ("torch", "onnx_fp32", "onnx_int8"):
        differ = [
            text
            for text, a, b in zip(old["texts"], old[backend], new[backend], strict=True)
            if a != b
        ]
        bad += len(differ)
        print(f"{backend}: {len(old['texts']) - len(differ)} / {len(old['texts'])} identical")
        for text in differ[:5]:
            print(f"  differs: {text}")
    return 1 if bad or old["sha256"] != new["sha256"] else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--skills", type=Path, default=Path("skills"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("OLD", "NEW"))
    args = parser.parse_args()
    if args.compare:
        old, new = (json.loads(p.read_text()) for p in args.compare)
        return compare(old, new)
    if args.model is None or args.out is None:
        parser.error("give MODEL and --out, or --compare OLD NEW")
    args.out.write_text(json.dumps(snapshot(args.model, args.skills), indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
