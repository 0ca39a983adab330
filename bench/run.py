"""feedback-backfill benchmarks: each figure measured side by side in one run, then a table.

    python bench/run.py            # full: ~8 min on 2 cores
    python bench/run.py --quick    # smaller sizes: a few minutes

One throwaway PostgreSQL (backfill.embedded.EmbeddedPostgres) holds every database; each
contender gets its own copy of the same template database (CREATE DATABASE ... TEMPLATE),
so both sides of a ratio start from identical bytes. The fake LangSmith runs in its own
process (bench/fake_server.py) and counts the requests it receives.

Figures (see docs/benchmarks.md for the targets):
  1 API efficiency   backfill.run vs the spec's per-run design at 20 and 100 ms per request
  2 DB ceiling       the same at zero API latency, 2-40 KB documents, GIN indexes present
  3 walk cost        walk_batch per batch, 100 k vs 1 M rows, 90 % already examined
  4 memory           peak RSS of `python -m backfill run` over a 1 M-row window
  5 writes           WAL bytes and table growth per enriched row; rows updated = rows enriched
  6 migration        `alembic upgrade head` wall time, and a concurrent writer's longest wait

Progress goes to stderr; the results (markdown) to stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fake_server import API_KEY  # noqa: E402
from per_run import langsmith_fetch, run_per_run  # noqa: E402

import backfill  # noqa: E402
from backfill import db, migrate, runner, synthetic  # noqa: E402
from backfill.config import Database, LangSmith, Window  # noqa: E402
from backfill.embedded import RUN_AS, EmbeddedPostgres  # noqa: E402
from backfill.sql import QUERIES, app_schema  # noqa: E402

TODAY = dt.datetime.now(dt.UTC).date()
DAYS = 20  # synthetic runs spread over this many run_dates, oldest first
SINCE = TODAY - dt.timedelta(days=DAYS - 1)
UNTIL = TODAY + dt.timedelta(days=1)
WINDOW = Window(SINCE, UNTIL)
BATCH = 100
SPEC_DELAY_S = 1.0  # the spec's --delay-ms 1000

SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "api_rows": 3000,
        "per_run_rows": {20: 400, 100: 120},
        "ceiling_rows": 100_000,
        "walk_rows": (100_000, 1_000_000),
        "memory_rows": 1_000_000,
        "migration_rows": 1_000_000,
        "cap_s": 300,
        "small_rows": 20_000,
        "small_cap_s": 40,
    },
    "quick": {
        "api_rows": 1000,
        "per_run_rows": {20: 150, 100: 50},
        "ceiling_rows": 10_000,
        "walk_rows": (10_000, 100_000),
        "memory_rows": 100_000,
        "migration_rows": 100_000,
        "cap_s": 90,
        "small_rows": 5_000,
        "small_cap_s": 20,
    },
}

# Server settings for the measurements (besides EmbeddedPostgres' fsync=off): no checkpoint
# lands in a measured phase (each starts with CHECKPOINT, so full-page writes are counted
# the same way for both sides). Autovacuum stays on, as in production, with a short naptime
# so that our tables get analyzed within a run of seconds as they would within a run of
# hours (a plan cached while the checkpoint table was empty must not outlive its growth);
# but not on `runs` (autovacuum_enabled = false, set by the builders): its vacuum is a
# deferred cost of both designs and would land at random in one side's WAL figure.
SERVER_SETTINGS = {
    "shared_preload_libraries": "pg_stat_statements",
    "shared_buffers": "1GB",
    "max_wal_size": "20GB",
    "checkpoint_timeout": "1h",
    "autovacuum_naptime": "1s",
}


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- server


class Server:
    """One EmbeddedPostgres, restarted once with SERVER_SETTINGS; databases by name."""

    def __init__(self) -> None:
        self.pg = EmbeddedPostgres.start()
        with self.admin() as conn:
            for name, value in SERVER_SETTINGS.items():
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        cmd = [
            str(self.pg.bindir / "pg_ctl"),
            "-D",
            str(self.pg.datadir),
            "-l",
            str(self.pg.root / "postgres.log"),
            "-w",
            "-m",
            "fast",
            "restart",
        ]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", RUN_AS, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, cwd="/")
        with self.admin() as conn:
            self.version = conn.execute("SHOW server_version").fetchone()[0]

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.pg.url(), autocommit=True)

    def url(self, name: str) -> str:
        return self.pg.url(name)

    def create(self, name: str, template: str | None = None) -> str:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if template:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
            else:
                conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        self.pg.stop()


@dataclass
class Fake:
    """bench/fake_server.py in its own process."""

    proc: subprocess.Popen[str]
    url: str

    def count(self) -> int:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    @property
    def langsmith(self) -> LangSmith:
        return LangSmith(api_key=API_KEY, endpoint=self.url)


@contextmanager
def fake_langsmith(latency_ms: float = 0.0, feedback: str = "synthetic") -> Iterator[Fake]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "fake_server.py"),
            "--latency-ms",
            str(latency_ms),
            "--feedback",
            feedback,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout
        yield Fake(proc, proc.stdout.readline().strip())
    finally:
        assert proc.stdin
        proc.stdin.write("quit\n")
        proc.stdin.close()
        proc.wait(10)


# ------------------------------------------------------------------------------- databases


def build_documents(url: str, rows: int, sizes: tuple[int, int], seed: str) -> None:
    """The app's schema and ``rows`` synthetic runs (backfill.synthetic) by COPY, as demo.build_archive.

    Document sizes are spread uniformly over ``sizes`` (bytes of JSON); a third of the runs
    have feedback (and a feedback_stats that counts it). Row i is on run_date SINCE + i*DAYS/rows.
    """
    with psycopg.connect(url) as conn:
        conn.execute(app_schema().encode())
        with conn.cursor().copy("COPY runs (run_id, trace_id, project, run_date, data) FROM STDIN") as copy:
            for i in range(rows):
                run_id = synthetic.run_id_for(i, seed)
                run_date = SINCE + dt.timedelta(days=i * DAYS // rows)
                size = random.Random(f"{seed}:{i}").randint(*sizes)
                doc = synthetic.run_document(run_id, run_id, f"proj-{i % 3}", run_date, size)
                copy.write_row((run_id, run_id, doc["project"], run_date, Jsonb(doc)))
        conn.execute("ALTER TABLE runs SET (autovacuum_enabled = false)")  # see SERVER_SETTINGS


# Small documents for the 1 M-row figures, built server-side. Row i is on run_date
# SINCE + i*DAYS/rows. ``sparse`` rows (~5 %, the same sha256 rule as fake_server.sparse_feedback)
# carry a feedback_stats promising one record; the others have none.
FILL_SMALL = """
INSERT INTO runs (run_id, trace_id, project, run_date, data)
SELECT x.u, x.u, x.p, x.d,
       jsonb_build_object(
           'run_id', x.u, 'trace_id', x.u, 'parent_run_id', NULL, 'project', x.p, 'run_date', x.d::text,
           'name', 'agent', 'run_type', 'chain', 'status', 'success', 'error', NULL, 'tags', '[]'::jsonb,
           'inputs', jsonb_build_object('question', 'Synthetic question #' || i),
           'outputs', jsonb_build_object('answer', 'Synthetic answer #' || i),
           'feedback_stats', CASE WHEN %(sparse)s AND get_byte(sha256(convert_to('sparse:' || x.u, 'UTF8')), 0) < 13
               THEN '{"final_verdict": {"n": 1, "avg": 1.0, "stdev": 0.0, "values": {},
                      "comments": ["Human verdict: PASS"],
                      "sources": ["{\\"type\\":\\"api\\",\\"metadata\\":{}}"]}}'::jsonb
               ELSE '{}'::jsonb END)
       || CASE WHEN i > %(examined)s THEN '{}'::jsonb
               WHEN %(layout)s = 'marked' THEN '{"feedback_records": []}'::jsonb
               WHEN i %% 3 = 0
                   THEN '{"feedback_records": [{"key": "final_verdict", "value": {"verdict": "PASS"}}]}'::jsonb
               ELSE '{}'::jsonb END
FROM generate_series(1, %(rows)s) AS i,
     LATERAL (SELECT md5('bench:' || i)::uuid::text AS u, 'proj-' || (i %% 3) AS p,
                     %(since)s::date + ((i - 1)::bigint * %(days)s / %(rows)s)::int AS d) AS x
"""

# Layout "checkpointed": the examined rows without feedback are in the checkpoint as
# no_feedback (what `backfill run` leaves behind), not marked in the row.
FILL_NO_FEEDBACK = """
INSERT INTO feedback_backfill_status (run_id, run_date, state, attempts)
SELECT run_id, run_date, 'no_feedback', 1 FROM runs WHERE id <= %(examined)s AND id %% 3 <> 0
"""


def build_small(url: str, rows: int, examined: int = 0, layout: str = "marked", sparse: bool = True) -> None:
    """``sparse``: ~5 % of the rows have a feedback_stats promising a record (fake_server's
    sparse feedback); without it none does, as the examined rows of the walk layouts must."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(app_schema().encode())
        conn.execute(
            FILL_SMALL,
            {"rows": rows, "examined": examined, "layout": layout, "since": SINCE, "days": DAYS, "sparse": sparse},
        )
        conn.execute("ALTER TABLE runs SET (autovacuum_enabled = false)")  # see SERVER_SETTINGS


def vacuum(url: str, table: str = "runs") -> None:
    """VACUUM ANALYZE ``runs`` (as autovacuum would have). Our tables are left as a fresh
    migration leaves them (never analyzed: the planner then goes by their actual size),
    not "analyzed while empty", which would make every later plan assume them empty."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {table}" if table else "VACUUM ANALYZE")


# ------------------------------------------------------------------------------ measuring


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
            lsn, size = conn.execute("SELECT pg_current_wal_lsn()::text, pg_total_relation_size('runs')").fetchone()
            upd, hot = conn.execute(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'runs'"
            ).fetchone()
            fpi = conn.execute("SELECT wal_fpi FROM pg_stat_wal").fetchone()[0]
        return lsn, size, upd, hot, fpi

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    lsn0, size0, upd0, hot0, fpi0 = snap()
    yield out
    time.sleep(0.5)  # the measured backends have exited: their statistics are flushed
    lsn1, size1, upd1, hot1, fpi1 = snap()
    with psycopg.connect(url, autocommit=True) as conn:
        out.wal_bytes = int(conn.execute("SELECT pg_wal_lsn_diff(%s, %s)", (lsn1, lsn0)).fetchone()[0])
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


def run_backfill(
    url: str, fake: Fake, limit: int | None = None, delay_ms: int = 0, cap_s: float | None = None
) -> tuple[backfill.RunSummary, int, bool]:
    """backfill.run over WINDOW: its summary, the requests the fake received, whether capped.

    With ``cap_s``, the run is stopped (after its current batch, as Ctrl-C does) once that
    many seconds have passed, so that a slow run cannot blow the benchmark's time budget.
    """
    before = fake.count()
    stop = threading.Event()
    timer = threading.Timer(cap_s, stop.set) if cap_s else None
    if timer:
        timer.start()
    try:
        summary = backfill.run(
            Database(url),
            fake.langsmith,
            backfill.RunOptions(window=WINDOW, delay_ms=delay_ms, batch_size=BATCH, limit=limit),
            stop=stop,
        )
    finally:
        if timer:
            timer.cancel()
    capped = stop.is_set()
    if summary.exit_code != 0 and not capped:
        raise RuntimeError(f"backfill.run exited {summary.exit_code}: {summary.lines()}")
    return summary, fake.count() - before, capped


# ------------------------------------------------------------------------------- figures


@dataclass
class Row:
    figure: str
    measure: str
    ours: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    met: str = ""


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    def add(self, *args: str) -> None:
        self.rows.append(Row(*args))


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def figure_api(server: Server, size: dict[str, Any], res: Results) -> None:
    rows = size["api_rows"]
    say(f"figure 1: building {rows} runs (2 KB documents)")
    build_documents(server.create("api_tmpl"), rows, (2000, 2000), "api")
    migrate.upgrade(Database(server.url("api_tmpl")))
    vacuum(server.url("api_tmpl"))
    projection = None
    for latency in (20, 100):
        with fake_langsmith(latency) as fake:
            say(f"figure 1: backfill.run, {rows} rows, {latency} ms per request")
            s, requests, _ = run_backfill(server.create("api_ours", "api_tmpl"), fake)
            ours_rate, ours_rpr = s.examined / s.elapsed_s, requests / s.examined
            n = size["per_run_rows"][latency]
            say(f"figure 1: per-run design, {n} rows, {latency} ms per request")
            url = server.create("api_base", "api_tmpl")
            before = fake.count()
            base = run_per_run(url, langsmith_fetch(fake.url, API_KEY), SINCE, UNTIL, n)
            base_rpr = (fake.count() - before) / base.rows
        ratio = ours_rate / base.rows_per_s
        res.add(
            "1 API",
            f"rows/s at {latency} ms/request ({s.examined} vs {base.rows} rows)",
            f"{ours_rate:,.0f}",
            f"{base.rows_per_s:,.1f}",
            f"{ratio:,.0f}x",
            "≥ 30x" if latency == 20 else "",
            verdict(ratio >= 30) if latency == 20 else "",
        )
        res.add(
            "1 API",
            f"API requests per row at {latency} ms/request",
            f"{ours_rpr:.4f}",
            f"{base_rpr:.2f}",
            f"{base_rpr / ours_rpr:,.0f}x fewer",
            "≤ 0.02",
            verdict(ours_rpr <= 0.02),
        )
        batches = -(-s.examined // BATCH)
        overhead = (s.elapsed_s - requests * latency / 1000) / batches
        base_overhead = base.elapsed_s / base.rows - base_rpr * latency / 1000
        projection = (latency, requests / batches, overhead, s.examined / batches, base_rpr, base_overhead)
    # At --delay-ms 1000 a batch takes max(1 s per request, its requests' time + the rest):
    # computed from the 100 ms run (requests per batch, the non-API overhead per batch).
    latency, req_per_batch, overhead, rows_per_batch, base_rpr, base_overhead = projection
    batch_s = max(SPEC_DELAY_S * req_per_batch, req_per_batch * latency / 1000 + overhead)
    rate = rows_per_batch / batch_s
    base_rate = 1 / max(SPEC_DELAY_S * base_rpr, base_rpr * latency / 1000 + base_overhead)
    res.add(
        "1 API",
        f"rows/s at --delay-ms 1000 (computed: {req_per_batch:.2f} req/batch, non-API overhead "
        f"{overhead * 1000:.0f} ms/batch, {latency} ms/request)",
        f"{rate:,.1f}",
        f"{base_rate:,.2f}",
        f"{rate / base_rate:,.0f}x",
        "≥ 90",
        verdict(rate >= 90),
    )
    server.drop("api_ours")
    server.drop("api_base")
    server.drop("api_tmpl")


def figure_ceiling(
    server: Server, size: dict[str, Any], res: Results, migrations: list[tuple[str, dict[str, float]]]
) -> None:
    rows = size["ceiling_rows"]
    say(f"figure 2: building {rows:,} runs, documents 2-40 KB")
    t = time.perf_counter()
    url = server.create("big_tmpl")
    build_documents(url, rows, (2000, 40000), "big")
    vacuum(url)
    with psycopg.connect(url) as conn:
        size_row = conn.execute(
            "SELECT pg_total_relation_size('runs'), avg(octet_length(data::text))::bigint,"
            " avg(pg_column_size(data))::bigint FROM runs"
        ).fetchone()
    say(f"figure 2: built in {time.perf_counter() - t:.0f}s; alembic upgrade head on a copy, with a concurrent writer")
    mig_url = server.create("big_mig", "big_tmpl")
    migrations.append((f"{rows:,} rows, 2-40 KB documents", timed_migration(mig_url, rows)))
    server.drop("big_mig")
    migrate.upgrade(Database(url))  # the template itself: migrated without a writer, so that
    vacuum(url)  # both contenders start from untouched pages
    res.details.append(
        f"Figure 2 archive: {rows:,} rows, `runs` {size_row[0] / 2**20:,.0f} MB with its indexes; a document is"
        f" {size_row[1] / 1024:.1f} KB of JSON on average, {size_row[2] / 1024:.1f} KB stored (pglz)."
    )
    res.details.append(explain_patch(url))
    names = ["walk_batch", "lock_rows", "patch_batch", "checkpoint", "count_invocation"]
    with fake_langsmith(0) as fake:
        say("figure 2: backfill.run, zero latency, no delay")
        ours_url = server.create("big_ours", "big_tmpl")
        reset_statements(ours_url)
        with measure_writes(ours_url) as ours_w:
            s, requests, capped = run_backfill(ours_url, fake, cap_s=size["cap_s"])
        times = statement_times(ours_url, names)
        say("figure 3: the next invocation over the archive just backfilled")
        vacuum(ours_url)
        next_count_s, next_walk_s, next_rows = next_invocation(ours_url)
        server.drop("big_ours")
        say("figure 2: backfill.run again, with the proposed expression statistics (database side only)")
        stx_url = server.create("big_stx", "big_tmpl")
        with psycopg.connect(stx_url, autocommit=True) as conn:
            conn.execute(PROPOSED_STATISTICS)
            conn.execute("ANALYZE runs")
        reset_statements(stx_url)
        s_stx, _, capped_stx = run_backfill(stx_url, fake, cap_s=size["cap_s"])
        times_stx = statement_times(stx_url, names)
        server.drop("big_stx")
        per_day = rows // DAYS
        day0, day1, day2 = SINCE, SINCE + dt.timedelta(days=1), SINCE + dt.timedelta(days=2)
        base_url = server.create("big_base", "big_tmpl")
        say(f"figure 2: per-run design, zero latency, {per_day:,} rows (one run_date)")
        with measure_writes(base_url) as base_w:
            base = run_per_run(base_url, langsmith_fetch(fake.url, API_KEY), day0, day1, per_day)
        say(f"figure 2: per-row UPDATE + commit without API, {per_day:,} rows (the next run_date)")
        db_only = run_per_run(base_url, synthetic.feedback_for_run, day1, day2, per_day)
    ours_rate = s.examined / s.elapsed_s
    ratio = ours_rate / base.rows_per_s
    cap = f", stopped at the {size['cap_s']} s cap" if capped else ""
    res.add(
        "2 DB ceiling",
        f"window rows/s, zero latency ({s.examined:,}{cap} vs {base.rows:,} rows)",
        f"{ours_rate:,.0f}",
        f"{base.rows_per_s:,.0f}",
        f"{ratio:.1f}x",
        "≥ 5,000; ≥ 5x",
        verdict(ours_rate >= 5000 and ratio >= 5),
    )
    res.add(
        "2 DB ceiling",
        "  same, baseline without any API call (per-row UPDATE + commit alone)",
        "",
        f"{db_only.rows_per_s:,.0f}",
        f"{ours_rate / db_only.rows_per_s:.1f}x",
        "",
        "",
    )
    stx_rate = s_stx.examined / s_stx.elapsed_s
    cap = f", stopped at the {size['cap_s']} s cap" if capped_stx else ""
    res.add(
        "2 DB ceiling",
        f"  what-if: backfill.run with the proposed CREATE STATISTICS ({s_stx.examined:,} rows{cap})",
        f"{stx_rate:,.0f}",
        f"{base.rows_per_s:,.0f}",
        f"{stx_rate / base.rows_per_s:.1f}x",
        "≥ 5,000; ≥ 5x",
        verdict(stx_rate >= 5000 and stx_rate / base.rows_per_s >= 5),
    )
    for label, summary, found in (("as shipped", s, times), ("with the proposed statistics", s_stx, times_stx)):
        batches = -(-summary.examined // BATCH)
        db_ms = sum(t for _, t in found.values()) / batches
        per_batch = summary.elapsed_s / batches * 1000
        res.details.append(
            f"Figure 2, where a batch of backfill.run goes, {label} ({batches:,} batches of {BATCH}, "
            f"{per_batch:.1f} ms each; mean ms per call from pg_stat_statements): "
            + ", ".join(f"{n} {t / max(c, 1):.2f}" for n, (c, t) in sorted(found.items(), key=lambda kv: -kv[1][1]))
            + f"; database {db_ms:.1f} ms per batch,"
            f" the rest (API round trip, JSON, Python) {per_batch - db_ms:.1f} ms."
        )
    res.add(
        "3 walk",
        f"next invocation over the figure-2 archive once backfilled ({rows:,} rows of 2-40 KB, "
        f"{s.no_feedback:,} no_feedback, {next_rows} pending): first walk_batch ms; count_pending ms",
        f"{next_walk_s * 1000:,.0f}; {next_count_s * 1000:,.0f}",
        "",
        "",
        "",
        "",
    )
    # Figure 5 from the same runs.
    res.add(
        "5 writes",
        f"WAL bytes per enriched row ({s.enriched:,} vs {base.enriched:,} enriched; full-page images per enriched row)",
        f"{ours_w.wal_bytes / s.enriched:,.0f} ({ours_w.fpi / s.enriched:.2f})",
        f"{base_w.wal_bytes / base.enriched:,.0f} ({base_w.fpi / base.enriched:.2f})",
        f"{(base_w.wal_bytes / base.enriched) / (ours_w.wal_bytes / s.enriched):.2f}x less",
        "",
        "",
    )
    res.add(
        "5 writes",
        "table growth (runs + TOAST + indexes) per enriched row, bytes",
        f"{ours_w.growth_bytes / s.enriched:,.0f}",
        f"{base_w.growth_bytes / base.enriched:,.0f}",
        "",
        "",
        "",
    )
    res.add(
        "5 writes",
        "rows updated (n_tup_upd) / rows enriched / rows examined",
        f"{ours_w.updated:,} / {s.enriched:,} / {s.examined:,}",
        f"{base_w.updated:,} / {base.enriched:,} / {base.rows:,}",
        "",
        "updated = enriched",
        verdict(ours_w.updated == s.enriched),
    )
    for name in ("big_base", "big_tmpl"):
        server.drop(name)


def explain_patch(url: str) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of patch_batch for the first batch of the walk, rolled back."""
    with psycopg.connect(url) as conn:
        first = conn.execute("SELECT id, run_id FROM runs ORDER BY run_date, id LIMIT %s", (BATCH,)).fetchall()
        patch = [{"id": i, "records": synthetic.feedback_for_run(r)} for i, r in first if synthetic.feedback_for_run(r)]
        try:
            params = {"patch": Jsonb(patch), "ids": [p["id"] for p in patch]}
            plan = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {QUERIES['patch_batch']}", params).fetchall()
            text = "\n".join(r[0] for r in plan)
        except psycopg.Error as exc:
            text = f"(not run: {exc})"
        conn.rollback()
    head = f"EXPLAIN (ANALYZE, BUFFERS) of patch_batch, first batch ({len(patch)} runs with feedback), rolled back"
    return f"{head}:\n\n```\n{text}\n```"


# The fix proposed for the plans of walk_batch and patch_batch (docs/benchmarks.md): without
# statistics on these expressions the planner takes the pending predicate to select 0.5 %
# of the rows, whatever the truth. A database-side change; the package is not touched.
PROPOSED_STATISTICS = (
    "CREATE STATISTICS runs_feedback_pending_stx"
    " ON (COALESCE(jsonb_typeof(data -> 'feedback_records'), 'null')), (jsonb_typeof(data)) FROM runs"
)


def figure_small_archive(server: Server, size: dict[str, Any], res: Results) -> None:
    """backfill.run on a small archive, as shipped and with PROPOSED_STATISTICS, same data."""
    rows, cap_s = size["small_rows"], size["small_cap_s"]
    say(f"figure 2: small archive, {rows:,} runs, documents 2-40 KB")
    url = server.create("small_tmpl")
    build_documents(url, rows, (2000, 40000), "small")
    migrate.upgrade(Database(url))
    vacuum(url)
    rates = []
    with fake_langsmith(0) as fake:
        for name, statistics_ in (("small_ours", False), ("small_stx", True)):
            say(
                f"figure 2: small archive, backfill.run{' with the proposed statistics' if statistics_ else ''}"
                f" (at most {cap_s} s)"
            )
            db_url = server.create(name, "small_tmpl")
            if statistics_:
                with psycopg.connect(db_url, autocommit=True) as conn:
                    conn.execute(PROPOSED_STATISTICS)
                    conn.execute("ANALYZE runs")
            s, _, capped = run_backfill(db_url, fake, cap_s=cap_s)
            rates.append((s.examined / s.elapsed_s, s.examined, capped))
            server.drop(name)
    server.drop("small_tmpl")
    (ours, n, capped), (stx, n_stx, capped_stx) = rates

    def note(n: int, capped: bool) -> str:
        return f"{n:,} rows" + (f" in the {cap_s} s cap" if capped else "")

    res.add(
        "2 DB ceiling",
        f"small archive, {rows:,} rows: window rows/s as shipped ({note(n, capped)}) vs with the "
        f"proposed CREATE STATISTICS ({note(n_stx, capped_stx)})",
        f"{ours:,.0f}",
        f"with statistics: {stx:,.0f}",
        f"{stx / ours:.1f}x",
        "≥ 5,000",
        verdict(ours >= 5000),
    )


WALK_OPTIONS = backfill.RunOptions(window=Window(SINCE, UNTIL), batch_size=BATCH)


def walk_all(url: str) -> tuple[float, list[float], float, int]:
    """(count_pending s, per-batch walk_batch times, first batch s, rows): the runner's own walk."""
    times: list[float] = []
    gw = db.connect(Database(url))
    try:
        t = time.perf_counter()
        runner.count_pending(gw, WALK_OPTIONS)
        count_s = time.perf_counter() - t
        total = 0
        batches = runner.walk(gw, WALK_OPTIONS)
        while True:
            t = time.perf_counter()
            batch = next(batches, None)
            times.append(time.perf_counter() - t)
            if batch is None:
                break
            total += len(batch)
    finally:
        gw.close()
    return count_s, times, times[0], total


def next_invocation(url: str) -> tuple[float, float, int]:
    """(count_pending s, first walk batch s, rows it returns) of a new invocation over the window."""
    gw = db.connect(Database(url))
    try:
        t = time.perf_counter()
        runner.count_pending(gw, WALK_OPTIONS)
        count_s = time.perf_counter() - t
        t = time.perf_counter()
        batch = next(runner.walk(gw, WALK_OPTIONS), [])
        return count_s, time.perf_counter() - t, len(batch)
    finally:
        gw.close()


def explain_walk(url: str) -> str:
    """EXPLAIN of walk_batch on the window's first day, first batch."""
    params = {
        "day": SINCE,
        "projects": None,
        "max_attempts": 3,
        "refetch_since": None,
        "after_id": 0,
        "batch_size": BATCH,
    }
    with psycopg.connect(url, autocommit=True) as conn:
        plan = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {QUERIES['walk_batch']}", params).fetchall()
    return "\n".join(r[0] for r in plan)


def figure_walk(server: Server, size: dict[str, Any], res: Results) -> None:
    small, large = size["walk_rows"]
    found: dict[tuple[str, int], tuple[float, list[float], float, int]] = {}
    for layout in ("marked", "checkpointed"):
        for rows in (small, large):
            say(f"figure 3: {rows:,} rows, 90 % examined ({layout})")
            url = server.create("walk")
            build_small(url, rows, examined=rows * 9 // 10, layout=layout, sparse=False)
            migrate.upgrade(Database(url))
            if layout == "checkpointed":
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(FILL_NO_FEEDBACK, {"examined": rows * 9 // 10})
            vacuum(url, table="")  # the steady state: everything analyzed
            found[(layout, rows)] = walk_all(url)
            if rows == large:
                res.details.append(
                    f"EXPLAIN (ANALYZE, BUFFERS) of walk_batch, first batch, {rows:,} rows, layout {layout}:\n\n```\n"
                    f"{explain_walk(url)}\n```"
                )
            server.drop("walk")
    for layout, label in (
        ("marked", "90 % enriched (feedback_records = [])"),
        ("checkpointed", "90 % examined: 30 % enriched, 60 % no_feedback in the checkpoint"),
    ):
        c_s, t_s, f_s, n_s = found[(layout, small)]
        c_l, t_l, f_l, n_l = found[(layout, large)]
        med_s, med_l = statistics.median(t_s[1:-1]) * 1000, statistics.median(t_l[1:-1]) * 1000
        res.add(
            "3 walk",
            f"walk_batch ms per batch, median ({label}): {small:,} vs {large:,} rows",
            f"{med_s:.2f} vs {med_l:.2f}",
            "",
            f"{med_l / med_s:.2f}x",
            "flat",
            verdict(med_l / med_s < 1.5) if layout == "marked" else "",
        )
        res.add(
            "3 walk",
            f"  first walk_batch of an invocation ms ({layout}): {small:,} vs {large:,} rows",
            f"{f_s * 1000:.1f} vs {f_l * 1000:.1f}",
            "",
            f"{f_l / f_s:.1f}x",
            "flat",
            verdict(f_l / f_s < 1.5),
        )
        res.add(
            "3 walk",
            f"  count_pending ms at start ({layout}): {small:,} vs {large:,} rows",
            f"{c_s * 1000:.1f} vs {c_l * 1000:.1f}",
            "",
            f"{c_l / c_s:.1f}x",
            "",
            "",
        )


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
    mem_rows = size["memory_rows"]
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
    server.drop("m1")


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


# ------------------------------------------------------------------------------- report


def machine(server: Server) -> list[str]:
    cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    mem = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
    return [
        f"- CPU: {os.cpu_count()} (nproc {len(os.sched_getaffinity(0))}) x {cpu.group(1).strip() if cpu else '?'}",
        f"- RAM: {int(mem.group(1)) / 2**20:.1f} GiB" if mem else "- RAM: ?",
        f"- PostgreSQL {server.version} (EmbeddedPostgres: fsync=off; "
        + ", ".join(f"{k}={v}" for k, v in SERVER_SETTINGS.items())
        + ")",
        f"- Python {platform.python_version()}, {platform.platform()}",
    ]


def render(res: Results, server: Server, command: str, elapsed: float) -> str:
    head = ["figure", "measure", "backfill.run", "per-run design (or reference)", "ratio", "target", "met?"]
    lines = [
        f"Command: `{command}` ({elapsed / 60:.1f} min)",
        "",
        *machine(server),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for r in res.rows:
        lines.append("| " + " | ".join([r.figure, r.measure, r.ours, r.baseline, r.ratio, r.target, r.met]) + " |")
    lines += ["", *(d + "\n" for d in res.details)]
    return "\n".join(lines)


def fingerprint() -> str:
    """A hash of the package, its SQL and its migrations: the code these figures measured."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(
        [*ROOT.glob("backfill/**/*.py"), *ROOT.glob("backfill/**/*.sql"), *ROOT.glob("alembic/**/*.py")]
    ):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a few minutes")
    parser.add_argument(
        "--only",
        default="1,2,3,4",
        help="figures groups to run: 1 (API), 2 (DB ceiling + writes), 3 (walk), 4 (migration + memory); default all",
    )
    args = parser.parse_args()
    size = SIZES["quick" if args.quick else "full"]
    command = "python bench/run.py" + (" --quick" if args.quick else "")
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
        res.rows.sort(key=lambda r: r.figure[0])
        if fingerprint() != code:
            res.details.insert(0, "WARNING: the package changed while the benchmark ran; run it again.")
        res.details.insert(0, f"Package fingerprint (sha256 of backfill/ and alembic/ sources): {code}")
        print(render(res, server, command, time.perf_counter() - started))
    finally:
        server.stop()
    say(f"done in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
