"""`backfill run --follow`: a pass every --interval until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import replace
from typing import TextIO

from backfill import logs
from backfill.config import Database, LangSmith, Window
from backfill.domain.options import RunOptions
from backfill.errors import AlreadyRunning, ApiUnavailable, DatabaseError, Interrupted, WrongWorkspace
from backfill.runner.invocation import run_with
from backfill.runner.signals import handling


def follow(
    database: Database,
    langsmith: LangSmith,
    options: RunOptions,
    since: str,
    until: str | None,
    interval_s: float,
    *,
    stop: threading.Event | None = None,
    err: TextIO | None = None,
) -> int:
    """`backfill run --follow`: a pass every ``interval_s`` until SIGTERM/SIGINT; returns 0.

    The window is recomputed each pass (``--since 2d`` keeps following the newest rows).
    An API outage, a wrong workspace or a database error is reported and the next pass
    tries again; a refused API key or a missing schema ends the loop (exit 1).
    """
    err = err or sys.stderr
    logs.ensure(err)
    with handling(stop) as signals:
        event = signals.stop
        while not event.is_set():
            opts = replace(options, window=Window.parse(since, until, options.window.projects))
            try:
                summary = run_with(database, langsmith, opts, signals, err=err)
                logs.event("pass_finished", "pass: " + summary.lines()[0].strip(), **logs.summary_fields(summary))
            except Interrupted:
                break
            except (ApiUnavailable, WrongWorkspace, DatabaseError, AlreadyRunning) as exc:
                logs.event("pass_failed", f"pass failed: {exc}", logging.ERROR, error=type(exc).__name__)
            if event.wait(interval_s):
                break
    logs.event("follow_stopped", "follow: stopped cleanly")
    return 0
