"""Figure 1, API efficiency: backfill.run vs the spec's per-run design at 20 and 100 ms per request.

Both read the same 2 KB documents of runs carrying 1.2 feedback records on average
(fake_server.dense_feedback); requests are counted by the fake. Requests are also set against
their lower bound max(⌈runs/100⌉, ⌈records/100⌉) with feedback_stats accurate, all zero and
overstated, beside what fixed batches of 100 runs cost (main before issue 14: one request
per full page of a batch, plus its last, short one), computed from the same records. The rate at the spec's
--delay-ms 1000 is computed from the 100 ms run, not waited for.
"""

from __future__ import annotations

from typing import Any

from backfill.config import Database
from backfill.domain.packing import lower_bound
from backfill.operations import migrate
from backfill.sandbox import synthetic
from bench.builders import build_documents, vacuum
from bench.fake_server import API_KEY, dense_feedback
from bench.harness import BATCH, SINCE, SPEC_DELAY_S, UNTIL, Server, fake_langsmith, run_backfill, say
from bench.per_run import langsmith_fetch, run_per_run
from bench.report import Results, verdict

#: What the 100 ms run tells about a batch: (latency ms, requests per batch, non-API overhead s
#: per batch, rows per batch, the per-run design's requests per row and overhead s per row, the
#: rows per request at the lower bound).
Projection = tuple[int, float, float, float, float, float, float]


def figure_api(server: Server, size: dict[str, Any], res: Results) -> None:
    rows = size["api_rows"]
    say(f"figure 1: building {rows} runs (2 KB documents)")
    build_documents(server.create("api_tmpl"), rows, (2000, 2000), "api", dense_feedback)
    migrate.upgrade(Database(server.url("api_tmpl")))
    vacuum(server.url("api_tmpl"))
    for stats in ("accurate", "zero", "overstated"):
        _packing(server, rows, res, stats)
    projection = None
    for latency in (20, 100):
        projection = _at_latency(server, size, res, latency)
    assert projection is not None
    _at_spec_delay(res, projection)
    server.drop("api_ours")
    server.drop("api_base")
    server.drop("api_tmpl")


def _packing(server: Server, rows: int, res: Results, stats: str) -> None:
    """Requests against the lower bound and against fixed batches, feedback_stats ``stats``, at 0 ms."""
    template = "api_tmpl"
    if stats != "accurate":
        template = f"api_{stats}"
        say(f"figure 1: building {rows} runs, feedback_stats {stats}")
        build_documents(server.create(template), rows, (2000, 2000), "api", dense_feedback, stats)
        migrate.upgrade(Database(server.url(template)))
        vacuum(server.url(template))
    counts = [len(dense_feedback(synthetic.run_id_for(i, "api"))) for i in range(rows)]  # walk order
    fixed = sum(sum(counts[i : i + BATCH]) // 100 + 1 for i in range(0, rows, BATCH))
    with fake_langsmith(0, "dense") as fake:
        say(f"figure 1: backfill.run, {rows} rows, feedback_stats {stats}")
        s, requests, _ = run_backfill(server.create("api_ours", template), fake, allow_failures=stats == "overstated")
    bound = lower_bound(rows, sum(counts))
    accurate = stats == "accurate"
    res.add(
        "1 API",
        f"requests, feedback_stats {stats} ({rows} runs, {sum(counts)} records; lower bound {bound},"
        f" summary's {s.lower_bound}; fixed batches of 100: {fixed})",
        f"{requests}",
        f"{fixed}",
        f"{requests / bound:.2f}x bound",
        "≤ 1.15x bound" if accurate else "≤ fixed batches",
        verdict(requests <= 1.15 * bound if accurate else requests <= fixed),
    )
    if not accurate:
        server.drop(template)


def _at_latency(server: Server, size: dict[str, Any], res: Results, latency: int) -> Projection:
    """Both designs at ``latency`` ms per request: two rows of the table, and what a batch cost."""
    rows = size["api_rows"]
    with fake_langsmith(latency, "dense") as fake:
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
        "≥ 45x" if latency == 20 else "",
        verdict(ratio >= 45) if latency == 20 else "",
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
    at_bound = s.examined / s.lower_bound
    return (latency, requests / batches, overhead, s.examined / batches, base_rpr, base_overhead, at_bound)


def _at_spec_delay(res: Results, projection: Projection) -> None:
    # At --delay-ms 1000 a batch takes max(1 s per request, its requests' time + the rest):
    # computed from the 100 ms run (requests per batch, the non-API overhead per batch).
    latency, req_per_batch, overhead, rows_per_batch, base_rpr, base_overhead, at_bound = projection
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
        # one request per second: the lower bound's rows per request are the ceiling (~83 at 1.2 records/run)
        f"≥ {at_bound / 1.15:.0f} (bound {at_bound:.0f} / 1.15)",
        verdict(rate >= at_bound / 1.15),
    )
