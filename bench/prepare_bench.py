"""What does giving up server-side prepared statements cost the walk? Side by side.

    python bench/prepare_bench.py --rows 200000          # a throwaway PostgreSQL, as the demo starts it

The tool connects with psycopg's ``prepare_threshold=None`` (behind PgBouncer in transaction
pooling a prepared statement lives on a server connection the next transaction may not get).
This times the runner's own walk (``backfill.runner.walk``: ``walk_batch`` a day at a time,
keyset on id, each read its own short transaction with its SET LOCAL settings) over the same
database, with prepared statements (psycopg's default threshold, 5) and without, alternating
the two so that caching favours neither, and prints the medians and their ratio.

Documents carry a feedback_stats object like the extractor's (the walk returns it), no
feedback_records: every row is pending, so the walk visits all of them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backfill import db, migrate  # noqa: E402
from backfill.config import Database, Window  # noqa: E402
from backfill.embedded import EmbeddedPostgres  # noqa: E402
from backfill.runner import RunOptions, walk  # noqa: E402
from backfill.sql import app_schema  # noqa: E402

FILL = """
INSERT INTO runs (run_id, trace_id, project, run_date, data)
SELECT x.u, x.u, 'proj-' || (i %% 4), x.d,
       jsonb_build_object('run_id', x.u, 'trace_id', x.u, 'project', 'proj-' || (i %% 4), 'run_date', x.d::text,
                          'feedback_stats', jsonb_build_object('correctness', jsonb_build_object('n', i %% 3)))
FROM generate_series(1, %(rows)s) AS i,
     LATERAL (SELECT md5(i::text)::uuid::text AS u, (now() AT TIME ZONE 'utc')::date - (i %% 14) AS d) AS x
"""


def walk_once(database: Database, options: RunOptions, prepare: bool) -> tuple[float, int, int]:
    """Seconds for one whole walk, rows seen, statements the server holds prepared at the end."""
    gw = db.connect(database, prepare=prepare)
    try:
        started = time.perf_counter()
        seen = sum(len(batch) for batch in walk(gw, options))
        elapsed = time.perf_counter() - started
        prepared = gw.one("now") and gw.conn.execute("SELECT count(*) AS n FROM pg_prepared_statements").fetchone()
        gw.rollback()
        return elapsed, seen, int(prepared["n"]) if prepared else 0
    finally:
        gw.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
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
            conn.execute("VACUUM ANALYZE runs")
        print(f"{args.rows:,} rows over 14 days built and migrated in {time.perf_counter() - t:.0f}s", file=sys.stderr)
        options = RunOptions(window=Window.parse("14d"), batch_size=args.batch_size)
        times: dict[bool, list[float]] = {True: [], False: []}
        held: dict[bool, int] = {}
        walk_once(database, options, False)  # warm the cache once
        for _ in range(args.repeat):
            for prepare in (True, False):
                elapsed, seen, prepared = walk_once(database, options, prepare)
                assert seen == args.rows, (seen, args.rows)
                times[prepare].append(elapsed)
                held[prepare] = prepared
        with_p, without = statistics.median(times[True]), statistics.median(times[False])
        batches = -(-args.rows // args.batch_size)
        print(f"walk of {args.rows:,} pending rows, --batch-size {args.batch_size} (~{batches:,} walk_batch reads),")
        print(f"median of {args.repeat} alternating passes each, same database, direct connection")
        print()
        print(f"{'':<34}{'wall s':>10}{'ms/batch':>10}{'rows/s':>12}{'prepared':>10}")
        for label, prepare, median in (
            ("prepared (psycopg default, 5)", True, with_p),
            ("prepare_threshold=None (the tool)", False, without),
        ):
            print(
                f"{label:<34}{median:>10.2f}{median / batches * 1000:>10.2f}{args.rows / median:>12,.0f}"
                f"{held[prepare]:>10}"
            )
        print()
        print(f"ratio without / with prepared statements: {without / with_p:.3f}")
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
