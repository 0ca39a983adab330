"""The `backfill` command: parse, call one library function, render, exit.

Data goes to stdout (so --json and listings pipe cleanly); progress and messages to stderr.
Errors become exit codes in one place (``_Group.invoke``). The library is imported inside
each command, so that `backfill --help` and `backfill status` never load the LangSmith SDK
(tests/test_startup.py checks it).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from backfill import __version__, logs
from backfill.cli.help import Command, Group
from backfill.cli.params import (
    COMMON,
    SAFETY,
    ApiKey,
    BatchSize,
    Check,
    DatabaseUrl,
    Days,
    DelayMs,
    DryRun,
    Endpoint,
    Follow,
    Interval,
    Limit,
    ListRuns,
    LogFormat,
    MaxAttempts,
    NoProgress,
    OptionalSince,
    OutageWait,
    Projects,
    Refetch,
    ReplaceExtractorRecords,
    RunDryRun,
    Since,
    StatusFormat,
    StatusJson,
    Strategy,
    Timeout,
    Until,
    Verbose,
    WorkspaceId,
    Yes,
    envvar,
    option,
)
from backfill.config import ALL_TIME, Database, LangSmith, Window, parse_interval
from backfill.domain.options import RunOptions
from backfill.domain.records import FAILED_REASONS
from backfill.errors import BackfillError, UsageError
from backfill.report import nagios, status_json, text

if TYPE_CHECKING:
    from backfill.operations.repair import Change


#: ctx.meta key: `status --check` is running, its UNKNOWN line goes to this stream ("out" or "err")
NAGIOS = "backfill.nagios"


class _Group(Group):
    """The one place where the toolkit's errors become a one-line message and an exit code."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        # --debug is the root's option, accepted after the subcommand too (before a `--`): moved in front
        end = args.index("--") if "--" in args else len(args)
        if "--debug" in args[:end]:
            args = ["--debug", *(a for a in args[:end] if a != "--debug"), *args[end:]]
        # a monitoring plugin's command line that cannot even be parsed is UNKNOWN too (exit 3, not 2)
        words = [a for a in args[:end] if not a.startswith("-")]
        if words[:1] == ["status"] and "--check" in args[:end]:
            ctx.meta[NAGIOS] = "err" if "--json" in args[:end] else "out"
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context (typer._click is private)
        try:
            return super().invoke(ctx)
        except BackfillError as exc:
            if isinstance(ctx.obj, dict) and ctx.obj.get("debug"):
                raise
            _unknown(ctx, str(exc))
            if logs.is_json():
                logs.event("error", str(exc), logging.ERROR, error=type(exc).__name__, exit_code=exc.exit_code)
            else:
                typer.echo(f"backfill: error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except typer.TyperException as exc:  # click's usage errors, raised while parsing a subcommand
            _unknown(ctx, exc.format_message())
            raise
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # a bug: under --check still the plugin's UNKNOWN (else main() says it)
            if not (isinstance(ctx.obj, dict) and ctx.obj.get("debug")):
                _unknown(ctx, f"internal error: {_first_line(exc)}")
            raise


def _unknown(ctx: Any, why: str) -> None:
    """Under `status --check`, any error is the plugin's one UNKNOWN line and exit 3."""
    stream = ctx.meta.get(NAGIOS)
    if stream:
        typer.echo(nagios.unknown_line(why), err=stream == "err")
        raise typer.Exit(nagios.UNKNOWN)


app = typer.Typer(
    cls=_Group,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="Backfill LangSmith feedback records into the PostgreSQL archive of runs.",
)

EPILOG_RUN = """Example: backfill run --since 14d   (with DATABASE_URL and LANGSMITH_API_KEY set)

Exit codes: 0 all done, 3 finished but some rows failed, 1 error (also an API outage longer than \
--outage-wait, or 15 minutes of 429s: the batch in flight is not marked), 2 usage, \
130/143 interrupted (re-run to resume)."""


def _duration_or_zero(text: str, flag: str) -> float:
    """A duration like 30s, 10m, 1h; unlike --interval, 0 is allowed (do not wait)."""
    if text.strip().rstrip("smhSMH").strip() in ("0", "0.0"):
        return 0.0
    return parse_interval(text, flag)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"feedback-backfill {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    debug: Annotated[
        bool,
        option("--debug", help="Show tracebacks instead of one-line errors (anywhere on the line).", panel="Options"),
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Backfill LangSmith feedback records into the PostgreSQL archive of runs."""
    ctx.obj = {"debug": debug}
    logs.setup("text")  # `run --log-format json` sets it again


@app.command("run", epilog=EPILOG_RUN, cls=Command)
def run_command(
    ctx: typer.Context,
    since: Since = "14d",
    until: Until = None,
    project: Projects = None,
    strategy: Strategy = "auto",
    refetch: Refetch = False,
    follow: Follow = False,
    interval: Interval = "5m",
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
    endpoint: Endpoint = None,
    workspace_id: WorkspaceId = None,
    timeout: Timeout = 30.0,
    batch_size: BatchSize = 100,
    delay_ms: DelayMs = 1000,
    outage_wait: OutageWait = "10m",
    dry_run: RunDryRun = False,
    limit: Limit = None,
    max_attempts: MaxAttempts = 3,
    replace_extractor_records: ReplaceExtractorRecords = False,
    list_runs: ListRuns = False,
    no_progress: NoProgress = False,
    log_format: LogFormat = "text",
) -> None:
    """Enrich the window's rows with their feedback records, resumably."""
    if log_format not in logs.FORMATS:
        raise UsageError(f"--log-format must be text or json, got {log_format!r}")
    logs.setup(log_format)
    options = RunOptions(
        window=Window.parse(since, until, project or ()),
        batch_size=batch_size,
        delay_ms=delay_ms,
        max_attempts=max_attempts,
        limit=limit,
        dry_run=dry_run,
        progress=not no_progress and not follow and log_format == "text" and sys.stderr.isatty(),
        refetch=refetch,
        replace_extractor_records=replace_extractor_records,
        outage_wait_s=_duration_or_zero(outage_wait, "--outage-wait"),
        strategy=strategy,
    )
    if timeout <= 0:
        raise UsageError("--timeout must be positive")
    pause = parse_interval(interval)
    if follow and (dry_run or refetch):
        raise UsageError("--follow cannot be combined with --dry-run or --refetch")
    if list_runs and not dry_run:
        raise UsageError("--list-runs works with --dry-run")
    database = Database.from_env(database_url)
    langsmith = None if dry_run else LangSmith.from_env(api_key, endpoint, workspace_id, timeout)
    if follow:
        assert langsmith is not None
        logs.event(
            "follow_started",
            f"following --since {since}, a pass every {interval}; stop with SIGTERM",
            since=since,
            interval_s=pause,
        )
        from backfill.runner.follow import follow as run_follow

        raise typer.Exit(run_follow(database, langsmith, options, since, until, pause))
    logs.event("run_window", options.window.describe() + (" (refetch)" if refetch else ""), refetch=refetch)
    from backfill.runner.invocation import run

    summary = run(database, langsmith, options, listing=_print_listing if list_runs else None)
    if logs.is_json():
        # stderr stays one JSON object per line: the summary is the run_finished event
        logs.event("run_finished", summary.lines()[0], **logs.summary_fields(summary))
    else:
        for line in summary.lines():
            typer.echo(line, err=True)
    if summary.stopped:
        logs.event(
            "interrupted",
            "interrupted: the last batch was committed or abandoned whole; run the same command to resume",
            logging.WARNING,
            signal=summary.interrupted_by,
        )
    raise typer.Exit(summary.exit_code)


EPILOG_STATUS = """Example: backfill status --since 14d   (monitoring: backfill status --check)

--check prints one line and nothing else: FEEDBACK-BACKFILL OK|WARNING|CRITICAL - text | perfdata, \
or FEEDBACK-BACKFILL UNKNOWN - why (no database, not migrated, bad options). With --json the line goes to \
stderr and stdout is the JSON document; --format openmetrics is not for --check (UNKNOWN).

Exit codes: 0 (with --check: OK), 1 error or --check WARNING, 2 usage or --check CRITICAL, \
3 --check UNKNOWN."""


@app.command("status", epilog=EPILOG_STATUS, cls=Command)
def status_command(
    ctx: typer.Context,
    since: Since = "14d",
    until: Until = None,
    project: Projects = None,
    database_url: DatabaseUrl = None,
    days: Days = None,
    verbose: Verbose = False,
    as_json: StatusJson = False,
    output_format: StatusFormat = "text",
    check: Check = False,
) -> None:
    """Report the backfill's progress and what the rows hold now (no API call, no write)."""
    if check:
        ctx.meta[NAGIOS] = "err" if as_json else "out"
    if output_format not in ("text", "json", "openmetrics"):
        raise UsageError(f"--format must be text, json or openmetrics, got {output_format!r}")
    if output_format == "openmetrics" and (as_json or check):
        raise UsageError("--format openmetrics cannot be combined with --json or --check")
    if days is not None and days < 1:
        raise UsageError("--days must be 1 or more")
    as_json = as_json or output_format == "json"
    window = Window.parse(since, until, project or ())
    from backfill.archive.status import status

    report = status(Database.from_env(database_url), window)
    if output_format == "openmetrics":
        from backfill.report.openmetrics import render

        typer.echo(render(report), nl=False)
        raise typer.Exit(0)
    if check:
        # the plugin's one line; with --json on stderr, so that stdout stays one JSON document
        typer.echo(nagios.check_line(report), err=as_json)
    if as_json:
        typer.echo(json.dumps(status_json.to_json(report), indent=2))
    elif not check:
        for line in text.lines(report, days=None if verbose and days is None else days or text.DAYS, verbose=verbose):
            typer.echo(line)
    raise typer.Exit(report.exit_code if check else 0)


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError("refusing to change the database without confirmation: add --yes")
    if not typer.confirm(question, default=False, err=True):
        raise typer.Exit(1)


def _window(since: str | None, until: str | None, all_: bool, project: list[str] | None = None) -> Window:
    if all_:
        if since or until:
            raise UsageError("--all cannot be combined with --since/--until")
        return ALL_TIME
    if not since:
        raise UsageError("say which window: --since 14d (or --all)")
    return Window.parse(since, until, project or ())


@app.command(
    "verify",
    epilog="Example: backfill verify --since 14d --sample 200 --fix\n\n"
    "Exit codes: 0 no drift (or all fixed), 3 drift found, 1 error or runs not fetched, 2 usage.",
    cls=Command,
)
def verify_command(
    ctx: typer.Context,
    since: Since = "14d",
    until: Until = None,
    sample: Annotated[int | None, option("--sample", help="Runs to check at random.", panel=COMMON, metavar="N")] = 100,
    all_runs: Annotated[
        bool, option("--all-runs", help="Check every enriched run of the window.", panel=COMMON)
    ] = False,
    fix: Annotated[
        bool,
        typer.Option("--fix", help="Re-patch drifted runs with the API's records, atomically.", rich_help_panel=SAFETY),
    ] = False,
    delay_ms: DelayMs = 1000,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
    endpoint: Endpoint = None,
    workspace_id: WorkspaceId = None,
    timeout: Timeout = 30.0,
) -> None:
    """Re-fetch enriched runs and compare with what is stored: added, changed, deleted records."""
    from backfill.operations.verify import verify

    report = verify(
        Database.from_env(database_url),
        LangSmith.from_env(api_key, endpoint, workspace_id, timeout),
        Window.parse(since, until),
        sample=None if all_runs else sample,
        fix=fix,
        delay_ms=delay_ms,
    )
    for line in report.lines():
        typer.echo(line)
    raise typer.Exit(report.exit_code)


@app.command("retry", epilog="Example: backfill retry --reason api_error && backfill run --since 14d", cls=Command)
def retry_command(
    ctx: typer.Context,
    reason: Annotated[
        str | None,
        option(
            "--reason",
            help="Only failures of this reason: api_error, mismatch or unstorable.",
            panel=COMMON,
            metavar="REASON",
        ),
    ] = None,
    since: Since = "14d",
    until: Until = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Give failed runs their attempts back, so that the next `backfill run` tries them again."""
    if reason is not None and reason not in FAILED_REASONS:
        raise UsageError(f"--reason must be {', '.join(FAILED_REASONS[:-1])} or {FAILED_REASONS[-1]}, got {reason!r}")
    from backfill.operations.repair import retry

    change = retry(Database.from_env(database_url), Window.parse(since, until), reason)
    typer.echo(f"{change.rows} failed run(s) will be tried again by the next backfill run", err=True)


def _apply(
    ctx: typer.Context,
    fn: Callable[..., Change],
    window: Window,
    question: str,
    yes: bool,
    dry_run: bool,
    url: str | None,
) -> Change:
    """A change to the database: confirmed (or --yes), or only counted with --dry-run."""
    database = Database.from_env(url)
    if not dry_run:
        _confirm(question, yes)
    return fn(database, window, dry_run=dry_run)


@app.command("reset", epilog="Example: backfill reset --since 14d --yes", cls=Command)
def reset_command(
    ctx: typer.Context,
    since: OptionalSince = None,
    until: Until = None,
    yes: Yes = False,
    dry_run: DryRun = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Forget the checkpoint of a window (no feedback, failed, invalid) so it is examined again."""
    window = _window(since, until, False)
    from backfill.operations.repair import reset

    change = _apply(ctx, reset, window, f"Forget the checkpoint of {window.describe()}?", yes, dry_run, database_url)
    verb = "would forget" if change.dry_run else "forgot"
    typer.echo(f"{verb} {change.rows} checkpoint row(s); rows we enriched stay recorded for revert", err=True)


@app.command(
    "revert", epilog="Example: backfill revert --since 14d --dry-run; backfill revert --all --yes", cls=Command
)
def revert_command(
    ctx: typer.Context,
    since: OptionalSince = None,
    until: Until = None,
    all_: Annotated[bool, typer.Option("--all", help="Every run_date.", rich_help_panel=COMMON)] = False,
    yes: Yes = False,
    dry_run: DryRun = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Remove exactly the feedback_records the backfill added, restoring each row's JSONB."""
    window = _window(since, until, all_)
    question = f"Remove the feedback_records the backfill added ({window.describe()})?"
    from backfill.operations.repair import revert

    change = _apply(ctx, revert, window, question, yes, dry_run, database_url)
    if change.dry_run:
        typer.echo(f"would restore {change.rows} row(s) to their JSONB before the backfill", err=True)
    else:
        typer.echo(f"restored {change.rows} row(s); forgot {change.checkpoints} checkpoint row(s)", err=True)


from backfill.cli.check import register as _register_check  # noqa: E402
from backfill.cli.db import db_app  # noqa: E402  (registered here: `backfill --help` lists it after revert)

_register_check(app)
app.add_typer(db_app, name="db")


@app.command(
    "demo",
    epilog='Example: backfill demo --keep   (then: psql "$DATABASE_URL", backfill status, ...)',
    cls=Command,
)
def demo_command(
    ctx: typer.Context,
    rows: Annotated[
        int, option("--rows", help="Synthetic runs to archive (over 20 days).", panel=COMMON, metavar="N")
    ] = 3000,
    keep: Annotated[
        bool, option("--keep", help="Leave both servers running and print how to reach and stop them.", panel=COMMON)
    ] = False,
    no_progress: NoProgress = False,
) -> None:
    """Run the DBA's workflow on a throwaway PostgreSQL and the fake LangSmith."""
    from backfill.sandbox.demo import demo

    try:
        if rows < 1:
            raise UsageError("--rows must be 1 or more")
        demo(rows=rows, keep=keep, progress=not no_progress and sys.stderr.isatty())
    except KeyboardInterrupt:
        typer.echo("interrupted: everything the demo started was stopped and removed", err=True)
        raise typer.Exit(130) from None


def _print_listing(run_id: str, run_date: dt.date, action: str) -> None:
    typer.echo(f"{run_date}\t{run_id}\t{action}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def main() -> None:
    try:
        app(prog_name="backfill")
    except Exception as exc:  # the last line of defence: a bug, still reported in one line
        if "--debug" in sys.argv or os.environ.get(envvar("--debug"), "").lower() in ("1", "true", "yes", "on"):
            raise
        print(f"backfill: internal error: {_first_line(exc)} (run with --debug for the traceback)", file=sys.stderr)
        sys.exit(1)
