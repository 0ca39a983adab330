"""How fast is `backfill status` on a large archive? EXPLAIN of each query, then wall times.

    python -m bench.status_bench --rows 1000000          # a throwaway PostgreSQL, as the tests start it
    DATABASE_URL=postgresql://.../scratch python -m bench.status_bench --rows 1000000

With DATABASE_URL the database must be an EMPTY scratch one: the bench creates the app's
schema there, migrates it and fills it (it refuses if a `runs` table exists).

The documents are small on purpose: the report must not depend on `data` (it never reads
it; its partial indexes answer the data figures). They hold what the figures count: ~35 %
promise records (feedback_stats), the rows the checkpoint calls done hold our records, 1 %
of the rows were re-archived since with null, 1 % with the extractor's reduced records, and
1 % never examined hold the extractor's records. ~90 % of the rows get a status row (with
row_id and the ledger); then VACUUM ANALYZE, as autovacuum would, so that the visibility
map lets the index-only scans skip the heap.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator

import psycopg

import backfill
from backfill.archive.lease import LEASE_NAME
from backfill.config import Database, Window
from backfill.errors import ConfigError
from backfill.operations import migrate
from backfill.report import text
from backfill.sandbox import app_schema
from backfill.sandbox.embedded import EmbeddedPostgres
from backfill.sql import QUERIES

#: The records we store for run u (the API's shape), and the extractor's reduced ones.
NATIVE = """jsonb_build_array(jsonb_build_object('id', md5({u} || 'f')::uuid::text, 'run_id', {u},
    'key', 'final_verdict', 'score', 1, 'feedback_source', jsonb_build_object('type', 'api')))"""
REDUCED = """jsonb_build_array(jsonb_build_object('id', md5({u} || 'f')::uuid::text, 'run_id', {u},
    'key', 'final_verdict', 'score', 1, 'feedback_source_type', 'api'))"""

# runs.id = i (SERIAL from an empty table): the classes below match FILL_STATUS's by id.
FILL_RUNS = f"""
INSERT INTO runs (run_id, trace_id, project, run_date, data)
SELECT x.u, x.u, x.p, x.d,
       jsonb_build_object('run_id', x.u, 'trace_id', x.u, 'project', x.p, 'run_date', x.d::text,
                          'feedback_stats', CASE WHEN i %% 100 < 33 OR i %% 100 IN (97, 98)
                                                 THEN '{{"final_verdict": {{"n": 1}}}}'::jsonb
                                                 ELSE '{{}}'::jsonb END)
       || CASE WHEN i %% 10 = 0 AND i %% 100 = 20 THEN jsonb_build_object('feedback_records', {REDUCED.format(u="x.u")})
               WHEN i %% 10 = 0 OR i %% 100 >= 33 THEN '{{}}'::jsonb
               WHEN i %% 100 = 7 THEN '{{"feedback_records": null}}'::jsonb
               WHEN i %% 100 = 5 THEN jsonb_build_object('feedback_records', {REDUCED.format(u="x.u")})
               ELSE jsonb_build_object('feedback_records', {NATIVE.format(u="x.u")}) END
FROM generate_series(1, %(rows)s) AS i,
     LATERAL (SELECT md5(i::text)::uuid::text AS u, 'proj-' || (i %% 4) AS p,
                     (now() AT TIME ZONE 'utc')::date - (i %% 14) AS d) AS x
"""

# ids ending in 0 stay pending (10 %); the rest: ~1/3 done, ~2/3 no feedback, ~2 % failed or invalid.
FILL_STATUS = f"""
INSERT INTO feedback_backfill_status
    (run_id, run_date, state, reason, attempts, records, stats_count, prior, records_md5, row_id)
SELECT r.run_id, r.run_date, s.state,
       CASE s.state WHEN 'failed' THEN (ARRAY['api_error', 'mismatch', 'unstorable'])[1 + r.id %% 3]
                    WHEN 'invalid' THEN (ARRAY['invalid_run_id', 'not_an_object'])[1 + r.id %% 2] END,
       1 + r.id %% 3,
       CASE s.state WHEN 'done' THEN 1 + r.id %% 3 ELSE 0 END,
       CASE s.state WHEN 'done' THEN 1 + r.id %% 3 WHEN 'failed' THEN 1 ELSE 0 END,
       CASE s.state WHEN 'done' THEN 'absent' END,
       CASE s.state WHEN 'done' THEN md5(({NATIVE.format(u="r.run_id")})::text) END,
       r.id
FROM runs AS r,
     LATERAL (SELECT CASE WHEN r.id %% 100 < 33 THEN 'done' WHEN r.id %% 100 < 97 THEN 'no_feedback'
                          WHEN r.id %% 100 < 99 THEN 'failed' ELSE 'invalid' END AS state) AS s
WHERE r.id %% 10 <> 0
"""

FILL_INVOCATIONS = """
INSERT INTO feedback_backfill_invocations
    (started_at, heartbeat_at, finished_at, outcome, params, rows_examined, api_requests)
SELECT now() - make_interval(hours => 4 - k), now() - make_interval(hours => 4 - k, mins => -30),
       now() - make_interval(hours => 4 - k, mins => -30), 'completed',
       '{"batch_size": 100, "delay_ms": 1000, "max_attempts": 3}', 100000 * k, 1000 * k
FROM generate_series(1, 3) AS k
"""


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A throwaway PostgreSQL (the demo's and `python -m bench`'s EmbeddedPostgres); removed after."""
    try:
        pg = EmbeddedPostgres.start()
    except ConfigError as exc:
        sys.exit(f"{exc} (or give DATABASE_URL)")
    try:
        with psycopg.connect(pg.url(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench")
        yield pg.url("bench")
    finally:
        pg.stop()


def fill(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('runs')").fetchone()[0] is not None:
            sys.exit("this database already has a `runs` table: give the bench an empty scratch database")
        conn.execute(app_schema())
    migrate.upgrade(Database(url))
    with psycopg.connect(url, autocommit=True) as conn:
        for label, sql in (("runs", FILL_RUNS), ("status", FILL_STATUS), ("invocations", FILL_INVOCATIONS)):
            t = time.perf_counter()
            n = conn.execute(sql, {"rows": rows}).rowcount
            print(f"filled {label}: {n:,} rows in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        t = time.perf_counter()
        conn.execute("VACUUM ANALYZE runs")
        conn.execute("VACUUM ANALYZE feedback_backfill_status")
        conn.execute("VACUUM ANALYZE feedback_backfill_invocations")
        print(f"VACUUM ANALYZE in {time.perf_counter() - t:.1f}s", file=sys.stderr)


def explain(url: str, window: Window) -> None:
    params = {
        "since": window.since,
        "until": window.until,
        "projects": list(window.projects) or None,
        "max_attempts": 3,
        "name": LEASE_NAME,  # status_lease's
    }
    with psycopg.connect(url) as conn:  # one transaction, with the report's own settings
        conn.execute(QUERIES["status_settings"])
        names = ["status_runs_by_day", "status_checkpoint_by_day_projects", "status_data_by_day"]
        if not window.projects:
            names = [
                "status_runs_by_day",
                "status_checkpoint_by_day",
                "status_data_by_day",
                "status_invocations",
                "status_lease",
            ]
        for name in names:
            plan = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {QUERIES[name]}", params).fetchall()
            scope = f" --project {','.join(window.projects)}" if window.projects else ""
            print(f"\n== {name}{scope}")
            print("\n".join(row[0] for row in plan))


def timed(url: str, window: Window, repeat: int = 3) -> list[float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        backfill.status(Database(url), window)
        times.append(time.perf_counter() - t)
    return times


def bench(url: str, rows: int) -> None:
    fill(url, rows)
    windows = [("default (14d)", Window.parse("14d")), ("--project proj-1", Window.parse("14d", projects=["proj-1"]))]
    for _, window in windows:
        explain(url, window)
    print(f"\nbackfill.status() wall time, {rows:,} rows, 3 calls each (connect included)")
    print(f"{'window':<20}{'first':>10}{'best':>10}")
    for label, window in windows:
        times = timed(url, window)
        print(f"{label:<20}{times[0]:>9.3f}s{min(times):>9.3f}s")
    report = backfill.status(Database(url), windows[0][1])
    print("\n" + "\n".join(text.lines(report)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in runs (default 1,000,000)")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    if url:
        bench(url, args.rows)
        return
    with throwaway_postgres() as url:
        bench(url, args.rows)


if __name__ == "__main__":
    main()
