"""The harness every figure shares: the dates and sizes, one PostgreSQL, the fake LangSmith, a capped backfill.run.

One throwaway PostgreSQL (backfill.sandbox.embedded.EmbeddedPostgres) holds every database; each
contender gets its own copy of the same template database (CREATE DATABASE ... TEMPLATE),
so both sides of a ratio start from identical bytes. The fake LangSmith runs in its own
process (``python -m bench.fake_server``) and counts the requests it receives.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

import backfill
from backfill.config import Database, LangSmith, Window
from backfill.sandbox.embedded import RUN_AS, EmbeddedPostgres
from bench.fake_server import API_KEY

ROOT = Path(__file__).resolve().parent.parent

TODAY = dt.datetime.now(dt.UTC).date()
DAYS = 20  # synthetic runs spread over this many run_dates, oldest first
SINCE = TODAY - dt.timedelta(days=DAYS - 1)
UNTIL = TODAY + dt.timedelta(days=1)
WINDOW = Window(SINCE, UNTIL)
BATCH = 100
SPEC_DELAY_S = 1.0  # the spec's --delay-ms 1000

SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "api_rows": 3000,
        "per_run_rows": {20: 400, 100: 120},
        "ceiling_rows": 100_000,
        "walk_rows": (100_000, 1_000_000),
        "memory_rows": 1_000_000,
        "migration_rows": 1_000_000,
        "cap_s": 300,
        "small_rows": 20_000,
        "small_cap_s": 40,
        "strategy_traces": (2_000, 100_000),
    },
    "quick": {
        "api_rows": 1000,
        "per_run_rows": {20: 150, 100: 50},
        "ceiling_rows": 10_000,
        "walk_rows": (10_000, 100_000),
        "memory_rows": 100_000,
        "migration_rows": 100_000,
        "cap_s": 90,
        "small_rows": 5_000,
        "small_cap_s": 20,
        "strategy_traces": (2_000,),
    },
}

# Server settings for the measurements (besides EmbeddedPostgres' fsync=off): no checkpoint
# lands in a measured phase (each starts with CHECKPOINT, so full-page writes are counted
# the same way for both sides). Autovacuum stays on, as in production, with a short naptime
# so that our tables get analyzed within a run of seconds as they would within a run of
# hours (a plan cached while the checkpoint table was empty must not outlive its growth);
# but not on `runs` (autovacuum_enabled = false, set by the builders): its vacuum is a
# deferred cost of both designs and would land at random in one side's WAL figure.
SERVER_SETTINGS = {
    "shared_preload_libraries": "pg_stat_statements",
    "shared_buffers": "1GB",
    "max_wal_size": "20GB",
    "checkpoint_timeout": "1h",
    "autovacuum_naptime": "1s",
}


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def one(conn: psycopg.Connection[Any], query: str, params: Any = None) -> tuple[Any, ...]:
    """The single row a query returns (a statement that returns none is a bug in the bench)."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise RuntimeError(f"no row from {query!r}")
    return row


class Server:
    """One EmbeddedPostgres, restarted once with SERVER_SETTINGS; databases by name."""

    def __init__(self) -> None:
        self.pg = EmbeddedPostgres.start()
        with self.admin() as conn:
            for name, value in SERVER_SETTINGS.items():
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        cmd = [
            str(self.pg.bindir / "pg_ctl"),
            "-D",
            str(self.pg.datadir),
            "-l",
            str(self.pg.root / "postgres.log"),
            "-w",
            "-m",
            "fast",
            "restart",
        ]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", RUN_AS, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, cwd="/")
        with self.admin() as conn:
            self.version = one(conn, "SHOW server_version")[0]

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.pg.url(), autocommit=True)

    def url(self, name: str) -> str:
        return self.pg.url(name)

    def create(self, name: str, template: str | None = None) -> str:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if template:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
            else:
                conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        self.pg.stop()


@dataclass
class Fake:
    """``python -m bench.fake_server`` in its own process."""

    proc: subprocess.Popen[str]
    url: str

    def count(self) -> int:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    @property
    def langsmith(self) -> LangSmith:
        return LangSmith(api_key=API_KEY, endpoint=self.url)


@contextmanager
def fake_langsmith(latency_ms: float = 0.0, feedback: str = "synthetic") -> Iterator[Fake]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.fake_server", "--latency-ms", str(latency_ms), "--feedback", feedback],
        cwd=ROOT,  # where `bench` is importable
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout
        yield Fake(proc, proc.stdout.readline().strip())
    finally:
        assert proc.stdin
        proc.stdin.write("quit\n")
        proc.stdin.close()
        proc.wait(10)


def run_backfill(
    url: str,
    fake: Fake,
    limit: int | None = None,
    delay_ms: int = 0,
    cap_s: float | None = None,
    allow_failures: bool = False,
) -> tuple[backfill.RunSummary, int, bool]:
    """backfill.run over WINDOW: its summary, the requests the fake received, whether capped.

    With ``cap_s``, the run is stopped (after its current batch, as Ctrl-C does) once that
    many seconds have passed, so that a slow run cannot blow the benchmark's time budget.
    """
    before = fake.count()
    stop = threading.Event()
    timer = threading.Timer(cap_s, stop.set) if cap_s else None
    if timer:
        timer.start()
    try:
        summary = backfill.run(
            Database(url),
            fake.langsmith,
            backfill.RunOptions(window=WINDOW, delay_ms=delay_ms, batch_size=BATCH, limit=limit),
            stop=stop,
        )
    finally:
        if timer:
            timer.cancel()
    capped = stop.is_set()
    if summary.exit_code not in ((0, 3) if allow_failures else (0,)) and not capped:
        raise RuntimeError(f"backfill.run exited {summary.exit_code}: {summary.lines()}")
    return summary, fake.count() - before, capped
