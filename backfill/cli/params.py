"""The options of the `backfill` commands, one definition each (shared ones, and run's many).

Every option is in a --help panel and can be set by a ``BACKFILL_<OPTION>`` variable (a
systemd unit or a cron line stays short), named in --help; the command line wins over the
variable. The standard variables (DATABASE_URL, LANGSMITH_API_KEY, LANGSMITH_ENDPOINT,
LANGSMITH_WORKSPACE_ID) are read after ours. Options that answer a question for the DBA
(``--yes``, ``revert --all``, ``verify --fix``, ``--replace-extractor-records``) have no
variable: one left in a shell must not confirm a change on its own.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

# The --help panels.
COMMON = "Common"
CONNECTION = "Connection"
PACING = "Pacing"
SAFETY = "Safety"
OUTPUT = "Output"


def envvar(option: str) -> str:
    """The variable that sets ``option``: ``--delay-ms`` -> ``BACKFILL_DELAY_MS``."""
    return "BACKFILL_" + option.lstrip("-").upper().replace("-", "_")


def option(
    *decls: str,
    help: str,
    panel: str,
    metavar: str | None = None,
    also: tuple[str, ...] = (),
    env: bool = True,
    **kwargs: Any,
) -> Any:
    """A ``typer.Option`` shown in ``panel``, set also by its BACKFILL_* variable (then by ``also``)."""
    long = next(d for d in decls if d.startswith("--"))
    names = [envvar(long), *also] if env else None
    return typer.Option(
        *decls,
        help=help,
        rich_help_panel=panel,
        metavar=metavar,
        envvar=names,
        show_envvar=env,
        **kwargs,
    )


# Shared by several commands.
WINDOW_START = "Start of the run_date window: 14d, 36h, 2w or a date (YYYY-MM-DD)."
Since = Annotated[str, option("--since", help=WINDOW_START, panel=COMMON, metavar="WHEN")]
OptionalSince = Annotated[str | None, option("--since", help=WINDOW_START, panel=COMMON, metavar="WHEN")]
Until = Annotated[
    str | None,
    option(
        "--until",
        help="End of the window, excluded: a date, or 2d (two days ago). Default: after today.",
        panel=COMMON,
        metavar="WHEN",
    ),
]
Projects = Annotated[
    list[str] | None, option("--project", help="Only this project (repeatable).", panel=COMMON, metavar="NAME")
]
DatabaseUrl = Annotated[
    str | None,
    option(
        "--database-url",
        help="postgresql://user@host:port/db (password: ~/.pgpass or PGPASSWORD)",
        panel=CONNECTION,
        metavar="URL",
        also=("DATABASE_URL",),
        show_default=False,
    ),
]
ApiKey = Annotated[
    str | None,
    option(
        "--api-key",
        help="LangSmith API key.",
        panel=CONNECTION,
        metavar="KEY",
        also=("LANGSMITH_API_KEY",),
        show_default=False,
    ),
]
Endpoint = Annotated[
    str | None,
    option(
        "--endpoint",
        help="LangSmith API URL (default: https://api.smith.langchain.com).",
        panel=CONNECTION,
        metavar="URL",
        also=("LANGSMITH_ENDPOINT",),
    ),
]
WorkspaceId = Annotated[
    str | None,
    option(
        "--workspace-id",
        help="Workspace of an org-scoped key.",
        panel=CONNECTION,
        metavar="ID",
        also=("LANGSMITH_WORKSPACE_ID",),
    ),
]
Timeout = Annotated[
    float, option("--timeout", help="Seconds to wait for one API answer.", panel=CONNECTION, metavar="SECONDS")
]
DelayMs = Annotated[
    int, option("--delay-ms", help="Minimum interval between API requests, in ms.", panel=PACING, metavar="MS")
]
Yes = Annotated[
    bool,
    typer.Option("--yes", "-y", help="Do not ask for confirmation (scripts).", rich_help_panel=SAFETY),
]
DryRun = Annotated[bool, option("--dry-run", help="Say what would change; change nothing.", panel=SAFETY)]


# `backfill run`
BatchSize = Annotated[
    int,
    option(
        "--batch-size",
        help="Run ids per API request (1-1000); halved for the rest of the run if the server refuses the URL's"
        " length (414/431: proxies often stop near 190 ids).",
        panel=PACING,
        metavar="N",
    ),
]
MaxAttempts = Annotated[
    int,
    option("--max-attempts", help="Attempts per run before a failed run is left alone.", panel=SAFETY, metavar="N"),
]
Limit = Annotated[int | None, option("--limit", help="Examine at most this many rows.", panel=SAFETY, metavar="ROWS")]
RunDryRun = Annotated[
    bool,
    option(
        "--dry-run",
        help="Count the rows, plan and estimate the requests; no API call, no write.",
        panel=SAFETY,
    ),
]
ListRuns = Annotated[
    bool,
    option(
        "--list-runs",
        help="With --dry-run: also print each row (run_date, run_id, fetch or why invalid) on stdout.",
        panel=OUTPUT,
    ),
]
NoProgress = Annotated[bool, option("--no-progress", help="No progress bar.", panel=OUTPUT)]
Refetch = Annotated[
    bool,
    option(
        "--refetch",
        help="Refresh rows already examined: replace the records we stored (resumable).",
        panel=COMMON,
    ),
]
ReplaceExtractorRecords = Annotated[
    bool,
    typer.Option(
        "--replace-extractor-records",
        help="With --refetch: also replace the extractor's own reduced records by the API's full ones"
        " (revert restores them byte for byte).",
        rich_help_panel=SAFETY,
    ),
]
Strategy = Annotated[
    str,
    option(
        "--strategy",
        help="runs (name every run: ~1 request per 100 runs), project (list each project's feedback: ~1 request"
        " per 100 records) or auto (per project, from feedback_stats; --dry-run says which and why).",
        panel=COMMON,
        metavar="auto|runs|project",
    ),
]
Follow = Annotated[
    bool,
    option("--follow", help="Keep enriching new rows, a pass every --interval, until SIGTERM.", panel=COMMON),
]
Interval = Annotated[
    str, option("--interval", help="Pause between --follow passes: 30s, 5m, 1h.", panel=COMMON, metavar="DURATION")
]
OutageWait = Annotated[
    str,
    option(
        "--outage-wait",
        help="How long to wait out a LangSmith outage before exit 1: 30s, 10m, 1h; 0 stops at once."
        " No row is marked meanwhile.",
        panel=PACING,
        metavar="DURATION",
    ),
]
LogFormat = Annotated[
    str,
    option(
        "--log-format",
        help="stderr as text (timestamped lines and a progress bar) or json (one object per line, no bar).",
        panel=OUTPUT,
        metavar="text|json",
    ),
]

# `backfill status`
StatusFormat = Annotated[
    str,
    option(
        "--format",
        help="text; json (as --json); openmetrics (Prometheus text exposition, for node_exporter's textfile"
        " collector).",
        panel=OUTPUT,
        metavar="text|json|openmetrics",
    ),
]
StatusJson = Annotated[
    bool,
    option("--json", help="One JSON object, described in docs/status-json.md.", panel=OUTPUT),
]
Check = Annotated[
    bool,
    option(
        "--check",
        help="Monitoring plugin (Nagios, Icinga): one line with perfdata; exit 0 OK, 1 WARNING, 2 CRITICAL,"
        " 3 UNKNOWN (cannot measure).",
        panel=OUTPUT,
    ),
]
Days = Annotated[
    int | None,
    option(
        "--days",
        help="Per-day table: the newest N days with rows (default 14; -v: every day).",
        panel=OUTPUT,
        metavar="N",
        show_default=False,
    ),
]
Verbose = Annotated[
    bool,
    option(
        "--verbose",
        "-v",
        help="Everything: every day, what the rows hold per day, failures by reason, the lease.",
        panel=OUTPUT,
    ),
]
