"""The trace-shaped archive the fake serves (backfill.sandbox.traces), inserted in PostgreSQL as built."""

from __future__ import annotations

import datetime as dt

import psycopg

from backfill.sandbox import traces

from ..helpers import seed_traces

NOW = dt.datetime(2026, 6, 15, 12, 30, tzinfo=dt.UTC)


def test_seed_traces_inserts_the_archive_as_built(dsn: str) -> None:
    runs = seed_traces(dsn, 30, runs_per_trace=4, now=NOW)
    assert runs == list(traces.trace_archive(30, runs_per_trace=4, now=NOW))
    with psycopg.connect(dsn) as conn:
        stored = conn.execute(
            "SELECT run_id, trace_id, project, run_date, data->>'session_id', data FROM runs ORDER BY id"
        ).fetchall()
    assert [(str(r[0]), str(r[1]), r[2], r[3], r[4]) for r in stored] == [
        (r.run_id, r.trace_id, r.project, r.run_date, r.info.session_id) for r in runs
    ]
    assert [r[5] for r in stored] == [r.document for r in runs]
