"""Figures 6 and 4 on one 1 M-row archive of small documents: the migration, then the memory of a run.

Figure 6: `alembic upgrade head` wall time and a concurrent writer's longest wait (this archive's
and, from fig_ceiling, the figure-2 archive's). Figure 4: peak RSS of `python -m backfill run`
over the whole window, after a first --limit 10,000 run.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from bench.builders import build_small, vacuum
from bench.fake_server import API_KEY
from bench.harness import SINCE, UNTIL, Server, fake_langsmith, say
from bench.measures import peak_rss, timed_migration
from bench.report import Results, verdict


def figure_migration_memory(
    server: Server, size: dict[str, Any], res: Results, migrations: list[tuple[str, dict[str, float]]]
) -> None:
    rows = size["migration_rows"]
    say(f"figure 6: {rows:,} rows, small documents; alembic upgrade head with a concurrent writer")
    url = server.create("m1")
    build_small(url, rows)
    vacuum(url)
    migrations.insert(0, (f"{rows:,} rows, small documents", timed_migration(url, rows)))
    vacuum(url)
    _add_migrations(res, migrations)
    _memory(url, size["memory_rows"], res)
    server.drop("m1")


def _add_migrations(res: Results, migrations: list[tuple[str, dict[str, float]]]) -> None:
    for label, m in migrations:
        res.add("6 migration", f"alembic upgrade head, {label}: wall s", f"{m['wall_s']:.1f}", "", "", "", "")
        res.add(
            "6 migration",
            f"  concurrent writer ({m['updates']:,} single-row UPDATEs): longest wait ms, p99",
            f"{m['max_ms']:.1f}, {m['p99_ms']:.1f}",
            f"alone: {m['alone_max_ms']:.1f}, {m['alone_p99_ms']:.1f}",
            "",
            "no lock wait",
            verdict(m["max_ms"] < 1000),
        )


def _memory(url: str, mem_rows: int, res: Results) -> None:
    """Peak RSS of the command a DBA runs, over the migrated archive at ``url``."""
    with fake_langsmith(0, feedback="sparse") as fake:
        env = {**os.environ, "DATABASE_URL": url, "LANGSMITH_API_KEY": API_KEY, "LANGSMITH_ENDPOINT": fake.url}
        args = ["--since", SINCE.isoformat(), "--until", UNTIL.isoformat(), "--delay-ms", "0", "--no-progress"]
        peaks = []
        for limit in (10_000, mem_rows):
            say(f"figure 4: python -m backfill run --limit {limit:,} (peak RSS)")
            peaks.append(peak_rss([sys.executable, "-m", "backfill", "run", *args, "--limit", str(limit)], env))
    (rss_small, _, _, _), (rss, elapsed, code, stderr) = peaks
    res.details.append(
        f"Figure 4, `python -m backfill run ... --limit {mem_rows}` said (stderr):\n\n```\n{stderr.strip()}\n```"
    )
    examined = re.search(r"examined (\d+)", stderr)
    n = int(examined.group(1)) if examined else 0
    res.add(
        "4 memory",
        f"peak RSS MB of `python -m backfill run --limit {mem_rows:,}` over {mem_rows:,} rows "
        f"({n:,} examined after a first --limit 10,000 run; exit {code}, {n / elapsed:,.0f} rows/s)",
        f"{rss / 1024:.0f}",
        f"10,000 rows: {rss_small / 1024:.0f}",
        "",
        "< 200 MB",
        verdict(rss / 1024 < 200),
    )
