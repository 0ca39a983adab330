"""fb0009 (rows lacking records by day and project): the mark counts the rows a listing proved empty
from an index, and no other query's plan changes."""

from __future__ import annotations

import psycopg

from backfill.config import Database
from backfill.operations import migrate

from ..helpers import seed_traces
from .test_fb0008 import plan


def test_the_mark_counts_from_the_index_and_the_walks_keep_theirs(app_dsn):
    dsn = app_dsn
    seed_traces(dsn, 2000)  # 20 k runs, two projects, 14 days, 5 % reviewed
    migrate.upgrade(Database(dsn))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE runs")
        day, top = conn.execute("SELECT max(run_date), max(id) FROM runs").fetchone()
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
