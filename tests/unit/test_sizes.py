"""The house stays walkable: no production class over 200 lines, no function over 80, a generous module cap.

The layers and the absence of import cycles are import-linter's contracts (pyproject.toml,
run by `lint-imports` in scripts/test); a module cap is only a tripwire for two jobs in one
file, never a reason to split a job.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 700
MAX_CLASS_LINES = 200
MAX_FUNCTION_LINES = 80
MODULES = sorted(p for d in ("backfill", "bench") for p in (ROOT / d).rglob("*.py"))


def test_the_packages_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in MODULES}
    assert {"backfill/runner/pipeline.py", "backfill/sandbox/fake_langsmith/server.py", "bench/harness.py"} <= names


def _longer(tree: ast.AST, kinds: tuple[type, ...], most: int) -> list[str]:
    return [
        f"{node.name}: {node.end_lineno - node.lineno + 1} lines"  # type: ignore[attr-defined]
        for node in ast.walk(tree)
        if isinstance(node, kinds) and node.end_lineno is not None and node.end_lineno - node.lineno + 1 > most  # type: ignore[attr-defined]
    ]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_modules_classes_and_functions_stay_small(path: Path) -> None:
    text = path.read_text()
    tree = ast.parse(text)
    assert len(text.splitlines()) <= MAX_MODULE_LINES
    if "sandbox" not in path.parts and "bench" not in path.parts:  # production code
        assert _longer(tree, (ast.ClassDef,), MAX_CLASS_LINES) == []
    assert _longer(tree, (ast.FunctionDef, ast.AsyncFunctionDef), MAX_FUNCTION_LINES) == []
