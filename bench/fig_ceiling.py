"""Figure 2, the database ceiling: backfill.run vs the per-run design at zero API latency, 2-40 KB documents.

The same runs give figure 5 (WAL and table growth per enriched row, rows updated), figure 3's
"next invocation over a backfilled archive" and figure 6's migration of this archive. A
what-if with PROPOSED_STATISTICS and a small archive complete figure 2.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

import backfill
from backfill.config import Database
from backfill.operations import migrate
from backfill.sandbox import synthetic
from backfill.sql import QUERIES
from bench.builders import build_documents, vacuum
from bench.fake_server import API_KEY
from bench.fig_walk import next_invocation
from bench.harness import BATCH, DAYS, SINCE, Server, fake_langsmith, one, run_backfill, say
from bench.measures import Writes, measure_writes, reset_statements, statement_times, timed_migration
from bench.per_run import PerRunResult, langsmith_fetch, run_per_run
from bench.report import Results, verdict

# The fix proposed for the plans of walk_batch and patch_batch (docs/benchmarks.md): without
# statistics on these expressions the planner takes the pending predicate to select 0.5 %
# of the rows, whatever the truth. A database-side change; the package is not touched.
PROPOSED_STATISTICS = (
    "CREATE STATISTICS IF NOT EXISTS runs_feedback_pending_stx"
    " ON (COALESCE(jsonb_typeof(data -> 'feedback_records'), 'null')), (jsonb_typeof(data)) FROM runs"
)

#: The queries whose pg_stat_statements times break a batch down.
BREAKDOWN = ["walk_batch", "lock_rows", "patch_batch", "checkpoint", "count_invocation"]


@dataclass
class Ceiling:
    """What the contenders did on the figure-2 archive."""

    ours: backfill.RunSummary
    ours_capped: bool
    ours_writes: Writes
    ours_times: dict[str, tuple[int, float]]
    next_run: tuple[float, float, int]  # next_invocation over the backfilled archive
    stx: backfill.RunSummary
    stx_capped: bool
    stx_times: dict[str, tuple[int, float]]
    base: PerRunResult
    base_writes: Writes
    db_only: PerRunResult


def figure_ceiling(
    server: Server, size: dict[str, Any], res: Results, migrations: list[tuple[str, dict[str, float]]]
) -> None:
    rows = size["ceiling_rows"]
    url = _build_archive(server, rows, res, migrations)
    res.details.append(explain_patch(url))
    c = _contenders(server, size, rows)
    _add_rates(res, size, c)
    _add_breakdown(res, c)
    res.add(
        "3 walk",
        f"next invocation over the figure-2 archive once backfilled ({rows:,} rows of 2-40 KB, "
        f"{c.ours.no_feedback:,} no_feedback, {c.next_run[2]} pending): first walk_batch ms; count_pending ms",
        f"{c.next_run[1] * 1000:,.0f}; {c.next_run[0] * 1000:,.0f}",
        "",
        "",
        "",
        "",
    )
    _add_writes(res, c)
    for name in ("big_base", "big_tmpl"):
        server.drop(name)


def _build_archive(server: Server, rows: int, res: Results, migrations: list[tuple[str, dict[str, float]]]) -> str:
    """The template database big_tmpl, migrated; its migration timed on a copy with a concurrent writer."""
    say(f"figure 2: building {rows:,} runs, documents 2-40 KB")
    t = time.perf_counter()
    url = server.create("big_tmpl")
    build_documents(url, rows, (2000, 40000), "big")
    vacuum(url)
    with psycopg.connect(url) as conn:
        size_row = one(
            conn,
            "SELECT pg_total_relation_size('runs'), avg(octet_length(data::text))::bigint,"
            " avg(pg_column_size(data))::bigint FROM runs",
        )
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
    return url


def _contenders(server: Server, size: dict[str, Any], rows: int) -> Ceiling:
    """backfill.run as shipped and with the proposed statistics, then the per-run design, each on a copy."""
    with fake_langsmith(0) as fake:
        say("figure 2: backfill.run, zero latency, no delay")
        ours_url = server.create("big_ours", "big_tmpl")
        reset_statements(ours_url)
        with measure_writes(ours_url) as ours_w:
            s, _, capped = run_backfill(ours_url, fake, cap_s=size["cap_s"])
        times = statement_times(ours_url, BREAKDOWN)
        say("figure 3: the next invocation over the archive just backfilled")
        vacuum(ours_url)
        next_run = next_invocation(ours_url)
        server.drop("big_ours")
        say("figure 2: backfill.run again, with the proposed expression statistics (database side only)")
        stx_url = server.create("big_stx", "big_tmpl")
        with_statistics(stx_url)
        reset_statements(stx_url)
        s_stx, _, capped_stx = run_backfill(stx_url, fake, cap_s=size["cap_s"])
        times_stx = statement_times(stx_url, BREAKDOWN)
        server.drop("big_stx")
        per_day = rows // DAYS
        day0, day1, day2 = SINCE, SINCE + dt.timedelta(days=1), SINCE + dt.timedelta(days=2)
        base_url = server.create("big_base", "big_tmpl")
        say(f"figure 2: per-run design, zero latency, {per_day:,} rows (one run_date)")
        with measure_writes(base_url) as base_w:
            base = run_per_run(base_url, langsmith_fetch(fake.url, API_KEY), day0, day1, per_day)
        say(f"figure 2: per-row UPDATE + commit without API, {per_day:,} rows (the next run_date)")
        db_only = run_per_run(base_url, synthetic.feedback_for_run, day1, day2, per_day)
    return Ceiling(s, capped, ours_w, times, next_run, s_stx, capped_stx, times_stx, base, base_w, db_only)


def with_statistics(url: str) -> None:
    """PROPOSED_STATISTICS on ``runs``, analyzed."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PROPOSED_STATISTICS)
        conn.execute("ANALYZE runs")


def _add_rates(res: Results, size: dict[str, Any], c: Ceiling) -> None:
    s, base = c.ours, c.base
    ours_rate = s.examined / s.elapsed_s
    ratio = ours_rate / base.rows_per_s
    cap = f", stopped at the {size['cap_s']} s cap" if c.ours_capped else ""
    res.add(
        "2 DB ceiling",
        f"window rows/s, zero latency ({s.examined:,}{cap} vs {base.rows:,} rows)",
        f"{ours_rate:,.0f}",
        f"{base.rows_per_s:,.0f}",
        f"{ratio:.1f}x",
        "≥ 3,300; ≥ 5x",
        verdict(ours_rate >= 3300 and ratio >= 5),
    )
    res.add(
        "2 DB ceiling",
        "  same, baseline without any API call (per-row UPDATE + commit alone)",
        "",
        f"{c.db_only.rows_per_s:,.0f}",
        f"{ours_rate / c.db_only.rows_per_s:.1f}x",
        "",
        "",
    )
    stx_rate = c.stx.examined / c.stx.elapsed_s
    cap = f", stopped at the {size['cap_s']} s cap" if c.stx_capped else ""
    res.add(
        "2 DB ceiling",
        f"  what-if: backfill.run with the proposed CREATE STATISTICS ({c.stx.examined:,} rows{cap})",
        f"{stx_rate:,.0f}",
        f"{base.rows_per_s:,.0f}",
        f"{stx_rate / base.rows_per_s:.1f}x",
        "≥ 3,300; ≥ 5x",
        verdict(stx_rate >= 3300 and stx_rate / base.rows_per_s >= 5),
    )


def _add_breakdown(res: Results, c: Ceiling) -> None:
    """Where a batch's time goes: pg_stat_statements per query, the rest outside the database."""
    for label, summary, found in (
        ("as shipped", c.ours, c.ours_times),
        ("with the proposed statistics", c.stx, c.stx_times),
    ):
        batches = -(-summary.examined // BATCH)
        db_ms = sum(t for _, t in found.values()) / batches
        per_batch = summary.elapsed_s / batches * 1000
        res.details.append(
            f"Figure 2, where a batch of backfill.run goes, {label} ({batches:,} batches of {BATCH}, "
            f"{per_batch:.1f} ms each; mean ms per call from pg_stat_statements): "
            + ", ".join(f"{n} {t / max(k, 1):.2f}" for n, (k, t) in sorted(found.items(), key=lambda kv: -kv[1][1]))
            + f"; database {db_ms:.1f} ms per batch,"
            f" the rest (API round trip, JSON, Python) {per_batch - db_ms:.1f} ms."
        )


def _add_writes(res: Results, c: Ceiling) -> None:
    """Figure 5, from the same two runs: what each design wrote per enriched row."""
    s, ours_w, base, base_w = c.ours, c.ours_writes, c.base, c.base_writes
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


def explain_patch(url: str) -> str:
    """EXPLAIN (ANALYZE, BUFFERS, WAL) of patch_batch for the first batch of the walk, rolled back."""
    with psycopg.connect(url) as conn:
        first = conn.execute("SELECT id, run_id FROM runs ORDER BY run_date, id LIMIT %s", (BATCH,)).fetchall()
        patch = [{"id": i, "records": synthetic.feedback_for_run(r)} for i, r in first if synthetic.feedback_for_run(r)]
        try:
            if conn.execute(QUERIES["toast_compression"]).fetchone()[0]:  # type: ignore[index]
                conn.execute(QUERIES["toast_lz4"])  # as the package's transactions do (db.connect)
            params = {"patch": Jsonb(patch), "ids": [p["id"] for p in patch]}
            plan = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, WAL) {QUERIES['patch_batch']}", params).fetchall()
            text = "\n".join(r[0] for r in plan)
        except psycopg.Error as exc:
            text = f"(not run: {exc})"
        conn.rollback()
    head = f"EXPLAIN (ANALYZE, BUFFERS, WAL) of patch_batch, first batch ({len(patch)} runs with feedback), rolled back"
    return f"{head}:\n\n```\n{text}\n```"


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
                with_statistics(db_url)
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
