"""README documents every command and every option (as sqlite-utils' test_docs does)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer.main

from backfill.cli import app

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
ROOT_CMD = typer.main.get_command(app)
COMMANDS = sorted(ROOT_CMD.commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", COMMANDS)
def test_command_is_documented(name: str) -> None:
    assert f"backfill {name}" in README


@pytest.mark.parametrize(
    ("command", "option"),
    [
        (name, opt)
        for name, cmd in [("", ROOT_CMD), *((n, ROOT_CMD.commands[n]) for n in COMMANDS)]  # type: ignore[attr-defined]
        for param in cmd.params
        for opt in param.opts
        if opt.startswith("--") and opt != "--help"
    ],
)
def test_option_is_documented(command: str, option: str) -> None:
    assert f"`{option}" in README, f"backfill {command} {option} is missing from README.md"


@pytest.mark.parametrize("name", COMMANDS)
def test_help_has_an_example(name: str) -> None:
    cmd = ROOT_CMD.commands[name]
    assert "Example" in (cmd.epilog or "") + (cmd.help or ""), f"backfill {name} --help lacks an example"
