"""The documentation a user reads stays true: the generated references match the code, the
README stays an entry point, and every relative link leads somewhere."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.helpers import ROOT


def test_the_generated_references_match_the_code() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/reference.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_the_readme_is_an_entry_point() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200
    assert max(len(line) for line in lines) <= 120
    # The two commands come first, as a newcomer reads them.
    commands = [line for line in lines[:12] if line.startswith("bash scripts/")]
    assert [c.split()[1] for c in commands] == ["scripts/demo.sh", "scripts/test.sh"]


def test_every_relative_link_resolves() -> None:
    pages = [
        ROOT / "README.md",
        ROOT / "CHANGELOG.md",
        *ROOT.glob("docs/**/*.md"),
        *ROOT.glob("benchmarks/results/studies/*.md"),
    ]
    broken = []
    for page in pages:
        # Code is not a link: `[value](slot)` is the skill files' markup.
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        text = re.sub(r"`[^`\n]*`", "", text)
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, "\n".join(broken)
