"""Shared test helpers: seed the archive, read it back, wait for a condition."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg.types.json import Jsonb

from backfill.sandbox import synthetic
from backfill.sandbox.embedded import find_bindir
from backfill.sandbox.traces import TraceRun, copy_archive, trace_archive
from backfill.sql import grants

TODAY = dt.datetime.now(dt.UTC).date()

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, *, interval: float = 0.01) -> T:
    """Poll ``predicate`` until it returns a true value, and return that value.

    On timeout the test FAILS, naming ``what`` it waited for: a wait that falls through
    silently would let the assertions after it pass or fail for the wrong reason.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def seed(
    dsn: str,
    n: int,
    *,
    days: int = 5,
    project: str = "proj-a",
    start: int = 0,
    seed_name: str = "t",
    size_bytes: int = 0,
) -> list[str]:
    """Insert ``n`` synthetic runs spread over the last ``days`` days; return their run ids."""
    ids = []
    with psycopg.connect(dsn) as conn:
        for i in range(start, start + n):
            run_id = synthetic.run_id_for(i, seed_name)
            run_date = TODAY - dt.timedelta(days=i % days)
            doc = synthetic.run_document(run_id, run_id, project, run_date, size_bytes)
            insert(conn, doc)
            ids.append(run_id)
    return ids


def seed_traces(dsn: str, traces: int, **kwargs: Any) -> list[TraceRun]:
    """Insert a trace-shaped archive (``backfill.sandbox.traces.trace_archive(traces, **kwargs)``)
    and return its runs (serve them with ``FakeLangSmith(feedback=trace_feedback(...))`` and
    ``fake.add_runs(r.info for r in runs)``)."""
    runs = list(trace_archive(traces, **kwargs))
    with psycopg.connect(dsn) as conn:
        copy_archive(conn, runs)
    return runs


def insert(conn: psycopg.Connection, doc: Any, **columns: Any) -> None:
    """Insert one row as the extractor does (columns mirror the document unless given)."""
    cols = (
        {
            "run_id": doc["run_id"],
            "trace_id": doc["trace_id"],
            "project": doc["project"],
            "run_date": doc["run_date"],
        }
        if isinstance(doc, dict)
        else {}
    )
    cols.update(columns)
    conn.execute(
        "INSERT INTO runs (run_id, trace_id, project, run_date, data)"
        " VALUES (%(run_id)s, %(trace_id)s, %(project)s, %(run_date)s, %(data)s)",
        {**cols, "data": Jsonb(doc)},
    )


def rows(dsn: str) -> dict[str, Any]:
    """run_id -> data, as stored."""
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT run_id, data FROM runs ORDER BY id").fetchall())


def raw_rows(dsn: str) -> dict[str, str]:
    """run_id -> data::text (jsonb's canonical text, for byte-for-byte comparisons)."""
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT run_id, data::text FROM runs ORDER BY id").fetchall())


def status(dsn: str) -> dict[str, dict[str, Any]]:
    """run_id -> checkpoint row (state, reason, attempts, records, last_error)."""
    with psycopg.connect(dsn) as conn:
        cur = conn.execute("SELECT run_id, state, reason, attempts, records, last_error FROM feedback_backfill_status")
        return {r[0]: {"state": r[1], "reason": r[2], "attempts": r[3], "records": r[4], "error": r[5]} for r in cur}


def invocations(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute("SELECT * FROM feedback_backfill_invocations ORDER BY id").fetchall()


def expected_records(run_id: str) -> list[dict[str, Any]]:
    """What the fake serves for a run, as the backfill must store it (sorted by created_at, id)."""
    recs = synthetic.feedback_for_run(run_id)
    return sorted(recs, key=lambda r: (r["created_at"], r["id"]))


def canonical(value: Any) -> Any:
    """JSON round trip, to compare Python values with what jsonb returns."""
    return json.loads(json.dumps(value))


def psql(dsn: str, script: str = "", *args: str) -> subprocess.CompletedProcess[str]:
    """``script`` piped into psql, as a DBA applies `backfill db grants` (-X: no ~/.psqlrc)."""
    exe = str(find_bindir() / "psql")
    return subprocess.run([exe, "-X", "-q", *args, dsn], input=script, capture_output=True, text=True, timeout=60)


def apply_grants(dsn: str, role: str, *, create_role: bool = False) -> None:
    """`backfill db grants ROLE [--create-role]` for ``role``, applied through psql by the owner of ``dsn``."""
    done = psql(dsn, grants(role, create_role=create_role))
    assert done.returncode == 0 and "ERROR" not in done.stderr, done.stderr
