"""What does giving up server-side prepared statements cost the walk? Side by side.

    python -m bench.prepare_bench --rows 200000          # a throwaway PostgreSQL, as the demo starts it

The tool connects with psycopg's ``prepare_threshold=None`` (behind PgBouncer in transaction
pooling a prepared statement lives on a server connection the next transaction may not get).
This times the runner's own walk (``backfill.walk.walk``: ``walk_batch`` a day at a time,
keyset on id, each read its own short transaction with its SET LOCAL settings) over the same
database, with prepared statements (psycopg's default threshold, 5) and without, alternating
the two so that caching favours neither, and prints the medians and their ratio.

Why it cost before fb0005: an unnamed statement is planned with its values each time (a custom plan),
and the planner has no statistics for the walk's "still lacking feedback_records"
expression (default selectivity 0.5 %), so it expects a handful of rows and picks a bitmap
scan of the rest of the day plus a sort, instead of the ordered scan of
runs_feedback_pending_idx that stops after --batch-size rows (the generic plan a prepared
statement settles on). The tool planned the walk's read generically until fb0005 added
CREATE STATISTICS on that expression, which made the custom plan right (and the generic
one, on large tables, an ordered scan of runs_pkey filtered by day): the tool now plans it
with its values; the second row shows the generic plan (``SET LOCAL plan_cache_mode =
force_generic_plan`` in its transaction). ``--extended-stats`` adds the statistics again
(a no-op at head).

Documents carry a feedback_stats object like the extractor's (the walk returns it), no
feedback_records: every row is pending, so the walk visits all of them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import psycopg

from backfill.archive import gateway as db
from backfill.archive.reader import walk
from backfill.config import Database, Window
from backfill.domain.options import RunOptions
from backfill.operations import migrate
from backfill.sandbox import app_schema
from backfill.sandbox.embedded import EmbeddedPostgres

FILL = """
INSERT INTO runs (run_id, trace_id, project, run_date, data)
SELECT x.u, x.u, 'proj-' || (i %% 4), x.d,
       jsonb_build_object('run_id', x.u, 'trace_id', x.u, 'project', 'proj-' || (i %% 4), 'run_date', x.d::text,
                          'feedback_stats', jsonb_build_object('correctness', jsonb_build_object('n', i %% 3)))
FROM generate_series(1, %(rows)s) AS i,
     LATERAL (SELECT md5(i::text)::uuid::text AS u, (now() AT TIME ZONE 'utc')::date - (i %% 14) AS d) AS x
"""


STATS = """
CREATE STATISTICS runs_feedback_pending_stx
ON (COALESCE(jsonb_typeof(data -> 'feedback_records'), 'null')) FROM runs
"""


def walk_once(database: Database, options: RunOptions, prepare: bool, generic: bool = False) -> tuple[float, int, int]:
    """Seconds for one whole walk, rows seen, statements the server holds prepared at the end."""
    gw = db.connect(database, prepare=prepare)
    saved = dict(db.PLANNER)
    shipped = tuple(s for s in saved.get("walk_batch", ()) if s != "generic_plan")
    db.PLANNER["walk_batch"] = (*shipped, "generic_plan") if generic else shipped
    try:
        started = time.perf_counter()
        seen = sum(len(batch) for batch in walk(gw, options))
        elapsed = time.perf_counter() - started
        prepared = gw.one("now") and gw.conn.execute("SELECT count(*) AS n FROM pg_prepared_statements").fetchone()
        gw.rollback()
        return elapsed, seen, int(prepared["n"]) if prepared else 0
    finally:
        db.PLANNER.clear()
        db.PLANNER.update(saved)
        gw.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--extended-stats", action="store_true", help="CREATE STATISTICS on the pending expression before ANALYZE"
    )
    args = parser.parse_args()

    pg = EmbeddedPostgres.start()
    try:
        url = pg.url()
        t = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(app_schema())
            conn.execute(FILL, {"rows": args.rows})
        database = Database(url)
        migrate.upgrade(database)
        with psycopg.connect(url, autocommit=True) as conn:
            if args.extended_stats:
                conn.execute(STATS)
            conn.execute("VACUUM ANALYZE runs")
        print(f"{args.rows:,} rows over 14 days built and migrated in {time.perf_counter() - t:.0f}s", file=sys.stderr)
        options = RunOptions(window=Window.parse("14d"), batch_size=args.batch_size)
        variants = {  # label: (prepare, generic plan setting)
            "prepared (psycopg default, 5)": (True, False),
            "no prepare, generic plans": (False, True),
            "no prepare, custom (the tool)": (False, False),
        }
        times: dict[str, list[float]] = {label: [] for label in variants}
        held: dict[str, int] = {}
        walk_once(database, options, False)  # warm the cache once
        for _ in range(args.repeat):
            for label, (prepare, generic) in variants.items():
                elapsed, seen, prepared = walk_once(database, options, prepare, generic)
                assert seen == args.rows, (seen, args.rows)
                times[label].append(elapsed)
                held[label] = prepared
        medians = {label: statistics.median(t) for label, t in times.items()}
        batches = -(-args.rows // args.batch_size)
        print(f"walk of {args.rows:,} pending rows, --batch-size {args.batch_size} (~{batches:,} walk_batch reads),")
        stats = ", CREATE STATISTICS on the pending expression" if args.extended_stats else ""
        print(f"median of {args.repeat} alternating passes each, same database, direct connection{stats}")
        print()
        print(f"{'':<34}{'wall s':>10}{'ms/batch':>10}{'rows/s':>12}{'prepared':>10}")
        for label, median in medians.items():
            print(
                f"{label:<34}{median:>10.2f}{median / batches * 1000:>10.2f}{args.rows / median:>12,.0f}"
                f"{held[label]:>10}"
            )
        base = medians["prepared (psycopg default, 5)"]
        print()
        print(f"ratio, generic plans / prepared:    {medians['no prepare, generic plans'] / base:.3f}")
        print(f"ratio, the tool / prepared:         {medians['no prepare, custom (the tool)'] / base:.3f}")
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
