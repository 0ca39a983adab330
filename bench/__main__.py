"""feedback-backfill benchmarks: each figure measured side by side in one run, then a table.

    python -m bench            # full: ~9 min on 2 cores
    python -m bench --quick    # smaller sizes: a few minutes

From the project root, in the project's venv. One throwaway PostgreSQL holds every database;
each contender gets its own copy of the same template database (bench.harness).

Figures (see docs/benchmarks.md for the targets):
  1 API efficiency   backfill.run vs the spec's per-run design at 20 and 100 ms per request
  2 DB ceiling       the same at zero API latency, 2-40 KB documents, GIN indexes present
  3 walk cost        walk_batch per batch, 100 k vs 1 M rows, 90 % already examined
  4 memory           peak RSS of `python -m backfill run` over a 1 M-row window
  5 writes           WAL bytes and table growth per enriched row; rows updated = rows enriched
  6 migration        `alembic upgrade head` wall time, and a concurrent writer's longest wait
  7 strategy         --strategy project vs runs on a trace-shaped archive (20 k and 1 M runs)

Progress goes to stderr; the results (markdown) to stdout.
"""

from __future__ import annotations

import argparse
import sys
import time

from bench.fig_api import figure_api
from bench.fig_ceiling import figure_ceiling, figure_small_archive
from bench.fig_migration_memory import figure_migration_memory
from bench.fig_strategy import figure_strategy
from bench.fig_walk import figure_walk
from bench.harness import SIZES, Server, say
from bench.report import FINGERPRINT_LABEL, Results, fingerprint, render


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a few minutes")
    parser.add_argument(
        "--only",
        default="1,2,3,4,5",
        help="figures groups to run: 1 (API), 2 (DB ceiling + writes), 3 (walk), 4 (migration + memory),"
        " 5 (strategies); default all",
    )
    parser.add_argument(
        "--real-pacing",
        action="store_true",
        help="figure 7 also runs the project strategy at --delay-ms 1000 on its largest archive, waited for"
        " (about 11 more minutes at full size)",
    )
    args = parser.parse_args()
    size = {**SIZES["quick" if args.quick else "full"], "real_pacing": args.real_pacing}
    command = "python -m bench" + (" --quick" if args.quick else "") + (" --real-pacing" if args.real_pacing else "")
    if args.only != parser.get_default("only"):
        command += f" --only {args.only}"
    only = set(args.only.split(","))
    started = time.perf_counter()
    code = fingerprint()
    say(f"starting PostgreSQL (package fingerprint {code})")
    server = Server()
    res = Results()
    migrations: list[tuple[str, dict[str, float]]] = []
    try:
        if "1" in only:
            figure_api(server, size, res)
        if "2" in only:
            figure_ceiling(server, size, res, migrations)
            figure_small_archive(server, size, res)
        if "3" in only:
            figure_walk(server, size, res)
        if "4" in only:
            figure_migration_memory(server, size, res, migrations)
        if "5" in only:
            figure_strategy(server, size, res)
        res.rows.sort(key=lambda r: r.figure[0])
        if fingerprint() != code:
            res.details.insert(0, "WARNING: the package changed while the benchmark ran; run it again.")
        res.details.insert(0, f"Package fingerprint ({FINGERPRINT_LABEL}): {code}")
        print(render(res, server, command, time.perf_counter() - started))
    finally:
        server.stop()
    say(f"done in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
