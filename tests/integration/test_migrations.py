"""Our Alembic revisions on the app's database: coexistence, indexes, repair, downgrade."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from backfill.config import Database
from backfill.operations import migrate
from backfill.sql import QUERIES

from ..helpers import seed, seed_traces

ROOT = Path(__file__).resolve().parents[2]
OUR_INDEXES = {
    "runs_feedback_missing_idx",
    "feedback_backfill_status_ledger_idx",
    "runs_feedback_records_gin_idx",
    "runs_feedback_stats_gin_idx",
    "runs_feedback_pending_idx",
    "runs_feedback_promised_idx",
    "runs_feedback_extractor_idx",
    "runs_feedback_unprovable_idx",
}

#: squawk rules we do not apply, each with its reason.
SQUAWK_IGNORED = {
    "prefer-text-field": "the only varchar is Alembic's own version table, which Alembic creates",
    "ban-drop-table": "the downgrade drops our own two tables, never the app's",
    "ban-drop-view": "the downgrade drops our own analyst view, feedback_records_v",
    "ban-drop-column": "the downgrade drops columns we added to our own invocations and status tables",
    "ban-drop-constraint": "fb0005 widens (and its downgrade narrows) the ledger check of our own status table",
}


def snapshot(dsn: str) -> dict[str, object]:
    """The app's schema and data, as the catalogs and the rows say."""
    with psycopg.connect(dsn) as conn:
        q = conn.execute
        return {
            "tables": q(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1"
            ).fetchall(),
            "columns": q(
                "SELECT table_name, column_name, data_type, column_default, is_nullable"
                " FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2"
            ).fetchall(),
            "constraints": q(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2"
            ).fetchall(),
            "indexes": q(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
            ).fetchall(),
            "runs": q("SELECT id, run_id, data::text, created_at FROM runs ORDER BY id").fetchall(),
            "app_version": q("SELECT version_num FROM alembic_version").fetchall(),
        }


def our_indexes(dsn: str) -> dict[str, tuple[bool, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT c.relname, i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = ANY(%s)",
            (list(OUR_INDEXES),),
        ).fetchall()
    return {name: (valid, definition) for name, valid, definition in rows}


def test_upgrade_coexists_with_the_app_history_and_downgrade_restores_it(app_dsn):
    seed(app_dsn, 20)
    before = snapshot(app_dsn)
    migrate.upgrade(Database(app_dsn))
    with psycopg.connect(app_dsn) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("9405a9ff216f",)]
        assert conn.execute("SELECT version_num FROM feedback_backfill_alembic_version").fetchall() == [("fb0009",)]
        checks = dict(
            conn.execute(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE conrelid = 'feedback_backfill_status'::regclass AND contype = 'c'"
            ).fetchall()
        )
    assert (
        "'done'::text, 'no_feedback'::text, 'failed'::text, 'invalid'::text"
        in checks["feedback_backfill_status_state_check"]
    )
    indexes = our_indexes(app_dsn)
    assert set(indexes) == OUR_INDEXES and all(valid for valid, _ in indexes.values())
    assert (
        "USING gin (((data -> 'feedback_records'::text)) jsonb_path_ops)" in indexes["runs_feedback_records_gin_idx"][1]
    )
    assert "USING gin (((data -> 'feedback_stats'::text)) jsonb_path_ops)" in indexes["runs_feedback_stats_gin_idx"][1]
    assert "(run_date, id) WHERE" in indexes["runs_feedback_pending_idx"][1]
    assert snapshot(app_dsn)["runs"] == before["runs"]

    migrate.downgrade(Database(app_dsn), "base")
    after = snapshot(app_dsn)
    # Alembic keeps its (now empty) version table; everything else is exactly as before
    after["tables"] = [t for t in after["tables"] if t != ("feedback_backfill_alembic_version",)]
    after["columns"] = [c for c in after["columns"] if c[0] != "feedback_backfill_alembic_version"]
    after["constraints"] = [c for c in after["constraints"] if c[0] != "feedback_backfill_alembic_version"]
    after["indexes"] = [i for i in after["indexes"] if not i[0].startswith("feedback_backfill_alembic_version")]
    assert after == before

    migrate.upgrade(Database(app_dsn))
    assert all(valid for valid, _ in our_indexes(app_dsn).values())


def explain(conn: psycopg.Connection, sql: str, params: dict | None = None) -> str:
    conn.execute("SET enable_seqscan = off")  # a small table: show which index the planner can use
    return "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, params or {}).fetchall())


def test_rationale_query_uses_the_gin_index(dsn):
    seed(dsn, 50)
    with psycopg.connect(dsn) as conn:
        plan = explain(
            conn,
            "SELECT run_id FROM runs WHERE data->'feedback_records'"
            """ @> '[{"key":"final_verdict","value":{"verdict":"FAIL"}}]'""",
        )
    assert "runs_feedback_records_gin_idx" in plan


def test_walker_query_uses_the_partial_index(dsn):
    import datetime as dt

    seed(dsn, 50)
    params = {
        "day": dt.datetime.now(dt.UTC).date(),
        "projects": None,
        "max_attempts": 3,
        "refetch_since": None,
        "after_id": 0,
        "batch_size": 100,
    }
    with psycopg.connect(dsn) as conn:
        plan = explain(conn, QUERIES["walk_batch"], params)
    assert "runs_feedback_pending_idx" in plan


def test_a_project_walk_reads_in_index_order_before_the_next_analyze(app_dsn):
    """An archive analyzed before the migrations, as in production: fb0005's statistics stay
    empty until autovacuum analyzes again (after a tenth of the table changed). Planned with its
    values, a project's walk_batch then became a bitmap scan of the rest of the day plus a sort,
    per batch. The gateway's keyset_plan (db.PLANNER) keeps it the ordered range scan of
    runs_feedback_pending_idx that stops after the batch."""
    import datetime as dt

    from backfill.archive import gateway as db

    dsn = app_dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE runs SET (autovacuum_enabled = false)")  # no analyze behind the test's back
    seed_traces(dsn, 2000)  # 20 k runs, two projects, 14 days
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE runs")
    migrate.upgrade(Database(dsn))
    with psycopg.connect(dsn) as conn:
        day, after = conn.execute("SELECT run_date, min(id) FROM runs GROUP BY run_date ORDER BY 1").fetchone()
    params = {"day": day, "after_id": after, "projects": ["proj-a"], "max_attempts": 3, "batch_size": 100}
    gw = db.connect(Database(dsn))
    try:
        explain = "EXPLAIN " + QUERIES["walk_batch"]
        plain = "\n".join(r["QUERY PLAN"] for r in gw.conn.execute(explain, params))
        gw.rollback()
        rows = gw.execute("walk_batch", params)
        assert gw.conn.execute("SHOW enable_bitmapscan").fetchone()["enable_bitmapscan"] == "off"
        keyset = "\n".join(r["QUERY PLAN"] for r in gw.conn.execute(explain, params))
        gw.rollback()
        assert gw.conn.execute("SHOW enable_bitmapscan").fetchone()["enable_bitmapscan"] == "on"  # SET LOCAL
    finally:
        gw.close()
    assert len(rows) == 100 and all(isinstance(r["run_date"], dt.date) for r in rows)
    assert "Bitmap Heap Scan on runs" in plain and "Sort" in plain  # the premise: what the planner picks alone
    assert "Index Scan using runs_feedback_pending_idx on runs" in keyset
    assert "Bitmap" not in keyset and "Sort" not in keyset


def test_the_pending_count_never_reads_a_document_to_know_it_lacks_records(app_dsn):
    """count_pending reads the rows lacking records through runs_feedback_pending_idx, whose
    predicate it need not evaluate: never "lacks records" evaluated on each document (a detoast
    per row), as the planner did on an analyzed archive without db.PLANNER's filter_cost."""
    from backfill.archive import gateway as db

    dsn = app_dsn
    seed_traces(dsn, 1000)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE runs")
    migrate.upgrade(Database(dsn))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE runs")  # statistics on the pending expression too
        day = conn.execute("SELECT max(run_date) FROM runs").fetchone()[0]
    for projects in (None, ["proj-a"]):
        params = {"day": day, "mark": 0, "projects": projects, "max_attempts": 3}
        plans = []
        for settings in ((), db.PLANNER["count_pending"]):
            with psycopg.connect(dsn) as conn:
                for block in settings:
                    conn.execute(QUERIES[block])
                plans.append("\n".join(r[0] for r in conn.execute("EXPLAIN " + QUERIES["count_pending"], params)))
        plain, priced = plans
        assert "jsonb_typeof" in plain  # the premise: alone, the planner filters documents
        assert "Index Scan using runs_feedback_pending_idx on runs r" in priced
        assert "jsonb_typeof" not in priced, priced


def _make_invalid_index(dsn: str, name: str) -> None:
    """An interrupted concurrent build: a UNIQUE build that fails leaves an INVALID index."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {name} ON runs (project)")


def test_invalid_leftover_index_is_rebuilt_on_rerun(app_dsn):
    seed(app_dsn, 10)
    migrate.upgrade(Database(app_dsn), "fb0001")
    _make_invalid_index(app_dsn, "runs_feedback_pending_idx")
    assert our_indexes(app_dsn)["runs_feedback_pending_idx"][0] is False
    migrate.upgrade(Database(app_dsn))
    valid, definition = our_indexes(app_dsn)["runs_feedback_pending_idx"]
    assert valid and "(run_date, id) WHERE" in definition


def alembic_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("alembic", path=str(Path(sys.executable).parent)) or "alembic"
    return subprocess.run(
        [exe, *args], cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120
    )


def test_alembic_cli_from_the_project_root(app_dsn):
    done = alembic_cli("upgrade", "head", env={"DATABASE_URL": app_dsn})
    assert done.returncode == 0, done.stderr
    assert all(valid for valid, _ in our_indexes(app_dsn).values())
    current = alembic_cli("current", env={"DATABASE_URL": app_dsn})
    assert "fb0009 (head)" in current.stdout


def test_alembic_cli_errors_are_one_line_without_password(app_dsn):
    missing = alembic_cli("upgrade", "head")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        "FAILED: no database configured: set DATABASE_URL=postgresql://user@host:port/dbname, the password in"
        " ~/.pgpass or PGPASSWORD (or libpq's PGHOST/PGDATABASE/PGUSER variables)"
    ]
    wrong = app_dsn.replace("postgresql://postgres@", "postgresql://nobody:s3cr3t-pw@")
    refused = alembic_cli("upgrade", "head", env={"DATABASE_URL": wrong})
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("FAILED: ") and "s3cr3t-pw" not in refused.stderr


def test_offline_sql_is_reviewable_and_passes_squawk(tmp_path):
    out = alembic_cli("upgrade", "head", "--sql")
    assert out.returncode == 0, out.stderr
    sql = out.stdout
    # every concurrent build is outside a transaction block
    blocks = sql.split("COMMIT;")
    for stmt in (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS runs_feedback_records_gin_idx",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS runs_feedback_pending_idx",
    ):
        (block,) = [b for b in blocks if stmt in b]
        assert "BEGIN;" not in block.split(stmt)[0]
    down = alembic_cli("downgrade", "fb0009:base", "--sql")
    assert down.returncode == 0, down.stderr
    for name, text in (("upgrade.sql", sql), ("downgrade.sql", down.stdout)):
        (tmp_path / name).write_text(text)
    squawk = shutil.which("squawk", path=str(Path(sys.executable).parent)) or "squawk"
    lint = subprocess.run(
        [
            squawk,
            "--exclude",
            ",".join(SQUAWK_IGNORED),
            str(tmp_path / "upgrade.sql"),
            str(tmp_path / "downgrade.sql"),
            str(ROOT / "sql" / "schema.sql"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_sql_schema_file_is_the_offline_upgrade():
    """sql/schema.sql (for a DBA applying by hand) is exactly `alembic upgrade head --sql`."""
    out = alembic_cli("upgrade", "head", "--sql")
    assert (ROOT / "sql" / "schema.sql").read_text() == out.stdout, (
        "regenerate: alembic upgrade head --sql > sql/schema.sql"
    )


def test_upgrade_does_not_block_writers_and_gives_up_on_old_transactions(app_dsn):
    seed(app_dsn, 3000, size_bytes=2000)
    # 1. an open transaction that wrote to runs: the concurrent build must wait for it,
    #    but only lock_timeout long; it then fails in one line and leaves an INVALID index
    blocker = psycopg.connect(app_dsn)
    blocker.execute("UPDATE runs SET created_at = created_at WHERE id = 1")
    failed = alembic_cli("-x", "lock_timeout=1s", "upgrade", "head", env={"DATABASE_URL": app_dsn})
    blocker.rollback()
    blocker.close()
    assert failed.returncode == 1 and "lock timeout" in failed.stderr.lower(), failed.stderr
    # 2. re-run while a writer keeps updating rows: it is never blocked for long
    stop = threading.Event()
    waits: list[float] = []

    def writer() -> None:
        with psycopg.connect(app_dsn, autocommit=True) as conn:
            i = 0
            while not stop.is_set():
                t0 = time.monotonic()
                conn.execute("UPDATE runs SET created_at = now() WHERE id = %s", (i % 3000 + 1,))
                waits.append(time.monotonic() - t0)
                i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        done = alembic_cli("upgrade", "head", env={"DATABASE_URL": app_dsn})
    finally:
        stop.set()
        t.join()
    assert done.returncode == 0, done.stderr
    assert all(valid for valid, _ in our_indexes(app_dsn).values())
    assert len(waits) > 10 and max(waits) < 5.0  # 5s: the default lock_timeout


def test_backfill_runs_with_only_the_grants_of_sql_grants(dsn):
    """Apply sql/grants.sql to a fresh login role and run the whole backfill as that role."""
    import backfill
    from backfill.config import LangSmith
    from backfill.domain.options import RunOptions
    from backfill.sandbox.fake_langsmith import FakeLangSmith

    from ..helpers import psql, status

    ids = seed(dsn, 30)
    dbname = dsn.rsplit("/", 1)[1]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS backfill_runner")
        conn.execute("CREATE ROLE backfill_runner LOGIN")
        conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        conn.execute(f"GRANT CONNECT ON DATABASE {dbname} TO backfill_runner")
    # the checkout's file, as its header says: psql -v role=... -f sql/grants.sql
    applied = psql(dsn, "", "-v", "role=backfill_runner", "-f", str(ROOT / "sql" / "grants.sql"))
    assert applied.returncode == 0 and applied.stderr == "", applied.stderr
    runner_dsn = dsn.replace("postgresql://postgres@", "postgresql://backfill_runner@")
    try:
        with FakeLangSmith(api_key="k") as fake:
            summary = backfill.run(
                Database(runner_dsn), LangSmith(api_key="k", endpoint=fake.url), RunOptions(delay_ms=0)
            )
        assert summary.exit_code == 0 and summary.examined == 30
        assert {s["state"] for s in status(dsn).values()} == {"done", "no_feedback"}
        with psycopg.connect(runner_dsn) as conn:  # and nothing more: no DELETE, no DDL
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("DELETE FROM feedback_backfill_status")
            conn.rollback()
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("UPDATE runs SET project = 'x' WHERE run_id = %s", (ids[0],))
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP OWNED BY backfill_runner")
            conn.execute("DROP ROLE backfill_runner")


def test_alembic_cli_malformed_url_is_one_line():
    bad = alembic_cli("upgrade", "head", env={"DATABASE_URL": "postgresql://u:pw-x9@h:notaport/db"})
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("FAILED: DATABASE_URL is not usable") and "pw-x9" not in bad.stderr
