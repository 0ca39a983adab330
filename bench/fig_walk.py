"""Figure 3, walk cost: walk_batch per batch on 100 k vs 1 M rows, 90 % already examined.

Two layouts of the examined rows: marked in the row (feedback_records = []) or left in the
checkpoint as no_feedback (the enriched ones in its ledger). Either way an earlier, complete
run has walked them, and the other 10 % were archived after it (``settled_before``).
``next_invocation`` also measures figure 2's archive once backfilled.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import psycopg

import backfill
from backfill.archive import gateway as db
from backfill.archive.reader import count_pending, walk
from backfill.config import Database, LangSmith, Window
from backfill.operations import migrate
from backfill.sql import QUERIES
from bench.builders import FILL_NO_FEEDBACK, build_small, vacuum
from bench.harness import BATCH, SINCE, UNTIL, Server, say
from bench.report import Results, verdict

WALK_OPTIONS = backfill.RunOptions(window=Window(SINCE, UNTIL), batch_size=BATCH)

#: (count_pending s, per-batch walk_batch times, first batch s, rows) of a whole walk.
Walked = tuple[float, list[float], float, int]
#: A layout's walk, and count_pending's seconds before the newest 10 % were archived.
Layout = tuple[Walked, float]


def walk_all(url: str) -> Walked:
    """(count_pending s, per-batch walk_batch times, first batch s, rows): the runner's own walk."""
    times: list[float] = []
    gw = db.connect(Database(url))
    try:
        t = time.perf_counter()
        count_pending(gw, WALK_OPTIONS)
        count_s = time.perf_counter() - t
        total = 0
        batches = walk(gw, WALK_OPTIONS)
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
        count_pending(gw, WALK_OPTIONS)
        count_s = time.perf_counter() - t
        t = time.perf_counter()
        batch = next(walk(gw, WALK_OPTIONS), [])
        return count_s, time.perf_counter() - t, len(batch)
    finally:
        gw.close()


def settled_before(url: str, examined: int) -> float:
    """The examined rows as an earlier, complete `backfill run` left them, the rest archived after it.

    The rows not yet examined (ids above ``examined``, the newest days) are set aside, a
    real ``backfill.run`` walks the window (it finds nothing to fetch: no request), and the
    rows come back with their ids: what the next invocation meets after a day's archiving.
    Returns count_pending's seconds over the window before they come back: every row settled.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_later AS SELECT * FROM runs WHERE id > %(n)s", {"n": examined})
        conn.execute("DELETE FROM runs WHERE id > %(n)s", {"n": examined})
    vacuum(url, table="")
    # no row to fetch, so no request is sent: the endpoint is never reached
    done = backfill.run(Database(url), LangSmith(api_key="bench", endpoint="http://127.0.0.1:9"), WALK_OPTIONS)
    assert done.examined == 0, done
    gw = db.connect(Database(url))
    try:
        count_pending(gw, WALK_OPTIONS)  # the connection's first statements: warm as in walk_all
        t = time.perf_counter()
        count_pending(gw, WALK_OPTIONS)
        settled_s = time.perf_counter() - t
    finally:
        gw.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO runs SELECT * FROM bench_later")
        conn.execute("DROP TABLE bench_later")
    return settled_s


def explain_walk(url: str) -> str:
    """EXPLAIN of the first day's reads, first batch: walk_settled below its mark (if any), walk_batch above."""
    params = {
        "day": SINCE,
        "projects": None,
        "max_attempts": 3,
        "refetch_since": None,
        "after_id": 0,
        "batch_size": BATCH,
    }
    plans = []
    with psycopg.connect(url, autocommit=True) as conn:
        marked = conn.execute("SELECT to_regclass('feedback_backfill_settled') IS NOT NULL").fetchone()
        mark = (
            marked
            and marked[0]
            and conn.execute("SELECT id_bound FROM feedback_backfill_settled WHERE run_date = %s", (SINCE,)).fetchone()
        )
        params["mark"] = mark[0] if mark else 0
        if mark:
            plans.append(("walk_settled", params))
        plans.append(("walk_batch", {**params, "after_id": params["mark"]}))
        text = []
        for name, p in plans:
            rows = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS) {QUERIES[name]}", p).fetchall()
            text.append(f"-- {name}\n" + "\n".join(r[0] for r in rows))
    return "\n\n".join(text)


def figure_walk(server: Server, size: dict[str, Any], res: Results) -> None:
    small, large = size["walk_rows"]
    found: dict[tuple[str, int], Layout] = {}
    for layout in ("marked", "checkpointed"):
        for rows in (small, large):
            found[(layout, rows)] = _walk_layout(server, res, layout, rows, explain=rows == large)
    for layout, label in (
        ("marked", "90 % enriched (feedback_records = [])"),
        ("checkpointed", "90 % examined: 30 % enriched, 60 % no_feedback in the checkpoint"),
    ):
        _add_rows(res, layout, label, (small, found[(layout, small)]), (large, found[(layout, large)]))


def _walk_layout(server: Server, res: Results, layout: str, rows: int, explain: bool) -> Layout:
    """Build ``rows`` runs, 90 % examined in ``layout``, and walk them all."""
    say(f"figure 3: {rows:,} rows, 90 % examined ({layout})")
    url = server.create("walk")
    build_small(url, rows, examined=rows * 9 // 10, layout=layout, sparse=False)
    migrate.upgrade(Database(url))
    if layout == "checkpointed":
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(FILL_NO_FEEDBACK, {"examined": rows * 9 // 10})
    settled_s = settled_before(url, rows * 9 // 10)
    vacuum(url, table="")  # the steady state: everything analyzed
    walked = walk_all(url)
    if explain:
        res.details.append(
            f"EXPLAIN (ANALYZE, BUFFERS) of walk_batch, first batch, {rows:,} rows, layout {layout}:\n\n```\n"
            f"{explain_walk(url)}\n```"
        )
    server.drop("walk")
    return walked, settled_s


def _add_rows(res: Results, layout: str, label: str, small: tuple[int, Layout], large: tuple[int, Layout]) -> None:
    (n_small, ((c_s, t_s, f_s, _), z_s)), (n_large, ((c_l, t_l, f_l, _), z_l)) = small, large
    med_s, med_l = statistics.median(t_s[1:-1]) * 1000, statistics.median(t_l[1:-1]) * 1000
    res.add(
        "3 walk",
        f"walk_batch ms per batch, median ({label}): {n_small:,} vs {n_large:,} rows",
        f"{med_s:.2f} vs {med_l:.2f}",
        "",
        f"{med_l / med_s:.2f}x",
        "flat",
        verdict(med_l / med_s < 1.5) if layout == "marked" else "",
    )
    res.add(
        "3 walk",
        f"  first walk_batch of an invocation ms ({layout}): {n_small:,} vs {n_large:,} rows",
        f"{f_s * 1000:.1f} vs {f_l * 1000:.1f}",
        "",
        f"{f_l / f_s:.1f}x",
        "≤ 2x",
        verdict(f_l / f_s <= 2),
    )
    res.add(
        "3 walk",
        f"  count_pending ms at start ({layout}): {n_small:,} vs {n_large:,} rows",
        f"{c_s * 1000:.1f} vs {c_l * 1000:.1f}",
        "",
        f"{c_l / c_s:.1f}x",
        "≤ 2x",
        verdict(c_l / c_s <= 2),
    )
    res.add(
        "3 walk",
        f"  count_pending ms, every row settled ({layout}): {n_small:,} vs {n_large:,} rows",
        f"{z_s * 1000:.1f} vs {z_l * 1000:.1f}",
        "",
        f"{z_l / z_s:.1f}x",
        "≤ 2x",
        verdict(z_l / z_s <= 2),
    )
