"""`backfill check`: the pre-flight command (the work is in backfill.operations.check)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from backfill.cli.help import Command
from backfill.cli.params import (
    OUTPUT,
    PACING,
    ApiKey,
    DatabaseUrl,
    DelayMs,
    Endpoint,
    Projects,
    Since,
    Timeout,
    Until,
    WorkspaceId,
    option,
)
from backfill.config import Database, LangSmith, Window
from backfill.errors import UsageError

CHECK_EPILOG = (
    "Example: backfill check --since 14d   (before a long `backfill run`; writes nothing)\n\n"
    "Exit codes: 0 no FAIL (WARN lines allowed), 1 any FAIL, 2 usage."
)


def check_command(
    since: Since = "14d",
    until: Until = None,
    project: Projects = None,
    database_url: DatabaseUrl = None,
    api_key: ApiKey = None,
    endpoint: Endpoint = None,
    workspace_id: WorkspaceId = None,
    timeout: Timeout = 30.0,
    delay_ms: DelayMs = 1000,
    batch_size: Annotated[
        int,
        option("--batch-size", help="Run ids per API request, as `backfill run` will use.", panel=PACING, metavar="N"),
    ] = 100,
    as_json: Annotated[
        bool, option("--json", help="One JSON object (checks, estimates, status).", panel=OUTPUT)
    ] = False,
) -> None:
    """Pre-flight: database, schema, privileges, pooler, API key and workspace, and the run's estimates."""
    window = Window.parse(since, until, project or ())
    if delay_ms < 0:
        raise UsageError("--delay-ms must be 0 or more")
    if not 1 <= batch_size <= 1000:
        raise UsageError("--batch-size must be between 1 and 1000")
    if timeout <= 0:
        raise UsageError("--timeout must be positive")
    from backfill.operations.check import check

    report = check(
        Database.from_env(database_url),
        lambda: LangSmith.from_env(api_key, endpoint, workspace_id, timeout),
        window,
        delay_ms=delay_ms,
        batch_size=batch_size,
    )
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        for line in report.lines():
            typer.echo(line)
    raise typer.Exit(report.exit_code)


def register(app: typer.Typer) -> None:
    app.command("check", epilog=CHECK_EPILOG, cls=Command)(check_command)
