"""fb0009 (rows lacking records by day and project): the mark counts the rows a listing proved empty
from an index, and no other query's plan changes."""

from __future__ import annotations

import psycopg

from backfill.config import Database
from backfill.operations import migrate
from backfill.sql import QUERIES

from ..helpers import seed_traces
from .test_fb0008 import analyzed_archive, plan


def test_the_mark_counts_from_the_index_and_the_walks_keep_theirs(app_dsn):
    dsn = app_dsn
    day, top = analyzed_archive(dsn)
    with psycopg.connect(dsn) as conn:
        (valid,) = conn.execute(
            "SELECT i.indisvalid FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid"
            " WHERE c.relname = 'runs_feedback_pending_project_idx'"
        ).fetchone()
    assert valid
    marked = plan(dsn, "settle_day_proven", {"day": day, "after_id": 0, "id_bound": top, "invocation_id": None})
    assert "Index Only Scan using runs_feedback_pending_project_idx on runs" in marked, marked
    assert "Seq Scan on runs" not in marked and "runs_pkey" not in marked, marked  # no row visited
    counted = plan(dsn, "count_pending", {"day": day, "mark": 0, "projects": None, "max_attempts": 3})
    walk = {"day": day, "after_id": 0, "batch_size": 100, "projects": ["proj-a"], "max_attempts": 3}
    walked = plan(dsn, "walk_batch", walk)
    # planned with values that prove the pending predicate, id > 0 and project IS NOT NULL, they
    # keep their plans (tests/integration/test_migrations.py: the range of runs_feedback_pending_idx)
    for other in (counted, walked):
        assert "runs_feedback_pending_project_idx" not in other, other


def test_the_mark_counts_what_a_row_by_row_count_finds(app_dsn):
    """The count from the index less the day's status rows equals the rows of the day in the
    range that lack records and hold no checkpoint row, per project, counted one by one."""
    dsn = app_dsn
    seed_traces(dsn, 300)  # 3,000 runs, two projects, 14 days
    migrate.upgrade(Database(dsn))
    with psycopg.connect(dsn) as conn:
        day = conn.execute("SELECT run_date FROM runs GROUP BY 1 ORDER BY count(*) DESC LIMIT 1").fetchone()[0]
        ids = [r[0] for r in conn.execute("SELECT id FROM runs WHERE run_date = %s ORDER BY id", (day,))]
        low, high = ids[len(ids) // 5], ids[-len(ids) // 5]  # a range inside the day: both bounds matter
        # rows holding records, some with a checkpoint row; rows lacking them, some with one
        conn.execute("UPDATE runs SET data = data || '{\"feedback_records\": []}' WHERE id = ANY(%s)", (ids[::7],))
        conn.execute(
            "INSERT INTO feedback_backfill_status (run_id, run_date, state, attempts)"
            " SELECT run_id, run_date, CASE WHEN id %% 2 = 0 THEN 'no_feedback' ELSE 'failed' END, 1"
            " FROM runs WHERE id = ANY(%s)",
            (ids[::3] + ids[::7],),
        )
        want = dict(
            conn.execute(
                "SELECT project, count(*) FROM runs AS r"
                " WHERE COALESCE(jsonb_typeof(r.data -> 'feedback_records'), 'null') = 'null'"
                " AND r.run_date = %s AND r.id > %s AND r.id <= %s"
                " AND NOT EXISTS (SELECT 1 FROM feedback_backfill_status AS s WHERE s.run_id = r.run_id)"
                " GROUP BY project",
                (day, low, high),
            ).fetchall()
        )
        got = conn.execute(
            QUERIES["settle_day_proven"], {"day": day, "after_id": low, "id_bound": high, "invocation_id": None}
        ).fetchone()[0]
        (empty,) = conn.execute("SELECT empty FROM feedback_backfill_settled WHERE run_date = %s", (day,)).fetchone()
        conn.rollback()
    assert len(want) == 2 and all(n > 10 for n in want.values()), want
    assert got == sum(want.values()) and empty == want
