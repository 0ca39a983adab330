"""README documents every command in its own section, and each option under its command's section.

A command's section starts at the one heading whose first code span is exactly `backfill NAME`
and ends at the next heading of the same or a higher level; a subcommand of a group (`backfill
db upgrade`) is documented in its group's section. Options of the root (`--debug`, `--version`)
may be anywhere.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main

from backfill.cli import app

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
ROOT_CMD = typer.main.get_command(app)
COMMANDS = sorted(ROOT_CMD.commands)  # type: ignore[attr-defined]


def headings(text: str) -> list[tuple[int, int, str]]:
    """(line number, level, title) of each Markdown heading, code fences skipped."""
    out, fenced = [], False
    for i, line in enumerate(text.splitlines()):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"(#{1,6}) (.*)", line)):
            out.append((i, len(m.group(1)), m.group(2)))
    return out


def first_code_span(title: str) -> str | None:
    m = re.search(r"`([^`]*)`", title)
    return m.group(1) if m else None


def section(name: str) -> str:
    """The text under the heading of `backfill NAME`, its subsections included."""
    lines, heads = README.splitlines(), headings(README)
    own = [(i, level) for i, level, title in heads if first_code_span(title) == f"backfill {name}"]
    assert len(own) == 1, f"README.md needs exactly one heading naming `backfill {name}`, found {len(own)}"
    start, level = own[0]
    end = next((i for i, lv, _ in heads if i > start and lv <= level), len(lines))
    return "\n".join(lines[start:end])


def mentions(text: str, word: str) -> bool:
    """``word`` as a whole token (`--all` is not mentioned by `--all-runs`)."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def options(cmd: Any) -> list[str]:
    return [opt for param in cmd.params for opt in param.opts if opt.startswith("--") and opt != "--help"]


def documented_options() -> list[tuple[str, str, str]]:
    """(command, section it belongs to, option) for every long option of every (sub)command."""
    out = [("", "", opt) for opt in options(ROOT_CMD)]
    for name in COMMANDS:
        cmd = ROOT_CMD.commands[name]  # type: ignore[attr-defined]
        out += [(name, name, opt) for opt in options(cmd)]
        for sub_name, sub in getattr(cmd, "commands", {}).items():
            out += [(f"{name} {sub_name}", name, opt) for opt in options(sub)]
    return out


@pytest.mark.parametrize("name", COMMANDS)
def test_command_has_its_own_section(name: str) -> None:
    text = section(name)
    for sub in getattr(ROOT_CMD.commands[name], "commands", {}):  # type: ignore[attr-defined]
        assert f"backfill {name} {sub}" in text, f"backfill {name} {sub} is missing from the `backfill {name}` section"


@pytest.mark.parametrize(("command", "home", "option"), documented_options())
def test_option_is_documented_under_its_command(command: str, home: str, option: str) -> None:
    text = section(home) if home else README
    where = f"the `backfill {home}` section of README.md" if home else "README.md"
    assert mentions(text, option), f"backfill {command} {option} is missing from {where}"


def test_the_sections_are_found_by_heading() -> None:
    """The parsing above: a section ends at the next heading of its level, a code fence's # is no heading."""
    assert mentions(section("run"), "--follow") and not mentions(section("run"), "--all-runs")
    assert mentions(section("verify"), "--all-runs") and not mentions(section("verify"), "--all")
    assert "### `backfill retry`" not in section("verify")
    assert "# every hour" not in [title for _, _, title in headings(README)]


@pytest.mark.parametrize("name", COMMANDS)
def test_help_has_an_example(name: str) -> None:
    cmd = ROOT_CMD.commands[name]
    assert "Example" in (cmd.epilog or "") + (cmd.help or ""), f"backfill {name} --help lacks an example"
