"""What the figures read off a run: WAL and table growth, per-statement times, a writer's waits, peak RSS."""

from __future__ import annotations

import random
import re
import resource
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from backfill.config import Database
from backfill.operations import migrate
from backfill.sql import QUERIES
from bench.harness import ROOT, one


@dataclass
class Writes:
    """WAL, size and row-update counters of one database across a phase."""

    wal_bytes: int = 0
    fpi: int = 0
    growth_bytes: int = 0
    updated: int = 0
    hot: int = 0


@contextmanager
def measure_writes(url: str) -> Iterator[Writes]:
    out = Writes()

    def snap() -> tuple[str, int, int, int, int]:
        with psycopg.connect(url, autocommit=True) as conn:
            lsn, size = one(conn, "SELECT pg_current_wal_lsn()::text, pg_total_relation_size('runs')")
            upd, hot = one(conn, "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'runs'")
            fpi = one(conn, "SELECT wal_fpi FROM pg_stat_wal")[0]
        return lsn, size, upd, hot, fpi

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    lsn0, size0, upd0, hot0, fpi0 = snap()
    yield out
    time.sleep(0.5)  # the measured backends have exited: their statistics are flushed
    lsn1, size1, upd1, hot1, fpi1 = snap()
    with psycopg.connect(url, autocommit=True) as conn:
        out.wal_bytes = int(one(conn, "SELECT pg_wal_lsn_diff(%s, %s)", (lsn1, lsn0))[0])
    out.growth_bytes, out.updated, out.hot, out.fpi = size1 - size0, upd1 - upd0, hot1 - hot0, fpi1 - fpi0


def reset_statements(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SELECT pg_stat_statements_reset()")


def statement_times(url: str, names: list[str]) -> dict[str, tuple[int, float]]:
    """(calls, total ms) per named query of queries.sql, from pg_stat_statements."""
    heads = {n: re.sub(r"\s+", " ", QUERIES[n])[:40] for n in names}
    out: dict[str, tuple[int, float]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for query, calls, total in conn.execute(
            "SELECT query, calls, total_exec_time FROM pg_stat_statements WHERE dbid ="
            " (SELECT oid FROM pg_database WHERE datname = current_database())"
        ):
            text = re.sub(r"\s+", " ", query)
            for name, head in heads.items():
                if text.startswith(head):
                    c, t = out.get(name, (0, 0.0))
                    out[name] = (c + calls, t + total)
    return out


def database_s(url: str) -> float:
    """Seconds the server spent executing statements in this database since ``reset_statements``
    (pg_stat_statements' total_exec_time: every connection, the work's and the listing's alike)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(total_exec_time), 0) FROM pg_stat_statements WHERE dbid ="
            " (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()
    return float(row[0]) / 1000 if row else 0.0


class Writer:
    """A thread of single-row UPDATEs in autocommit (the extractor), recording each one's time."""

    def __init__(self, url: str, max_id: int, pause_s: float = 0.005) -> None:
        self.url, self.max_id, self.pause_s = url, max_id, pause_s
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        rng = random.Random(7)
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("SET lock_timeout = 0")
            while not self._stop.is_set():
                t = time.perf_counter()
                conn.execute(
                    "UPDATE runs SET data = data || jsonb_build_object('touched_at', clock_timestamp()::text)"
                    " WHERE id = %s",
                    (rng.randint(1, self.max_id),),
                )
                self.times.append(time.perf_counter() - t)
                self._stop.wait(self.pause_s)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def timed_migration(url: str, rows: int) -> dict[str, float]:
    """`alembic upgrade head` (migrate.upgrade) with a concurrent writer; the writer alone first."""
    with Writer(url, rows) as alone:
        time.sleep(2.0)
    with Writer(url, rows) as writer:
        t = time.perf_counter()
        migrate.upgrade(Database(url))
        wall = time.perf_counter() - t
    return {
        "wall_s": wall,
        "updates": len(writer.times),
        "max_ms": max(writer.times) * 1000,
        "p99_ms": quantile(writer.times, 0.99) * 1000,
        "alone_max_ms": max(alone.times) * 1000,
        "alone_p99_ms": quantile(alone.times, 0.99) * 1000,
    }


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def peak_rss(cmd: list[str], env: dict[str, str]) -> tuple[int, float, int, str]:
    """(peak RSS kB from VmHWM, seconds, exit code, stderr) of a subprocess."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr or []), daemon=True)
    reader.start()
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak = max(peak, int(re.search(r"VmHWM:\s+(\d+)", status).group(1)))  # type: ignore[union-attr]
        except (OSError, AttributeError):
            pass
        time.sleep(0.1)
    reader.join()
    if peak == 0:  # exited before the first sample: the kernel's figure for waited-for children
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak, time.perf_counter() - t, proc.returncode, "".join(err)
