"""Issue 14 item 4: where a batch of backfill.run goes on the figure-2 archive, variants side by side.

    python -m bench.profile_patch --rows 100000 --repeat 2            # from the project root
    python -m bench.profile_patch --rows 30000 --variants shipped,pglz --perf --py-spy

Builds the figure-2 archive once (2-40 KB documents, the app's indexes and ours, GIN
included), then runs ``backfill.run`` at zero latency and zero delay on a fresh template copy
per variant, the variants alternating (ABAB...), and reports per variant: window rows/s,
pg_stat_statements per statement (ms, WAL bytes and full-page images per call), WAL and FPI
per enriched row, and CPU seconds of the client (this process), the server (the postmaster's
children) and the fake LangSmith. ``--perf`` samples the backend serving the run (perf
record), ``--py-spy`` the client and the fake (py-spy record): the top functions by self time.

A variant is the package as shipped with a part of it put back as it was before issue 14's
item 4, or (``walk_twice``) before the walk read each document once (``VARIANTS``): the
comparison is of code, on the same bytes, in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from backfill.config import Database
from backfill.operations import migrate
from backfill.sandbox import synthetic
from backfill.sql import QUERIES
from bench.builders import build_documents, vacuum
from bench.fake_server import dense_feedback
from bench.harness import BATCH, Server, fake_langsmith, one, run_backfill, say
from bench.measures import measure_writes, reset_statements

#: Named queries whose pg_stat_statements figures break a batch down.
STATEMENTS = ["walk_batch", "lock_rows", "patch_batch", "checkpoint", "count_invocation", "lease_renew"]


@contextlib.contextmanager
def shipped() -> Iterator[None]:
    yield


@contextlib.contextmanager
def queries(**replaced: str) -> Iterator[None]:
    """Named queries replaced for the duration of one run (db.Gateway reads QUERIES at each call)."""
    saved = {k: QUERIES[k] for k in replaced}
    QUERIES.update(replaced)
    try:
        yield
    finally:
        QUERIES.update(saved)


def pglz() -> contextlib.AbstractContextManager[None]:
    """Documents compressed as before: the server's default method (pglz), as where toast_compression says no."""
    return queries(toast_compression="SELECT false AS lz4")


#: patch_batch before issue 14's item 4: r.data read by four functions per row, each
#: fetching and decompressing the whole document again.
PATCH_BATCH_BEFORE = """
WITH patch AS (
    SELECT p.id, p.records
    FROM jsonb_to_recordset(%(patch)s::jsonb) AS p(id integer, records jsonb)
), before AS (
    SELECT r.id, CASE WHEN r.data ? 'feedback_records' THEN 'null' ELSE 'absent' END AS prior
    FROM runs AS r WHERE r.id = ANY(%(ids)s::integer[])
)
UPDATE runs AS r
SET data = r.data || jsonb_build_object('feedback_records', p.records)
FROM patch AS p JOIN before AS b ON b.id = p.id
WHERE r.id = ANY(%(ids)s::integer[]) AND r.id = p.id
  AND jsonb_typeof(r.data) = 'object'
  AND (NOT r.data ? 'feedback_records' OR r.data -> 'feedback_records' = 'null'::jsonb)
RETURNING r.run_id, b.prior, NULL::text AS prior_records, md5((r.data -> 'feedback_records')::text) AS records_md5;
"""


def patch_before() -> contextlib.AbstractContextManager[None]:
    return queries(patch_batch=PATCH_BATCH_BEFORE)


def wal_lz4() -> contextlib.AbstractContextManager[None]:
    """A DBA's what-if, not the package's: full-page images compressed (wal_compression = lz4,
    a server setting; the bench's superuser sets it per transaction)."""
    return queries(transaction_settings=QUERIES["transaction_settings"] + "\nSET LOCAL wal_compression = 'lz4';")


#: walk_batch before the walk read each document once: two functions of r.data in its select
#: list, each fetching and decompressing the whole document.
WALK_BATCH_BEFORE = """
SELECT r.id, r.run_id, r.run_date, jsonb_typeof(r.data) AS data_type,
       r.data -> 'feedback_stats' AS feedback_stats,
       COALESCE((SELECT s.attempts FROM feedback_backfill_status AS s WHERE s.run_id = r.run_id), 0) AS attempts
FROM runs AS r
WHERE COALESCE(jsonb_typeof(r.data -> 'feedback_records'), 'null') = 'null'
  AND r.run_date = %(day)s
  AND r.id > %(after_id)s::integer
  AND (%(projects)s::text[] IS NULL OR r.project = ANY(%(projects)s::text[]))
  AND NOT EXISTS (
      SELECT 1 FROM feedback_backfill_status AS s
      WHERE s.run_id = r.run_id
        AND (s.state = 'invalid'
             OR (s.state = 'failed' AND s.attempts >= %(max_attempts)s)
             OR (s.state = 'no_feedback' AND NOT r.data @? '$.feedback_stats.* ? (@.n > 0)')))
ORDER BY r.id
LIMIT %(batch_size)s;
"""


def walk_twice() -> contextlib.AbstractContextManager[None]:
    """The walk as it was: each document detoasted twice by walk_batch."""
    return queries(walk_batch=WALK_BATCH_BEFORE)


@contextlib.contextmanager
def before() -> Iterator[None]:
    """The patch as it was before issue 14's item 4: pglz and the old statement."""
    with pglz(), patch_before():
        yield


VARIANTS: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
    "shipped": shipped,
    "pglz": pglz,
    "patch_before": patch_before,
    "before": before,
    "walk_twice": walk_twice,
    "wal_lz4": wal_lz4,
}


@dataclass
class Result:
    rows_per_s: float
    examined: int
    enriched: int
    elapsed_s: float
    wal_per_enriched: float
    fpi_per_enriched: float
    growth_per_enriched: float
    hot: int
    cpu: dict[str, float]
    statements: dict[str, dict[str, float]]
    perf: list[str] = field(default_factory=list)
    py_spy: dict[str, list[str]] = field(default_factory=dict)


def _proc_cpu(pid: int, children: bool = False) -> float:
    """utime + stime (+ the reaped children's) of a process, seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def server_cpu(postmaster: int) -> float:
    """CPU seconds of the whole server: the postmaster, its live children, and those it reaped."""
    total = _proc_cpu(postmaster, children=True)
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    total += _proc_cpu(int(p.name))
    return total


def statement_stats(url: str) -> dict[str, dict[str, float]]:
    """Per named query: calls, total ms, WAL bytes, full-page images, blocks dirtied (pg_stat_statements)."""
    heads = {n: _head(QUERIES[n]) for n in STATEMENTS}
    out: dict[str, dict[str, float]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for query, calls, ms, wal, fpi, dirtied in conn.execute(
            "SELECT query, calls, total_exec_time, wal_bytes, wal_fpi, shared_blks_dirtied FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ):
            text = _head(query)
            for name, head in heads.items():
                if text == head:
                    s = out.setdefault(name, dict.fromkeys(("calls", "ms", "wal", "fpi", "dirtied"), 0.0))
                    for key, value in zip(s, (calls, ms, wal, fpi, dirtied), strict=True):
                        s[key] += float(value)
    return out


def _head(query: str) -> str:
    """A statement's first 40 characters, comment lines left out (a variant's text has none):
    patch_batch and its variants share theirs, as no other statement of a run does; a variant
    of walk_batch is matched by its own text (statement_stats runs inside the variant)."""
    lines = [ln for ln in query.splitlines() if not ln.lstrip().startswith("--")]
    return " ".join(" ".join(lines).split())[:40]


class Sampler:
    """perf record of the backend serving the run, py-spy record of the client and the fake, while it runs."""

    def __init__(self, url: str, fake_pid: int, perf: bool, py_spy: bool, out: Path) -> None:
        self.url, self.fake_pid, self.perf, self.py_spy, self.out = url, fake_pid, perf, py_spy, out
        self.procs: list[subprocess.Popen[bytes]] = []
        self._thread = threading.Thread(target=self._attach, daemon=True)
        self._stop = threading.Event()

    def _attach(self) -> None:
        if self.py_spy:
            for who, pid in (("client", os.getpid()), ("fake", self.fake_pid)):
                cmd = ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", "250", "--threads"]
                cmd += ["--nonblocking", "--output", str(self.out / f"{who}.txt")]
                self.procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if not self.perf:
            return
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.is_set():
                found = conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'feedback-backfill'"
                ).fetchall()
                if found:
                    cmd = ["perf", "record", "-F", "499", "-g", "-p", str(found[0][0])]
                    cmd += ["-o", str(self.out / "perf.data")]
                    self.procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                    return
                time.sleep(0.05)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for p in self.procs:
            p.send_signal(2)  # SIGINT: both write their output and exit
        for p in self.procs:
            p.wait(60)


def perf_top(data: Path, n: int = 25) -> list[str]:
    """The backend's top symbols by self time (perf report)."""
    if not data.exists():
        return []
    done = subprocess.run(
        ["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", "symbol", "-g", "none"],
        capture_output=True,
        text=True,
    )
    lines = [ln.strip() for ln in done.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
    return lines[:n]


def py_spy_top(path: Path, n: int = 15) -> list[str]:
    """Top functions by self samples, and by inclusive samples, from py-spy's collapsed stacks."""
    if not path.exists():
        return []
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        total += int(count)
        own[frames[-1]] += int(count)
        for f in set(frames[1:]):
            inclusive[f] += int(count)
    head = [f"{total} samples (all threads, idle excluded)"]
    head += [f"self {c / total:5.1%}  {f}" for f, c in own.most_common(n)]
    head += [f"incl {c / total:5.1%}  {f}" for f, c in inclusive.most_common(n)]
    return head


def run_variant(server: Server, name: str, fake: Any, args: argparse.Namespace, sample: bool) -> Result:
    """One backfill.run of variant ``name`` on a fresh copy of the template, measured."""
    url = server.create(f"prof_{name}", "prof_tmpl")
    reset_statements(url)
    postmaster = int((server.pg.datadir / "postmaster.pid").read_text().split()[0])
    out = Path(f"/tmp/profile_patch/{name}")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    sampler = Sampler(url, fake.proc.pid, args.perf and sample, args.py_spy and sample, out)
    with measure_writes(url) as w, VARIANTS[name](), sampler:
        cpu0 = (time.process_time(), server_cpu(postmaster), _proc_cpu(fake.proc.pid))
        s, _, capped = run_backfill(url, fake, cap_s=args.cap_s)
        time.sleep(0.5)  # the run's backend has exited: reaped, its CPU is the postmaster's cutime
        cpu1 = (time.process_time(), server_cpu(postmaster), _proc_cpu(fake.proc.pid))
        stats = statement_stats(url)  # in the variant: its statements' texts are the ones to match
    server.drop(f"prof_{name}")
    result = Result(
        rows_per_s=s.examined / s.elapsed_s,
        examined=s.examined,
        enriched=s.enriched,
        elapsed_s=s.elapsed_s,
        wal_per_enriched=w.wal_bytes / max(s.enriched, 1),
        fpi_per_enriched=w.fpi / max(s.enriched, 1),
        growth_per_enriched=w.growth_bytes / max(s.enriched, 1),
        hot=w.hot,
        cpu=dict(zip(("client", "server", "fake"), (b - a for a, b in zip(cpu0, cpu1, strict=True)), strict=True)),
        statements=stats,
        perf=perf_top(out / "perf.data"),
        py_spy={who: py_spy_top(out / f"{who}.txt") for who in ("client", "fake")},
    )
    say(f"{name}: {result.rows_per_s:,.0f} rows/s ({s.examined:,} rows{', capped' if capped else ''})")
    return result


def explain(server: Server, name: str) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS, WAL) of variant ``name``'s patch of the walk's first 100 rows, on a copy."""
    url = server.create(f"prof_explain_{name}", "prof_tmpl")
    try:
        with VARIANTS[name](), psycopg.connect(url) as conn:
            first = conn.execute("SELECT id, run_id FROM runs ORDER BY run_date, id LIMIT %s", (BATCH,)).fetchall()
            patch = [{"id": i, "records": synthetic.feedback_for_run(r)} for i, r in first]
            patch = [p for p in patch if p["records"]]
            if conn.execute(QUERIES["toast_compression"]).fetchone()[0]:  # type: ignore[index]
                conn.execute(QUERIES["toast_lz4"])
            params = {"patch": Jsonb(patch), "ids": [p["id"] for p in patch]}
            plan = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, WAL) {QUERIES['patch_batch']}", params).fetchall()
            conn.rollback()
    finally:
        server.drop(f"prof_explain_{name}")
    return (
        [f"EXPLAIN (ANALYZE, BUFFERS, WAL) of patch_batch, {name}, {len(patch)} rows, rolled back:", "", "```"]
        + [r[0] for r in plan]
        + ["```", ""]
    )


def build(server: Server, rows: int, archive: str) -> None:
    """The figure-2 archive (``big``), or figure 1's (``api``: 2 KB documents, 1.2 records per run)."""
    say(f"building the figure-{'2' if archive == 'big' else '1'} archive: {rows:,} runs")
    url = server.create("prof_tmpl")
    if archive == "big":
        build_documents(url, rows, (2000, 40000), "big")
    else:
        build_documents(url, rows, (2000, 2000), "api", dense_feedback)
    migrate.upgrade(Database(url))
    vacuum(url)
    with psycopg.connect(url) as conn:
        size = one(conn, "SELECT pg_total_relation_size('runs'), avg(pg_column_size(data))::bigint FROM runs")
    say(f"built: runs {size[0] / 2**20:,.0f} MB with its indexes, {size[1] / 1024:.1f} KB stored per document")


def render(name: str, runs: list[Result]) -> list[str]:
    """Medians of a variant's runs; the per-statement figures and the samples of its first run."""
    med = statistics.median
    first = runs[0]
    batches = -(-first.examined // BATCH)
    lines = [
        f"### {name}",
        "",
        f"- window rows/s: {med(r.rows_per_s for r in runs):,.0f} (runs: "
        + ", ".join(f"{r.rows_per_s:,.0f}" for r in runs)
        + f"; {first.examined:,} rows, {first.enriched:,} enriched)",
        f"- per enriched row: WAL {med(r.wal_per_enriched for r in runs):,.0f} B,"
        f" FPI {med(r.fpi_per_enriched for r in runs):.2f}, growth {med(r.growth_per_enriched for r in runs):,.0f} B;"
        f" HOT updates {first.hot}",
        "- CPU ms per batch of 100: "
        + ", ".join(f"{k} {med(r.cpu[k] for r in runs) / batches * 1000:.1f}" for k in first.cpu)
        + f"; wall {med(r.elapsed_s for r in runs) / batches * 1000:.1f}",
        "",
        "| statement | calls | ms per call | ms per batch | WAL B per call | FPI per call | blocks dirtied per call |",
        "|---|---|---|---|---|---|---|",
    ]
    for stmt, s in sorted(first.statements.items(), key=lambda kv: -kv[1]["ms"]):
        c = max(s["calls"], 1)
        lines.append(
            f"| {stmt} | {s['calls']:,.0f} | {s['ms'] / c:.2f} | {s['ms'] / batches:.2f} | {s['wal'] / c:,.0f} |"
            f" {s['fpi'] / c:.1f} | {s['dirtied'] / c:.1f} |"
        )
    if first.perf:
        lines += ["", "perf, the backend (self time):", "", "```", *first.perf, "```"]
    for who, top in first.py_spy.items():
        if top:
            lines += ["", f"py-spy, the {who}:", "", "```", *top, "```"]
    return lines + [""]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_patch", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--variants", default="shipped,before", help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each variant, alternating")
    parser.add_argument(
        "--archive", choices=("big", "api"), default="big", help="figure 2's (default) or figure 1's archive"
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="the fake's latency per request")
    parser.add_argument("--cap-s", type=float, default=300.0)
    parser.add_argument("--perf", action="store_true", help="perf record the backend (first run of each variant)")
    parser.add_argument("--py-spy", action="store_true", help="py-spy the client and the fake (first run)")
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s): {', '.join(unknown)}")
    server = Server()
    results: dict[str, list[Result]] = {n: [] for n in names}
    plans: list[str] = []
    try:
        build(server, args.rows, args.archive)
        for name in names:
            plans += explain(server, name)
        with fake_langsmith(args.latency_ms, "synthetic" if args.archive == "big" else "dense") as fake:
            for i in range(args.repeat):
                for name in names if i % 2 == 0 else reversed(names):
                    results[name].append(run_variant(server, name, fake, args, sample=i == 0))
    finally:
        server.stop()
    print(
        f"## Profile of the patch: {args.rows:,} rows, figure-{'2' if args.archive == 'big' else '1'} archive,"
        f" {args.latency_ms:g} ms per request (`python -m bench.profile_patch`)\n"
    )
    for name in names:
        print("\n".join(render(name, results[name])))
    print("\n".join(plans))
    return 0


if __name__ == "__main__":
    sys.exit(main())
