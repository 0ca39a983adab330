"""Issue 24, item 5: what bounds figure 2 (the runs strategy at zero API latency), by CPU.

    python -m bench.profile_ceiling                 # figure 2's archive: 100,000 rows of 2-40 KB (~6 min)
    python -m bench.profile_ceiling --rows 20000

Figure 2's archive and run (``bench.fig_ceiling``: backfill.run, batches of 100, no delay,
the benchmarks' fake LangSmith in its own process at zero latency), measured by where the
CPU went: this process's main thread (the walk, the judge, the patch's parameters, psycopg),
its other threads (the fetch ahead: the langsmith client's HTTP and JSON), the fake
LangSmith's process, and the PostgreSQL server's processes (the backend executing the
statements, the WAL writer, autovacuum); then pg_stat_statements' per-query times. Each
figure is CPU seconds per second of the run: on this machine's 2 cores, the four sum to
at most 2.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

from backfill.config import Database
from backfill.operations import migrate
from bench.builders import build_documents, vacuum
from bench.fig_ceiling import BREAKDOWN
from bench.harness import Server, fake_langsmith, run_backfill, say
from bench.measures import reset_statements, statement_times

TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def server_pids(root: Path) -> list[int]:
    """The PostgreSQL server's processes (the postmaster's children, and itself)."""
    postmaster = int((root / "data" / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == postmaster:
                pids.append(int(entry.name))
    return pids


def server_cpu(root: Path, seen: dict[int, float]) -> float:
    """CPU seconds of the server's processes since ``seen`` was filled (new processes: all of theirs)."""
    total = 0.0
    for pid in server_pids(root):
        try:
            now = cpu_of(pid)
        except OSError:
            continue
        total += now - seen.get(pid, 0.0)
        seen[pid] = now
    return total


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile_ceiling", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    server = Server()
    try:
        say(f"building {args.rows:,} runs, documents 2-40 KB")
        url = server.create("ceiling")
        build_documents(url, args.rows, (2000, 40000), "big")
        vacuum(url)
        migrate.upgrade(Database(url))
        vacuum(url)
        with fake_langsmith(0) as fake:
            reset_statements(url)
            seen: dict[int, float] = {}
            server_cpu(server.pg.root, seen)
            fake_before, main_before = cpu_of(fake.proc.pid), time.thread_time()
            ru = resource.getrusage(resource.RUSAGE_SELF)
            proc_before = ru.ru_utime + ru.ru_stime
            say("backfill.run, zero latency, no delay")
            started = time.perf_counter()
            summary, requests, _ = run_backfill(url, fake)
            wall = time.perf_counter() - started
            ru = resource.getrusage(resource.RUSAGE_SELF)
            main_s = time.thread_time() - main_before
            others_s = ru.ru_utime + ru.ru_stime - proc_before - main_s
            fake_s, pg_s = cpu_of(fake.proc.pid) - fake_before, server_cpu(server.pg.root, seen)
        times = statement_times(url, BREAKDOWN)
    finally:
        server.stop()
    batches = max(1, summary.examined // 100)
    total = main_s + others_s + fake_s + pg_s
    parts = [
        ("backfill: main thread (walk, judge, patch parameters, psycopg)", main_s),
        ("backfill: other threads (fetch ahead: HTTP, JSON)", others_s),
        ("the fake LangSmith (its own process)", fake_s),
        ("PostgreSQL (backend, WAL writer, autovacuum)", pg_s),
    ]
    lines = [
        f"`python -m bench.profile_ceiling {' '.join(sys.argv[1:])}`: {summary.examined:,} rows in {wall:.1f} s,"
        f" {summary.examined / wall:,.0f} rows/s, {requests:,} requests, {summary.enriched:,} enriched",
        "",
        "| where the CPU went | CPU s | per second of the run | per batch of 100 |",
        "|---|---|---|---|",
        *(f"| {name} | {s:.1f} | {s / wall:.2f} | {1000 * s / batches:.1f} ms |" for name, s in parts),
        f"| all | {total:.1f} | {total / wall:.2f} of {os.cpu_count()} cores | {1000 * total / batches:.1f} ms |",
        "",
        "The database, per batch (pg_stat_statements, mean ms per call): "
        + ", ".join(f"{n} {ms / max(1, c):.2f}" for n, (c, ms) in sorted(times.items(), key=lambda x: -x[1][1])),
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
