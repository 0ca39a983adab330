"""`--help` a newcomer can scan: options in panels, no type names, each option's BACKFILL_* variable."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from backfill.cli import app
from backfill.cli.params import envvar

ROOT = typer.main.get_command(app)
#: options that answer a question for the DBA: never read from the environment
NO_VARIABLE = {"--help", "--version", "--yes", "--all", "--fix", "--replace-extractor-records"}


def commands() -> list[tuple[list[str], Any]]:
    out: list[tuple[list[str], Any]] = [([], ROOT)]
    for name, cmd in ROOT.commands.items():  # type: ignore[attr-defined]
        out.append(([name], cmd))
        out += [([name, sub_name], sub) for sub_name, sub in getattr(cmd, "commands", {}).items()]
    return out


COMMANDS = commands()


def help_text(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_run_help_groups_its_options_in_panels():
    text = help_text("run")
    panels = re.findall(r"^╭─ (\w+) ─", text, re.M)
    assert panels == ["Common", "Connection", "Pacing", "Safety", "Output"]
    pacing = text[text.index("╭─ Pacing") : text.index("╭─ Safety")]
    assert all(opt in pacing for opt in ("--batch-size", "--delay-ms", "--outage-wait"))
    assert "--dry-run" in text[text.index("╭─ Safety") : text.index("╭─ Output")]


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=[" ".join(p) or "backfill" for p, _ in COMMANDS])
def test_no_type_metavars_and_every_variable_shown(path, cmd):
    text = help_text(*path)
    assert "<" not in text and "[OPTIONS]" in text, text  # no <bool>, <str>, <list[str]>
    for param in cmd.params:
        long = next((o for o in param.opts if o.startswith("--")), None)
        if long is None or long in NO_VARIABLE:
            continue
        assert f"[env var: {envvar(long)}" in text, f"{' '.join(path)} {long}: no {envvar(long)} in --help"


def test_flags_show_no_type_and_values_a_name():
    text = help_text("run")
    assert re.search(r"│ --dry-run +Count the rows", text)
    assert re.search(r"│ --delay-ms +MS +Minimum interval", text)
    assert re.search(r"│ --project +NAME +Only this project", text)


def test_the_standard_variables_are_still_read_and_shown():
    text = help_text("run")
    for name in ("DATABASE_URL", "LANGSMITH_API_KEY", "LANGSMITH_ENDPOINT", "LANGSMITH_WORKSPACE_ID"):
        assert re.search(rf"\[env var: BACKFILL_\w+, {name}\]", text), name


def test_status_json_points_to_the_docs_page():
    text = help_text("status")
    assert "docs/status-json.md" in text and "backfill.status" not in text
