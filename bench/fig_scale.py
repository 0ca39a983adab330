"""Issue 24, item 4: the project strategy's database time against the archive's size, the records held equal.

    python -m bench.fig_scale                       # 1 M and 5 M runs, ~50 k reviewed roots each (~35 min)
    python -m bench.fig_scale --traces 10000 50000  # 100 k and 500 k runs

Figure 7's trace-shaped archive (traces of 10 runs, 14 days, two projects) at two sizes
whose reviewed roots are as many: the larger archive's extra runs have no feedback (the
share of reviewed roots is divided by the size ratio). Each archive: the project strategy at
--delay-ms 0 on its own copy, against the fake LangSmith in its own process. "In the
database" is the server's execution time (pg_stat_statements, every connection), split by
the phase each named query of sql/queries.sql belongs to: the start (pending counts, the
plan, the horizon), the listing (staging) and the apply (walk, patch, checkpoint, marks).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from bench.fig_strategy import measure, served
from bench.harness import Server, say

#: Named queries by phase (the rest: the apply).
START = {
    "count_pending", "count_settled", "count_refetch", "settled_marks", "strategy_promised", "strategy_promising",
    "strategy_rows", "horizon_ids", "horizon_xid", "horizon_closed", "start_invocation", "last_refetch",
}  # fmt: skip
LISTING = {
    "project_session_ids", "listing_latest", "listing_start", "listing_progress", "listing_done", "stage_records",
    "staged_clear", "staged_prune", "sample_runs", "staged_outside", "listing_applied",
}  # fmt: skip
#: The roots of this many traces (of ``figure 7``'s 1 M runs) are reviewed in every archive.
REVIEWED_TRACES = 50_000


def phases(by_query: dict[str, tuple[int, float]]) -> dict[str, float]:
    """Seconds in the database per phase, and the queries of the apply that took longest."""
    out = {"start": 0.0, "listing": 0.0, "apply": 0.0}
    for name, (_, ms) in by_query.items():
        out["start" if name in START else "listing" if name in LISTING else "apply"] += ms / 1000
    return out


def one(server: Server, traces: int, reviewed: float) -> dict[str, Any]:
    template = f"scale_{traces}"
    with served(server, template, traces, reviewed) as (built, url):
        say(f"  project on {built['rows']:,} runs")
        r = measure(server, template, url, "project")
    return {**r, "rows": built["rows"], "reviewed": built["reviewed"], "phases": phases(r["by_query"])}


def top(by_query: dict[str, tuple[int, float]], n: int = 4) -> str:
    worst = sorted(((ms, name, calls) for name, (calls, ms) in by_query.items() if name not in START | LISTING))[::-1]
    return ", ".join(f"{name} {ms / 1000:.1f} s ({calls:,} calls)" for ms, name, calls in worst[:n])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fig_scale", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--traces", type=int, nargs=2, default=[100_000, 500_000])
    args = parser.parse_args()
    server = Server()
    started = time.perf_counter()
    try:
        small, large = args.traces
        results = [one(server, t, min(1.0, REVIEWED_TRACES * (small / 100_000) / t)) for t in (small, large)]
    finally:
        server.stop()
    lines = [
        f"PostgreSQL {server.version}; `python -m bench.fig_scale {' '.join(sys.argv[1:])}`",
        "",
        "| archive | reviewed roots | records | requests | time at --delay-ms 0 | in the database:"
        " all | start | listing | apply |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        p = r["phases"]
        lines.append(
            f"| {r['rows']:,} runs | {r['reviewed']:,} | {r['records']:,} | {r['requests']:,} | {r['wall_s']:.1f} s"
            f" | {r['db_s']:.1f} s | {p['start']:.1f} s | {p['listing']:.1f} s | {p['apply']:.1f} s |"
        )
    a, b = results
    lines += [
        "",
        f"{b['rows'] / a['rows']:.0f}x the runs, the same records within {abs(b['records'] / a['records'] - 1):.1%}:"
        f" the apply's database time {b['phases']['apply'] / a['phases']['apply']:.2f}x,"
        f" the whole run's {b['db_s'] / a['db_s']:.2f}x, its wall clock {b['wall_s'] / a['wall_s']:.2f}x;"
        f" tables identical to the runs strategy's: checked by figure 7, not here.",
        "",
        *(f"The apply's longest queries at {r['rows']:,} runs: {top(r['by_query'])}." for r in results),
    ]
    print("\n".join(lines))
    say(f"done in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
