"""The options of the `backfill` commands, one definition each (shared ones, and run's many)."""

from __future__ import annotations

from typing import Annotated

import typer

# Shared by several commands.
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


# `backfill run`
BatchSize = Annotated[
    int,
    typer.Option(
        help="Run ids per API request (1-1000). Each id adds ~41 bytes to the URL (100 ids: ~4 KB); servers"
        " and proxies often refuse URLs over 8 KB (~190 ids) with 414/431, which halves the ids per request"
        " for the rest of the run."
    ),
]
MaxAttempts = Annotated[int, typer.Option(help="Attempts per run before a failed run is left alone.")]
Limit = Annotated[int | None, typer.Option(help="Examine at most this many rows.")]
RunDryRun = Annotated[bool, typer.Option("--dry-run", help="Count and list what would be done; no API call, no write.")]
NoProgress = Annotated[bool, typer.Option("--no-progress", help="No progress bar.")]
Refetch = Annotated[
    bool,
    typer.Option("--refetch", help="Refresh rows already examined: replace the records we stored (resumable)."),
]
ReplaceExtractorRecords = Annotated[
    bool,
    typer.Option(
        "--replace-extractor-records",
        help="With --refetch: also replace the extractor's own reduced records by the API's full ones"
        " (revert restores them byte for byte).",
    ),
]
Strategy = Annotated[
    str,
    typer.Option(
        help="How feedback comes in: runs (every run of the window named in some request, ~1 request per 100"
        " runs), project (each project's run-level feedback listed by creation time since the window began,"
        " ~1 request per 100 records, checked against a sample), or auto (per project, whichever the"
        " database's feedback_stats say is cheaper; said in the first lines and in --dry-run).",
    ),
]
Follow = Annotated[
    bool, typer.Option("--follow", help="Keep enriching new rows, a pass every --interval, until SIGTERM.")
]
Interval = Annotated[str, typer.Option(help="Pause between --follow passes: 30s, 5m, 1h.")]
OutageWait = Annotated[
    str,
    typer.Option(
        help="How long to wait out a LangSmith outage (5xx or no connection, confirmed by a probe) before"
        " stopping with exit 1: 30s, 10m, 1h; 0 stops at once. No row is marked meanwhile."
    ),
]
LogFormat = Annotated[
    str,
    typer.Option(
        help="What goes to stderr besides the bar: text (timestamped lines) or json (one JSON object per line:"
        " event, invocation_id, counts, durations; the summary too; no bar)."
    ),
]

# `backfill status`
StatusFormat = Annotated[
    str,
    typer.Option(
        "--format",
        help="text, json (as --json) or openmetrics (Prometheus text exposition ending with # EOF, for"
        " node_exporter's textfile collector).",
    ),
]
