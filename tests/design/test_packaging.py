"""The wheel holds every folder of the package: setuptools warns (some 40 lines at set-up) about
a folder with files that `packages` does not list, and a wheel would leave it out."""

from __future__ import annotations

import tomllib

from tests.helpers import ROOT


def test_every_package_folder_is_listed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    roots = {name: ROOT / path for name, path in config["package-dir"].items()}
    found = set()
    for name, folder in roots.items():
        for sub in [folder, *folder.rglob("*")]:
            if not sub.is_dir() or "__pycache__" in sub.parts or sub.is_symlink():
                continue
            if any(f.suffix in (".py", ".yaml", ".typed") for f in sub.iterdir() if f.is_file()):
                rel = sub.relative_to(folder).parts
                found.add(".".join((name, *rel)))
    assert found <= listed, sorted(found - listed)
