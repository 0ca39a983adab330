"""`backfill --help` and `backfill status` start without the LangSmith SDK (only `run` and `verify` need it)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Runs the real entry point, then reports (on a line of its own) whether langsmith was imported.
PROBE = """
import sys
sys.argv = ["backfill", *sys.argv[1:]]
from backfill.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(f"exit={code} langsmith={'langsmith' in sys.modules}", file=sys.stderr)
"""


def probe(*args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60, env=env or dict(os.environ)
    )
    return proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("args", [("--help",), ("status", "--help"), ("run", "--help"), ("db", "--help")])
def test_help_does_not_import_the_langsmith_sdk(args: tuple[str, ...]) -> None:
    assert probe(*args) == "exit=0 langsmith=False"


def test_status_does_not_import_the_langsmith_sdk(dsn: str) -> None:
    assert probe("status", "--since", "3d", env={**os.environ, "DATABASE_URL": dsn}) == "exit=0 langsmith=False"


def test_the_probe_would_see_it() -> None:
    # the same probe sees the SDK where a command does load it (`run` imports the runner first)
    assert probe(
        "run", "--dry-run", "--since", "3d", env={**os.environ, "DATABASE_URL": "postgresql:///nowhere"}
    ).endswith("langsmith=True")
