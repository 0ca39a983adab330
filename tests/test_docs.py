"""The docs site explains every command and option; README stays a short doorway into it.

A command's section is the one heading in docs/ whose first code span is exactly `backfill NAME`
(`backfill db upgrade` for a subcommand), up to the next heading of the same or a higher level
on its page. Every long option and every argument of a command must be mentioned in its section:
the generated CLI reference (docs/cli.md) lists them too, but a DBA needs them explained. The
root's options (`--debug`, `--version`) may be on any hand-written page.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from backfill.cli import app

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
PAGES = {path.relative_to(DOCS).as_posix(): path.read_text() for path in sorted(DOCS.rglob("*.md"))}
GENERATED = "cli.md"  # the mkdocs-typer2 directive, rendered at build time
ROOT_CMD = typer.main.get_command(app)


def subcommands(cmd: Any) -> dict[str, Any]:
    return dict(getattr(cmd, "commands", {}))


def command_paths() -> list[tuple[str, Any]]:
    """("run", cmd), ("db", group), ("db upgrade", cmd), ...: every command and subcommand."""
    out = []
    for name, cmd in subcommands(ROOT_CMD).items():
        out.append((name, cmd))
        out += [(f"{name} {sub_name}", sub) for sub_name, sub in subcommands(cmd).items()]
    return sorted(out, key=lambda item: item[0])


COMMANDS = dict(command_paths())


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
    """The text under the heading of `backfill NAME` in docs/, its subsections included."""
    own = [
        (page, i, level)
        for page, text in PAGES.items()
        for i, level, title in headings(text)
        if first_code_span(title) == f"backfill {name}"
    ]
    where = [f"{page}:{i + 1}" for page, i, _ in own]
    assert len(own) == 1, f"docs/ needs exactly one heading naming `backfill {name}`, found {len(own)} {where}"
    page, start, level = own[0]
    lines = PAGES[page].splitlines()
    end = next((i for i, lv, _ in headings(PAGES[page]) if i > start and lv <= level), len(lines))
    return "\n".join(lines[start:end])


def mentions(text: str, word: str) -> bool:
    """``word`` as a whole token (`--all` is not mentioned by `--all-runs`)."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def long_options(cmd: Any) -> list[str]:
    return [opt for param in cmd.params for opt in param.opts if opt.startswith("--") and opt != "--help"]


def arguments(cmd: Any) -> list[str]:
    return [param.name.upper() for param in cmd.params if param.param_type_name == "argument"]


def test_the_app_has_commands_and_db_subcommands() -> None:
    """The parametrizations below are not empty: they cover the app as it is."""
    assert {"run", "status", "check", "db", "db upgrade", "db grants"} <= set(COMMANDS)
    assert "--since" in long_options(COMMANDS["run"]) and arguments(COMMANDS["db grants"]) == ["ROLE"]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_has_its_own_section(name: str) -> None:
    text = section(name)
    for sub in subcommands(COMMANDS[name]):
        assert f"backfill {name} {sub}" in text, f"backfill {name} {sub} is missing from the `backfill {name}` section"


@pytest.mark.parametrize(
    ("name", "word"),
    [(name, word) for name, cmd in COMMANDS.items() for word in long_options(cmd) + arguments(cmd)],
)
def test_option_is_explained_in_its_commands_section(name: str, word: str) -> None:
    assert mentions(section(name), word), f"backfill {name} {word} not in the `backfill {name}` section of docs/"


@pytest.mark.parametrize("option", long_options(ROOT_CMD))
def test_root_option_is_explained(option: str) -> None:
    assert any(mentions(text, option) for page, text in PAGES.items() if page != GENERATED), f"{option}: not in docs/"


def test_the_sections_are_found_by_heading() -> None:
    """The parsing above: a section ends at the next heading of its level, a code fence's # is no heading."""
    assert mentions(section("run"), "--follow") and not mentions(section("run"), "--all-runs")
    assert mentions(section("verify"), "--all-runs") and not mentions(section("verify"), "--all")
    assert "## `backfill db grants`" in section("db") and "`backfill db grants`" not in section("db upgrade")
    assert "# every hour" not in [title for _, _, title in headings(PAGES["operations.md"])]
    assert [title for _, _, title in headings("# a\n```sh\n# not a heading\n```\n## b\n")] == ["a", "b"]


@pytest.mark.parametrize("name", sorted(subcommands(ROOT_CMD)))
def test_help_has_an_example(name: str) -> None:
    cmd = COMMANDS[name]
    assert "Example" in (cmd.epilog or "") + (cmd.help or ""), f"backfill {name} --help lacks an example"


def nav_pages(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [page for value in node.values() for page in nav_pages(value)]
    return [page for item in node for page in nav_pages(item)]


def test_every_page_is_in_the_nav_once() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = nav_pages(config["nav"])
    assert sorted(nav) == sorted(PAGES), "mkdocs.yml's nav and the pages of docs/ differ"


def test_the_cli_reference_is_generated_from_the_app() -> None:
    directive = re.search(r"^::: mkdocs-typer2\n((?:    :.*\n)+)", PAGES[GENERATED], re.MULTILINE)
    assert directive, f"docs/{GENERATED} lacks the ::: mkdocs-typer2 directive"
    assert "    :module: backfill.cli\n" in directive.group(1) and "    :name: backfill\n" in directive.group(1)


def test_the_built_reference_lists_every_command_and_option(tmp_path: Path) -> None:
    """The plugin renders nothing, silently, when `typer ... utils docs` fails: read what it built."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    built = (tmp_path / "cli" / "index.html").read_text()
    for name, cmd in COMMANDS.items():
        assert re.search(rf"<h[1-6][^>]*><code>backfill {name}</code>", built), f"backfill {name}: not in the reference"
        for option in long_options(cmd):
            found = re.search(rf"<code>[^<]*(?<![\w-]){re.escape(option)}(?![\w-])", built)
            assert found, f"backfill {name} {option}: not in the reference"


def test_readme_is_a_doorway() -> None:
    lines = README.splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; the reference belongs in docs/"


def relative_links(text: str) -> list[str]:
    """Targets of Markdown links and images outside code, without URLs or pure anchors."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    prose = re.sub(r"`[^`]*`", "", prose)
    targets = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)", prose)
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_readme_links_point_to_existing_files() -> None:
    links = relative_links(README)
    assert "docs/operations.md" in links and "docs/commands/run.md" in links
    missing = [link for link in links if not (ROOT / link.split("#")[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_relative_links_are_found() -> None:
    text = "[a](docs/x.md) ![b](img.png#c) [u](https://e.org) [h](#top) `[no](code.md)`\n```\n[no](f.md)\n```\n"
    assert relative_links(text) == ["docs/x.md", "img.png#c"]
