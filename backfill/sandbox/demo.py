"""`backfill demo`: the DBA's workflow on an embedded default, through the real code paths.

A throwaway PostgreSQL holding the archive exactly as the extractor left it (the app's
schema, its alembic_version, synthetic runs over 20 days whose feedback_stats have empty
``values``) and the fake LangSmith this project ships, then: backfill db upgrade,
backfill run --since 14d, backfill status, and one run's old aggregate beside its
recovered record. Everything comes from the installed package (migrations included):
it works from any directory, after a plain `pip install`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from backfill.config import Database, LangSmith, Window
from backfill.domain.options import RunOptions
from backfill.errors import ConfigError
from backfill.operations import migrate
from backfill.report import text
from backfill.runner.invocation import run
from backfill.runner.summary import RunSummary
from backfill.sandbox import app_schema, synthetic
from backfill.sandbox.embedded import EmbeddedPostgres, free_port

PROJECTS = ("support-bot", "sales-agent", "triage")
DEMO_KEY = "demo-not-a-secret"
DEMO_DELAY_MS = 20


@dataclass
class DemoResult:
    summary: RunSummary
    database_url: str
    endpoint: str
    elapsed_s: float


def _say(text: str = "") -> None:
    print(text, file=sys.stderr, flush=True)


def build_archive(url: str, rows: int, days: int = 20, today: dt.date | None = None) -> None:
    """The app's schema, its alembic_version and ``rows`` synthetic runs over ``days`` days."""
    today = today or dt.datetime.now(dt.UTC).date()
    with psycopg.connect(url) as conn:
        conn.execute(app_schema().encode())
        with conn.cursor().copy("COPY runs (run_id, trace_id, project, run_date, data) FROM STDIN") as copy:
            for i in range(rows):
                run_id = synthetic.run_id_for(i, "demo")
                run_date = today - dt.timedelta(days=i % days)
                doc = synthetic.run_document(run_id, run_id, PROJECTS[i % len(PROJECTS)], run_date, 2000)
                copy.write_row((run_id, run_id, doc["project"], run_date, Jsonb(doc)))


def _start_fake(port: int) -> subprocess.Popen[bytes]:
    """The fake LangSmith in its own process group (so that --keep can leave it running)."""
    return subprocess.Popen(
        [sys.executable, "-m", "backfill.sandbox.fake_langsmith", "--port", str(port), "--api-key", DEMO_KEY],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _wait_ready(fake: subprocess.Popen[bytes]) -> None:
    assert fake.stdout is not None
    if not fake.stdout.readline():  # its "listening on" line
        raise ConfigError("the fake LangSmith did not start")


def demo(rows: int = 3000, keep: bool = False, progress: bool = True, show: Callable[[str], None] = _say) -> DemoResult:
    """Run the whole demo; clean up everything it started unless ``keep``."""
    started = time.monotonic()
    show("feedback-backfill demo: a throwaway PostgreSQL archive (Unix socket only) and a fake LangSmith on 127.0.0.1")
    pg = EmbeddedPostgres.start()
    show(f"  working directory: {pg.root} (removed at the end)")
    fake: subprocess.Popen[bytes] | None = None
    try:
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE archive")
        url = pg.url("archive")
        port = free_port()
        fake = _start_fake(port)  # assigned at once: a Ctrl-C from here on still stops it
        _wait_ready(fake)
        endpoint = f"http://127.0.0.1:{port}"
        build_archive(url, rows)
        show(
            f"  archive: {rows} runs over 20 days in `runs`, feedback_stats with empty values,"
            " the app's alembic_version 9405a9ff216f"
        )
        show(f"  DATABASE_URL={url}")
        show(f"  LANGSMITH_ENDPOINT={endpoint}")
        show("")
        show("$ backfill db upgrade   (in a checkout, the same: alembic upgrade head)")
        database = Database(url)
        show(migrate.at(migrate.upgrade(database, log=True)))  # after Alembic's own lines, on stderr
        show("  feedback_backfill_status, feedback_backfill_invocations, feedback_backfill_lease,")
        show("  6 indexes on runs built CONCURRENTLY (GIN paths, partial indexes), the analyst view feedback_records_v")
        show("")
        show(f"$ backfill run --since 14d --delay-ms {DEMO_DELAY_MS}")
        show(f"  (the spec's 1000 ms between API requests is shortened to {DEMO_DELAY_MS} ms for the demo)")
        summary = run(
            database,
            LangSmith(api_key=DEMO_KEY, endpoint=endpoint),
            RunOptions(window=Window.parse("14d"), delay_ms=DEMO_DELAY_MS, progress=progress),
            stop=threading.Event(),  # Ctrl-C ends the whole demo (KeyboardInterrupt), not just the run
        )
        for line in summary.lines():
            show(line)
        show("")
        show("$ backfill status --since 14d")
        _show_status(database, show)
        show("")
        _show_example(url, show)
        elapsed = time.monotonic() - started
        show("")
        show(f"demo finished in {elapsed:.1f}s")
        if keep:
            show("--keep: both servers are still running; explore with psql and the other commands:")
            # quoted for the shell: the URL's query string holds "&" (host=...&port=...)
            print(f"export DATABASE_URL={shlex.quote(url)}")
            print(f"export LANGSMITH_ENDPOINT={shlex.quote(endpoint)}")
            print(f"export LANGSMITH_API_KEY={shlex.quote(DEMO_KEY)}")
            show(f"to stop them: kill {fake.pid}; {pg.stop_command()}")
        return DemoResult(summary, url, endpoint, elapsed)
    finally:
        if not keep:
            if fake is not None:
                os.killpg(fake.pid, signal.SIGTERM)
                fake.wait(10)
            pg.stop()


def _show_status(database: Database, show: Callable[[str], None]) -> None:
    from backfill.archive.status import status

    for line in text.lines(status(database, Window.parse("14d"))):
        show(line)


def _show_example(url: str, show: Callable[[str], None]) -> None:
    with psycopg.connect(url) as conn:
        row: Any = conn.execute(
            "SELECT run_id, data->'feedback_stats' AS stats, data->'feedback_records'->0 AS record FROM runs"
            """ WHERE data->'feedback_records' @> '[{"key": "final_verdict", "value": {"verdict": "FAIL"}}]'"""
            " ORDER BY id LIMIT 1"
        ).fetchone()
    if row is None:
        return
    run_id, stats, record = row
    show(f"Run {run_id}: what the extractor kept, what the backfill recovered")
    show("  before: data->'feedback_stats'->'final_verdict'")
    for line in json.dumps(stats["final_verdict"], indent=2).splitlines():
        show("    " + line)
    show("  after:  data->'feedback_records'->0 (verdict and rationale, exactly as the API returned it)")
    for line in json.dumps(
        {k: record[k] for k in ("key", "score", "value", "comment", "created_at")}, indent=2
    ).splitlines():
        show("    " + line)
