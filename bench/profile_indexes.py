"""Issue 14 item 4: what the patch of the figure-2 archive pays for each class of index on `runs`.

    python -m bench.profile_indexes --rows 30000 --batches 100     # from the project root

The package's own write path (``lock_rows`` then ``patch_batch`` in one transaction of
``db.Gateway``, the records of ``synthetic.feedback_for_run``), without the API, the walk or
the checkpoint, on copies of one template from which some indexes were dropped: all of them
kept, then without the GIN indexes, without our partial indexes too, and without the app's
secondary btrees too (only the two unique ones, which UPDATE cannot do without, left). The
differences are what the indexes cost; what remains with only the unique indexes is the
rewrite itself (detoast, concatenation, compression, TOAST and heap writes). Copies only:
the template, like every archive of the bench, is throwaway; nothing is dropped anywhere else.
"""

from __future__ import annotations

import argparse
import sys
import time

import psycopg

from backfill.archive import gateway as db
from backfill.config import Database
from backfill.sandbox import synthetic
from bench.harness import BATCH, Server, say
from bench.profile_patch import build

GIN = ["runs_feedback_records_gin_idx", "runs_feedback_stats_gin_idx"]
PARTIAL = ["runs_feedback_pending_idx", "runs_feedback_promised_idx", "runs_feedback_extractor_idx"]
PARTIAL += ["runs_feedback_missing_idx"]
APP = ["idx_runs_run_id", "idx_runs_trace_id", "idx_runs_project", "idx_runs_run_date", "idx_runs_project_date"]
#: (label, indexes dropped on the copy)
SETS = [
    ("all indexes (as deployed)", []),
    ("without the 2 GIN indexes", GIN),
    ("without GIN and our 4 partial indexes", GIN + PARTIAL),
    ("only runs_pkey and runs_run_id_key", GIN + PARTIAL + APP),
]


def patch_batches(url: str, batches: int) -> tuple[float, int, int]:
    """Seconds, rows enriched and WAL bytes of ``batches`` batches of the walk's order, patched as the store does."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id, run_id FROM runs ORDER BY run_date, id LIMIT %s", (batches * BATCH,)).fetchall()
        conn.execute("CHECKPOINT")
        lsn0 = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
        conn.commit()
    gw = db.connect(Database(url))
    enriched = 0
    t = time.perf_counter()
    try:
        for i in range(0, len(rows), BATCH):
            records = {run_id: synthetic.feedback_for_run(run_id) for _, run_id in rows[i : i + BATCH]}
            with gw.transaction():
                locked = gw.execute("lock_rows", {"run_ids": [r for r, rec in records.items() if rec]})
                patch = [{"id": r["id"], "records": records[r["run_id"]]} for r in locked]
                done = gw.execute("patch_batch", {"patch": db.Jsonb(patch), "ids": [p["id"] for p in patch]})
            enriched += len(done)
    finally:
        gw.close()
    elapsed = time.perf_counter() - t
    with psycopg.connect(url) as conn:
        wal = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn0,)).fetchone()[0]  # type: ignore[index]
    return elapsed, enriched, int(wal)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_indexes", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--batches", type=int, default=100, help="batches of 100 rows patched per copy")
    parser.add_argument("--repeat", type=int, default=2, help="passes over the sets, alternating their order")
    args = parser.parse_args()
    server = Server()
    found: dict[str, list[tuple[float, int, int]]] = {label: [] for label, _ in SETS}
    try:
        build(server, args.rows, "big")
        for i in range(args.repeat):
            for label, dropped in SETS if i % 2 == 0 else list(reversed(SETS)):
                url = server.create("prof_idx", "prof_tmpl")
                with psycopg.connect(url, autocommit=True) as conn:
                    for name in dropped:
                        conn.execute(f"DROP INDEX {name}")
                found[label].append(patch_batches(url, args.batches))
                server.drop("prof_idx")
                say(f"{label}: {found[label][-1][0] * 1000 / args.batches:.1f} ms per batch")
    finally:
        server.stop()
    print(f"## What the patch pays per index class: {args.rows:,} rows, figure-2 archive, {args.batches} batches\n")
    print("| indexes on runs | ms per batch of 100 (runs) | ms per enriched row | WAL bytes per enriched row |")
    print("|---|---|---|---|")
    for label, _ in SETS:
        runs = found[label]
        best = min(runs)
        ms = ", ".join(f"{s * 1000 / args.batches:.1f}" for s, _, _ in runs)
        print(f"| {label} | {ms} | {best[0] * 1000 / best[1]:.3f} | {best[2] / best[1]:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
