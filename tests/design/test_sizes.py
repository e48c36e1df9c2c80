"""Rooms stay readable: no module of nlu/, data/ or serve/ above 500 lines, no function above
80 (docs/design/architecture.md)."""

from __future__ import annotations

import ast

from tests.design.test_layers import ROOT, sources

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def test_modules_and_functions_stay_small() -> None:
    too_long = []
    for path in sources():
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(ROOT)
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{where}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{where}:{node.lineno}: {node.name} is {length} lines")
    assert not too_long, "\n".join(too_long)
