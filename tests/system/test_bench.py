"""bench/ cannot rot silently: every module imports, the commands start, the size limits hold.

The figures themselves are not run here (minutes of work; speed lives in `python -m bench`).
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(p for p in (ROOT / "bench").glob("*.py"))


def test_bench_is_a_package_of_the_expected_modules() -> None:
    names = {p.stem for p in MODULES}
    assert {"__init__", "__main__", "harness", "report", "fake_server", "status_bench", "per_run"} <= names
    assert any(n.startswith("fig_") for n in names)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_every_module_imports_without_touching_sys_path(path: Path) -> None:
    assert "sys.path" not in path.read_text()
    importlib.import_module("bench" if path.stem == "__init__" else f"bench.{path.stem}")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_modules_and_functions_stay_small(path: Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) <= 450
    long = [
        f"{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > 80
    ]
    assert long == []


@pytest.mark.parametrize(
    "module", ["bench", "bench.fake_server", "bench.status_bench", "bench.profile_patch", "bench.profile_indexes"]
)
def test_the_commands_start(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {'python -m bench' if module == 'bench' else ''}")


def test_the_fake_server_process_counts_requests() -> None:
    import langsmith

    from bench.harness import fake_langsmith

    with fake_langsmith(0) as fake:
        assert fake.url.startswith("http://")
        assert fake.count() == 0
        client = langsmith.Client(api_url=fake.url, api_key=fake.langsmith.api_key, auto_batch_tracing=False)
        list(client.list_feedback(run_ids=["00000000-0000-0000-0000-000000000001"]))
        assert fake.count() == 1
    assert fake.proc.returncode == 0
