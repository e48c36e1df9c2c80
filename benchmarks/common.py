"""What the benchmark scripts share: writing their results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_results(stem: str | Path, table: str, payload: Any) -> None:
    """`stem`.json (everything measured) and `stem`.md (the table), announced on stdout.
    Not `with_suffix`: a stem such as "fusion-a0.5" would lose its ".5"."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    Path(f"{stem}.md").write_text(table + "\n")
    print(f"wrote {stem}.json and .md")
