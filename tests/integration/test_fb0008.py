"""fb0008 (rows settled without a checkpoint row): the revision itself, and the apply's reads it serves.

The apply of a project whose listing proves rows empty reads only through indexes whose rows
are the records' (staged, promising, unprovable), never the day's rows; its mark counts the
settled ones through the pending index. Upgrade, downgrade, upgrade again keep the app's data.
"""

from __future__ import annotations

import datetime as dt

import psycopg
from psycopg.types.json import Jsonb

from backfill.archive.gateway import PLANNER
from backfill.config import Database
from backfill.operations import migrate
from backfill.sql import QUERIES

from ..helpers import seed_traces


def plan(dsn: str, name: str, params: dict[str, object]) -> str:
    """The plan of a named query, after the settings gateway.PLANNER runs before it."""
    with psycopg.connect(dsn) as conn:
        for setting in PLANNER.get(name, ()):
            conn.execute(QUERIES[setting])
        return "\n".join(r[0] for r in conn.execute("EXPLAIN " + QUERIES[name], params))


def analyzed_archive(dsn: str) -> tuple[dt.date, int]:
    """20 k trace-shaped runs (two projects, 14 days, 5 % reviewed), migrated and analyzed: the
    newest run_date and the highest id."""
    seed_traces(dsn, 2000)
    migrate.upgrade(Database(dsn))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE runs")
        day, top = conn.execute("SELECT max(run_date), max(id) FROM runs").fetchone()
    return day, top


def test_the_apply_by_proof_reads_through_indexes_whose_rows_are_the_records(app_dsn):
    dsn = app_dsn
    day, top = analyzed_archive(dsn)
    with psycopg.connect(dsn) as conn:
        staged = [r[0] for r in conn.execute("SELECT id FROM runs WHERE run_date = %s LIMIT 20", (day,))]
    params = {"day": day, "staged": staged, "projects": ["proj-a"], "max_attempts": 3}
    candidates = plan(dsn, "walk_candidates", params)
    assert "runs_feedback_missing_idx" in candidates and "runs_feedback_unprovable_idx" in candidates
    assert "runs_feedback_pending_idx" in candidates  # the staged rows still lacking records
    assert "Seq Scan on runs" not in candidates and "idx_runs_run_date" not in candidates, candidates
    rows = plan(dsn, "walk_rows", {"ids": staged, "max_attempts": 3})
    assert "runs_pkey" in rows and "Seq Scan on runs" not in rows, rows
    marked = plan(dsn, "settle_day_proven", {"day": day, "after_id": 0, "id_bound": top, "invocation_id": None})
    assert "runs_feedback_pending_idx" in marked and "Seq Scan on runs" not in marked, marked
    assert "jsonb_typeof" not in marked, marked  # never "lacks records" evaluated on a document


def test_upgrade_downgrade_upgrade_keeps_the_marks_that_need_no_count(app_dsn):
    dsn = app_dsn
    seed_traces(dsn, 20)
    migrate.upgrade(Database(dsn), "fb0007")
    today = dt.datetime.now(dt.UTC).date()
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO feedback_backfill_settled (run_date, id_bound) VALUES (%s, 10)", (today,))
    before = raw(dsn)
    migrate.upgrade(Database(dsn))
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT empty FROM feedback_backfill_settled").fetchall() == [({},)]
        conn.execute(
            "INSERT INTO feedback_backfill_settled (run_date, id_bound, empty) VALUES (%s, 10, %s)",
            (today - dt.timedelta(days=1), Jsonb({"proj-a": 3})),
        )
        assert conn.execute("SELECT to_regclass('runs_feedback_unprovable_idx') IS NOT NULL").fetchone()[0]
    migrate.downgrade(Database(dsn), "fb0007")
    with psycopg.connect(dsn) as conn:
        # a mark that counts rows without a checkpoint row cannot be told before fb0008: dropped
        assert conn.execute("SELECT run_date FROM feedback_backfill_settled").fetchall() == [(today,)]
        assert not conn.execute("SELECT to_regclass('runs_feedback_unprovable_idx') IS NOT NULL").fetchone()[0]
    migrate.upgrade(Database(dsn))
    assert raw(dsn) == before


def raw(dsn: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT id, run_id, data::text FROM runs ORDER BY id").fetchall()
