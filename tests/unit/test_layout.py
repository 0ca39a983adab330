"""The production path never imports the sandbox (the demo's and the tests' support), except `backfill demo`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = sorted(p for p in (ROOT / "backfill").rglob("*.py") if "sandbox" not in p.parts)


def sandbox_imports(path: Path) -> list[tuple[int, bool]]:
    """(line, at module level) of each import of backfill.sandbox in ``path``."""
    tree = ast.parse(path.read_text())
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names = [f"{node.module or ''}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        if any("sandbox" in n for n in names):
            found.append((node.lineno, id(node) in top))
    return found


def test_production_modules_do_not_import_the_sandbox() -> None:
    offenders = {p.relative_to(ROOT).as_posix(): sandbox_imports(p) for p in PRODUCTION if p.name != "cli.py"}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_cli_imports_it_only_inside_the_demo_command() -> None:
    found = sandbox_imports(ROOT / "backfill" / "cli.py")
    assert len(found) == 1 and found[0][1] is False
