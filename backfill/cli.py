"""The `backfill` command: parse, call one library function, render, exit.

Data goes to stdout (so --json and listings pipe cleanly); progress and messages to stderr.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Callable
from typing import Annotated, NoReturn

import typer

from . import __version__, logs
from .config import ALL_TIME, Database, LangSmith, Window, parse_interval
from .errors import BackfillError, UsageError
from .operations import Change, reset, retry, revert, verify
from .runner import RunOptions, run
from .runner import follow as run_follow
from .status import status

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="Backfill LangSmith feedback records into the PostgreSQL archive of runs.",
)

EPILOG_RUN = """Example: backfill run --since 14d   (with DATABASE_URL and LANGSMITH_API_KEY set)

Exit codes: 0 all done, 3 finished but some rows failed, 1 error (also an API outage longer than \
--outage-wait, or 15 minutes of 429s: the batch in flight is not marked), 2 usage, \
130/143 interrupted (re-run to resume)."""


# Options shared by several commands (one definition each).
Since = Annotated[str, typer.Option(help="Start of the run_date window: 14d, 36h, 2w or a date.")]
OptionalSince = Annotated[
    str | None, typer.Option("--since", help="Start of the run_date window: 14d, 36h, 2w or a date.")
]
Until = Annotated[str | None, typer.Option(help="End of the window (exclusive date, or 2d = two days ago).")]
Projects = Annotated[list[str] | None, typer.Option("--project", help="Only this project (repeatable).")]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        envvar="DATABASE_URL", show_envvar=True, show_default=False, help="postgresql://user:pass@host:port/db"
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(envvar="LANGSMITH_API_KEY", show_envvar=True, show_default=False, help="LangSmith API key."),
]
Endpoint = Annotated[str | None, typer.Option(envvar="LANGSMITH_ENDPOINT", show_envvar=True, help="LangSmith API URL.")]
WorkspaceId = Annotated[
    str | None, typer.Option(envvar="LANGSMITH_WORKSPACE_ID", show_envvar=True, help="Workspace of an org-scoped key.")
]
Timeout = Annotated[float, typer.Option(help="Seconds to wait for one API answer.")]
DelayMs = Annotated[int, typer.Option(help="Minimum interval between API requests, in ms.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (scripts).")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Say what would change; change nothing.")]


def _duration_or_zero(text: str, flag: str) -> float:
    """A duration like 30s, 10m, 1h; unlike --interval, 0 is allowed (do not wait)."""
    if text.strip().rstrip("smhSMH").strip() in ("0", "0.0"):
        return 0.0
    return parse_interval(text, flag)


def _fail(exc: BackfillError, debug: bool) -> NoReturn:
    if debug:
        raise exc
    if logs.is_json():
        logs.event("error", str(exc), logging.ERROR, error=type(exc).__name__, exit_code=exc.exit_code)
    else:
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
    logs.setup("text")  # `run --log-format json` sets it again


@app.command("run", epilog=EPILOG_RUN)
def run_command(
    ctx: typer.Context,
    since: Since = "14d",
    until: Until = None,
    project: Projects = None,
    batch_size: Annotated[
        int,
        typer.Option(
            help="Run ids per API request (1-1000). Each id adds ~41 bytes to the URL (100 ids: ~4 KB); servers"
            " and proxies often refuse URLs over 8 KB (~190 ids) with 414/431, which halves the ids per request"
            " for the rest of the run."
        ),
    ] = 100,
    delay_ms: DelayMs = 1000,
    max_attempts: Annotated[int, typer.Option(help="Attempts per run before a failed run is left alone.")] = 3,
    limit: Annotated[int | None, typer.Option(help="Examine at most this many rows.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count and list what would be done; no API call, no write.")
    ] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
    endpoint: Endpoint = None,
    workspace_id: WorkspaceId = None,
    timeout: Timeout = 30.0,
    refetch: Annotated[
        bool,
        typer.Option("--refetch", help="Refresh rows already examined: replace the records we stored (resumable)."),
    ] = False,
    replace_extractor_records: Annotated[
        bool,
        typer.Option(
            "--replace-extractor-records",
            help="With --refetch: also replace the extractor's own reduced records by the API's full ones"
            " (revert restores them byte for byte).",
        ),
    ] = False,
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep enriching new rows, a pass every --interval, until SIGTERM.")
    ] = False,
    interval: Annotated[str, typer.Option(help="Pause between --follow passes: 30s, 5m, 1h.")] = "5m",
    outage_wait: Annotated[
        str,
        typer.Option(
            help="How long to wait out a LangSmith outage (5xx or no connection, confirmed by a probe) before"
            " stopping with exit 1: 30s, 10m, 1h; 0 stops at once. No row is marked meanwhile."
        ),
    ] = "10m",
    log_format: Annotated[
        str,
        typer.Option(
            help="What goes to stderr besides the bar: text (timestamped lines) or json (one JSON object per line:"
            " event, invocation_id, counts, durations; the summary too; no bar)."
        ),
    ] = "text",
) -> None:
    """Enrich the window's rows with their feedback records, resumably."""
    debug = ctx.obj["debug"]
    try:
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
        )
        if timeout <= 0:
            raise UsageError("--timeout must be positive")
        pause = parse_interval(interval)
        if follow and (dry_run or refetch):
            raise UsageError("--follow cannot be combined with --dry-run or --refetch")
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
            raise typer.Exit(run_follow(database, langsmith, options, since, until, pause))
        logs.event("run_window", options.window.describe() + (" (refetch)" if refetch else ""), refetch=refetch)
        summary = run(database, langsmith, options, listing=_print_listing if dry_run else None)
    except BackfillError as exc:
        _fail(exc, debug)
    if logs.is_json():
        # stderr stays one JSON object per line: the summary is the run_finished event
        logs.event("run_finished", summary.lines()[0], **logs.summary_fields(summary))
    else:
        for line in summary.lines():
            typer.echo(line, err=True)
    if summary.interrupted_by is not None:
        logs.event(
            "interrupted",
            "interrupted: the last batch was committed or abandoned whole; run the same command to resume",
            logging.WARNING,
            signal=summary.interrupted_by,
        )
    raise typer.Exit(summary.exit_code)


@app.command(
    "status",
    epilog="Example: backfill status --since 14d --check\n\n"
    "Exit codes: 0 (with --check: OK), 1 error or --check WARNING, 2 usage or --check CRITICAL.",
)
def status_command(
    ctx: typer.Context,
    since: Since = "14d",
    until: Until = None,
    project: Projects = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object (keys: see backfill.status).")] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Monitoring-plugin mode: one summary line first (on stderr with --json), exit 0 OK,"
            " 1 WARNING, 2 CRITICAL.",
        ),
    ] = False,
    output_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="text, json (as --json) or openmetrics (Prometheus text exposition ending with # EOF, for"
            " node_exporter's textfile collector).",
        ),
    ] = "text",
    database_url: DatabaseUrl = None,
) -> None:
    """Report the backfill's progress and what the rows hold now (no API call, no write)."""
    debug = ctx.obj["debug"]
    try:
        if output_format not in ("text", "json", "openmetrics"):
            raise UsageError(f"--format must be text, json or openmetrics, got {output_format!r}")
        if output_format == "openmetrics" and (as_json or check):
            raise UsageError("--format openmetrics cannot be combined with --json or --check")
        as_json = as_json or output_format == "json"
        window = Window.parse(since, until, project or ())
        report = status(Database.from_env(database_url), window)
    except BackfillError as exc:
        _fail(exc, debug)
    if output_format == "openmetrics":
        from .openmetrics import render

        typer.echo(render(report), nl=False)
        raise typer.Exit(0)
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
    "check",
    epilog="Example: backfill check --since 14d   (before a long `backfill run`; writes nothing)\n\n"
    "Exit codes: 0 no FAIL (WARN lines allowed), 1 any FAIL, 2 usage.",
)
def check_command(
    ctx: typer.Context,
    since: Since = "14d",
    until: Until = None,
    project: Projects = None,
    delay_ms: DelayMs = 1000,
    batch_size: Annotated[int, typer.Option(help="Run ids per API request, as `backfill run` will use.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object (checks, estimates, status).")] = False,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
    endpoint: Endpoint = None,
    workspace_id: WorkspaceId = None,
    timeout: Timeout = 30.0,
) -> None:
    """Pre-flight: database, schema, privileges, pooler, API key and workspace, and the run's estimates."""
    from .check import check

    try:
        window = Window.parse(since, until, project or ())
        if delay_ms < 0:
            raise UsageError("--delay-ms must be 0 or more")
        if not 1 <= batch_size <= 1000:
            raise UsageError("--batch-size must be between 1 and 1000")
        if timeout <= 0:
            raise UsageError("--timeout must be positive")
        database = Database.from_env(database_url)
        report = check(
            database,
            lambda: LangSmith.from_env(api_key, endpoint, workspace_id, timeout),
            window,
            delay_ms=delay_ms,
            batch_size=batch_size,
        )
    except BackfillError as exc:
        _fail(exc, ctx.obj["debug"])
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        for line in report.lines():
            typer.echo(line)
    raise typer.Exit(report.exit_code)


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
)
def verify_command(
    ctx: typer.Context,
    since: Since = "14d",
    until: Until = None,
    sample: Annotated[int | None, typer.Option(help="Runs to check at random (default 100).")] = 100,
    all_runs: Annotated[bool, typer.Option("--all-runs", help="Check every enriched run of the window.")] = False,
    fix: Annotated[
        bool, typer.Option("--fix", help="Re-patch drifted runs with the API's records, atomically.")
    ] = False,
    delay_ms: DelayMs = 1000,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
    endpoint: Endpoint = None,
    workspace_id: WorkspaceId = None,
    timeout: Timeout = 30.0,
) -> None:
    """Re-fetch enriched runs and compare with what is stored: added, changed, deleted records."""
    try:
        report = verify(
            Database.from_env(database_url),
            LangSmith.from_env(api_key, endpoint, workspace_id, timeout),
            Window.parse(since, until),
            sample=None if all_runs else sample,
            fix=fix,
            delay_ms=delay_ms,
        )
    except BackfillError as exc:
        _fail(exc, ctx.obj["debug"])
    for line in report.lines():
        typer.echo(line)
    raise typer.Exit(report.exit_code)


@app.command("retry", epilog="Example: backfill retry --reason api_error && backfill run --since 14d")
def retry_command(
    ctx: typer.Context,
    reason: Annotated[
        str | None, typer.Option(help="Only failures of this reason: api_error, mismatch or unstorable.")
    ] = None,
    since: Since = "14d",
    until: Until = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Give failed runs their attempts back, so that the next `backfill run` tries them again."""
    try:
        if reason not in (None, "api_error", "mismatch", "unstorable"):
            raise UsageError(f"--reason must be api_error, mismatch or unstorable, got {reason!r}")
        change = retry(Database.from_env(database_url), Window.parse(since, until), reason)
    except BackfillError as exc:
        _fail(exc, ctx.obj["debug"])
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
    try:
        database = Database.from_env(url)
        if not dry_run:
            _confirm(question, yes)
        return fn(database, window, dry_run=dry_run)
    except BackfillError as exc:
        _fail(exc, ctx.obj["debug"])


@app.command("reset", epilog="Example: backfill reset --since 14d --yes")
def reset_command(
    ctx: typer.Context,
    since: OptionalSince = None,
    until: Until = None,
    yes: Yes = False,
    dry_run: DryRun = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Forget the checkpoint of a window (no feedback, failed, invalid) so it is examined again."""
    try:
        window = _window(since, until, False)
    except BackfillError as exc:
        _fail(exc, ctx.obj["debug"])
    change = _apply(ctx, reset, window, f"Forget the checkpoint of {window.describe()}?", yes, dry_run, database_url)
    verb = "would forget" if change.dry_run else "forgot"
    typer.echo(f"{verb} {change.rows} checkpoint row(s); rows we enriched stay recorded for revert", err=True)


@app.command("revert", epilog="Example: backfill revert --since 14d --dry-run; backfill revert --all --yes")
def revert_command(
    ctx: typer.Context,
    since: OptionalSince = None,
    until: Until = None,
    all_: Annotated[bool, typer.Option("--all", help="Every run_date.")] = False,
    yes: Yes = False,
    dry_run: DryRun = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Remove exactly the feedback_records the backfill added, restoring each row's JSONB."""
    try:
        window = _window(since, until, all_)
    except BackfillError as exc:
        _fail(exc, ctx.obj["debug"])
    question = f"Remove the feedback_records the backfill added ({window.describe()})?"
    change = _apply(ctx, revert, window, question, yes, dry_run, database_url)
    if change.dry_run:
        typer.echo(f"would restore {change.rows} row(s) to their JSONB before the backfill", err=True)
    else:
        typer.echo(f"restored {change.rows} row(s); forgot {change.checkpoints} checkpoint row(s)", err=True)


db_app = typer.Typer(
    no_args_is_help=True,
    help="Our schema, from the installed package: upgrade, downgrade, current, history, grants, schema.",
    epilog='Example: backfill db upgrade && backfill db grants backfill_runner | psql "$OWNER_DATABASE_URL"',
)
app.add_typer(db_app, name="db")

EPILOG_DB = (
    "The same revisions as `alembic upgrade head` in a checkout; history in feedback_backfill_alembic_version."
    " Migrations go straight to PostgreSQL, not through PgBouncer (CREATE INDEX CONCURRENTLY)."
)


def _db_fail(ctx: typer.Context, exc: BackfillError) -> NoReturn:
    _fail(exc, bool(ctx.find_root().obj and ctx.find_root().obj.get("debug")))


@db_app.command(
    "upgrade", epilog="Example: backfill db upgrade   (or: backfill db upgrade --sql > review.sql)\n\n" + EPILOG_DB
)
def db_upgrade_command(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    sql: Annotated[
        bool, typer.Option("--sql", help="Print the SQL instead of running it (no database needed).")
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Create or update our tables, indexes and view (online: indexes built CONCURRENTLY)."""
    from . import migrate

    try:
        if sql:
            migrate.offline_sql(revision)
            return
        migrate.upgrade(Database.from_env(database_url), revision, log=True)
    except BackfillError as exc:
        _db_fail(ctx, exc)


@db_app.command(
    "downgrade", epilog="Example: backfill db downgrade base --sql > undo.sql   (base removes all)\n\n" + EPILOG_DB
)
def db_downgrade_command(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Revision to go down to (base: remove everything of ours).")],
    sql: Annotated[bool, typer.Option("--sql", help="Print the SQL (from head down) instead of running it.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Undo our migrations down to REVISION; the app's tables and rows are never touched."""
    from . import migrate

    try:
        if sql:
            migrate.offline_sql(migrate.head(), downgrade_to=revision)
            return
        migrate.downgrade(Database.from_env(database_url), revision, log=True)
    except BackfillError as exc:
        _db_fail(ctx, exc)


@db_app.command("current", epilog="Example: backfill db current   (prints fb0004 (head) when up to date)")
def db_current_command(ctx: typer.Context, database_url: DatabaseUrl = None) -> None:
    """Print the database's revision of our schema (nothing before the first upgrade)."""
    from . import migrate

    try:
        migrate.current(Database.from_env(database_url))
    except BackfillError as exc:
        _db_fail(ctx, exc)


@db_app.command("history", epilog="Example: backfill db history")
def db_history_command() -> None:
    """List our revisions, newest first (no database needed)."""
    from . import migrate

    migrate.history()


@db_app.command(
    "grants", epilog='Example: backfill db grants backfill_runner | psql -v ON_ERROR_STOP=1 "$OWNER_DATABASE_URL"'
)
def db_grants_command(
    ctx: typer.Context,
    role: Annotated[str, typer.Argument(help="The login role that runs `backfill run` (it must exist).")],
) -> None:
    """Print the least-privilege GRANTs for ROLE (run, status, retry, verify; not revert/reset)."""
    from .sql import grants

    if not role.strip() or "\0" in role:
        _db_fail(ctx, UsageError("ROLE must be a role name"))
    typer.echo(grants(role), nl=False)


@db_app.command("schema", epilog="Example: backfill db schema > schema.sql   (the DDL to review or apply by hand)")
def db_schema_command() -> None:
    """Print our DDL for review: what `backfill db upgrade --sql` prints (sql/schema.sql)."""
    from .sql import schema

    typer.echo(schema(), nl=False)


@app.command(
    "demo",
    epilog='Example: backfill demo --keep   (then: psql "$DATABASE_URL", backfill status, ...)',
)
def demo_command(
    ctx: typer.Context,
    rows: Annotated[int, typer.Option(help="Synthetic runs to archive (over 20 days).")] = 3000,
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave both servers running and print how to reach and stop them.")
    ] = False,
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
        print(
            f"backfill: internal error: {type(exc).__name__}: {first} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        sys.exit(1)
