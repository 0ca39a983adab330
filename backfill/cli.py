"""The `backfill` command: parse, call one library function, render, exit.

Data goes to stdout (so --json and listings pipe cleanly); progress and messages to stderr.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Annotated, NoReturn

import typer

from . import __version__
from .config import Database, LangSmith, Window
from .errors import BackfillError, UsageError
from .runner import RunOptions, run
from .status import status

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="Backfill LangSmith feedback records into the PostgreSQL archive of runs.",
)

EPILOG_RUN = """Example: DATABASE_URL=postgresql://backfill@db/archive LANGSMITH_API_KEY=lsv2_... backfill run --since 14d

Exit codes: 0 all done, 3 finished but some rows failed, 1 error, 2 usage, 130/143 interrupted (re-run to resume)."""


def _fail(exc: BackfillError, debug: bool) -> NoReturn:
    if debug:
        raise exc
    typer.echo(f"backfill: error: {exc}", err=True)
    raise typer.Exit(exc.exit_code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"feedback-backfill {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Backfill LangSmith feedback records into the PostgreSQL archive of runs."""
    ctx.obj = {"debug": debug}


@app.command("run", epilog=EPILOG_RUN)
def run_command(
    ctx: typer.Context,
    since: Annotated[str, typer.Option(help="Start of the run_date window: 14d, 36h, 2w or a date.")] = "14d",
    until: Annotated[str | None, typer.Option(help="End of the window (exclusive date, or 2d = two days ago).")] = None,
    project: Annotated[list[str] | None, typer.Option(help="Only this project (repeatable).")] = None,
    batch_size: Annotated[int, typer.Option(help="Run ids per API request.")] = 100,
    delay_ms: Annotated[int, typer.Option(help="Minimum interval between API requests, in ms.")] = 1000,
    max_attempts: Annotated[int, typer.Option(help="Attempts per run before a failed run is left alone.")] = 3,
    limit: Annotated[int | None, typer.Option(help="Examine at most this many rows.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count and list what would be done; no API call, no write.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
    database_url: Annotated[
        str | None, typer.Option(envvar="DATABASE_URL", show_envvar=True, show_default=False, help="postgresql://user:pass@host:port/db")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="LANGSMITH_API_KEY", show_envvar=True, show_default=False, help="LangSmith API key.")
    ] = None,
    endpoint: Annotated[
        str | None, typer.Option(envvar="LANGSMITH_ENDPOINT", show_envvar=True, help="LangSmith API URL.")
    ] = None,
    workspace_id: Annotated[
        str | None, typer.Option(envvar="LANGSMITH_WORKSPACE_ID", show_envvar=True, help="Workspace of an org-scoped key.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for one API answer.")] = 30.0,
) -> None:
    """Enrich the window's rows with their feedback records, resumably."""
    debug = ctx.obj["debug"]
    try:
        options = RunOptions(
            window=Window.parse(since, until, project or ()),
            batch_size=batch_size,
            delay_ms=delay_ms,
            max_attempts=max_attempts,
            limit=limit,
            dry_run=dry_run,
            progress=not no_progress and sys.stderr.isatty(),
        )
        if timeout <= 0:
            raise BackfillError("--timeout must be positive")
        database = Database.from_env(database_url)
        langsmith = None if dry_run else LangSmith.from_env(api_key, endpoint, workspace_id, timeout)
        typer.echo(f"backfill: {options.window.describe()}", err=True)
        summary = run(database, langsmith, options, listing=_print_listing if dry_run else None)
    except BackfillError as exc:
        _fail(exc, debug)
    for line in summary.lines():
        typer.echo(line, err=True)
    if summary.interrupted_by is not None:
        typer.echo("interrupted: the last batch was committed or abandoned whole; run the same command to resume", err=True)
    raise typer.Exit(summary.exit_code)


@app.command(
    "status",
    epilog="Example: backfill status --since 14d --check\n\n"
    "Exit codes: 0 (with --check: OK), 1 error or --check WARNING, 2 usage or --check CRITICAL.",
)
def status_command(
    ctx: typer.Context,
    since: Annotated[str, typer.Option(help="Start of the run_date window: 14d, 36h, 2w or a date.")] = "14d",
    until: Annotated[str | None, typer.Option(help="End of the window (exclusive date, or 2d = two days ago).")] = None,
    project: Annotated[list[str] | None, typer.Option(help="Only this project (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object (keys: see backfill.status).")] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Monitoring-plugin mode: one summary line first (on stderr with --json), exit 0 OK,"
            " 1 WARNING, 2 CRITICAL.",
        ),
    ] = False,
    database_url: Annotated[
        str | None, typer.Option(envvar="DATABASE_URL", show_envvar=True, show_default=False, help="postgresql://user:pass@host:port/db")
    ] = None,
) -> None:
    """Report the backfill's progress from the checkpoint (no API call, no write)."""
    debug = ctx.obj["debug"]
    try:
        window = Window.parse(since, until, project or ())
        report = status(Database.from_env(database_url), window)
    except BackfillError as exc:
        _fail(exc, debug)
    if check:
        # With --json the summary goes to stderr so that stdout stays one JSON document.
        typer.echo(report.check_line(), err=as_json)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        for line in report.lines():
            typer.echo(line)
    raise typer.Exit(report.exit_code if check else 0)


@app.command(
    "demo",
    epilog="Example: backfill demo --keep   (then: psql \"$DATABASE_URL\", backfill status, ...)",
)
def demo_command(
    ctx: typer.Context,
    rows: Annotated[int, typer.Option(help="Synthetic runs to archive (over 20 days).")] = 3000,
    keep: Annotated[bool, typer.Option("--keep", help="Leave both servers running and print how to reach and stop them.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
) -> None:
    """Run the DBA's workflow on a throwaway PostgreSQL and the fake LangSmith."""
    from .demo import demo

    try:
        if rows < 1:
            raise UsageError("--rows must be 1 or more")
        demo(rows=rows, keep=keep, progress=not no_progress and sys.stderr.isatty())
    except BackfillError as exc:
        _fail(exc, ctx.obj["debug"])
    except KeyboardInterrupt:
        typer.echo("interrupted: everything the demo started was stopped and removed", err=True)
        raise typer.Exit(130) from None


def _print_listing(run_id: str, run_date: dt.date, action: str) -> None:
    typer.echo(f"{run_date}\t{run_id}\t{action}")


def main() -> None:
    try:
        app(prog_name="backfill")
    except Exception as exc:  # the last line of defence: a bug, still reported in one line
        if "--debug" in sys.argv:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"backfill: internal error: {type(exc).__name__}: {first} (run with --debug for the traceback)",
              file=sys.stderr)
        sys.exit(1)
