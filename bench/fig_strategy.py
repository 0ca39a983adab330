"""Issue 17: the two fetch strategies side by side on the trace-shaped archive, requests and time.

    python -m bench.fig_strategy                    # 2,000 traces (20 k runs), then 100,000 (1 M)
    python -m bench.fig_strategy --traces 2000      # the 20 k archive only
    python -m bench.fig_strategy --traces 100000 --strategies project --real-pacing   # ~15 min

The archive (backfill.sandbox.traces.trace_archive): traces of 10 runs, feedback on a half of
the roots (5 % of the runs), 14 days, two projects. Each strategy runs `backfill.run` over
its own copy of one template database, at --delay-ms 0, against the fake LangSmith in its
own process (serving the same archive: ``--traces N --now ...``); the request counts are
the run's own (the invocation row's, which tests/integration/test_project_strategy.py checks against
the fake). The time at the spec's --delay-ms 1000 is computed: requests x 1 s is the pacing
floor; adding the run's whole time at zero delay gives a bound that assumes none of the
database work overlaps the pacing (the runs strategy fetches one batch ahead, so it does).
``--real-pacing`` measures it instead: the project strategy once more at --delay-ms 1000,
waited for. "In the database": the server's execution time of every statement of the run
(pg_stat_statements, every connection). All copies end byte for byte identical (checked,
md5 over every row's feedback_records).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psycopg

import backfill
from backfill.config import Database, LangSmith, Window
from backfill.operations import migrate
from backfill.sandbox import app_schema
from backfill.sandbox.traces import copy_archive, trace_archive
from backfill.sql import QUERIES
from bench.harness import ROOT, SPEC_DELAY_S, Server, say
from bench.measures import database_s, reset_statements, statement_times
from bench.report import Results, verdict

KEY = "bench-not-a-secret"
SPEC_DELAY_MS = 1000
STRATEGIES = ("runs", "project")
DIGEST = (
    "SELECT md5(string_agg(run_id || ':' || COALESCE((data -> 'feedback_records')::text, ''), ',' ORDER BY id))"
    " FROM runs"
)


def build(server: Server, name: str, traces: int, now: dt.datetime, reviewed: float) -> dict[str, int]:
    url = server.create(name)
    with psycopg.connect(url) as conn:
        conn.execute(app_schema().encode())
        rows = copy_archive(conn, trace_archive(traces, now=now, reviewed=reviewed))
        conn.execute("ALTER TABLE runs SET (autovacuum_enabled = false)")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE runs")
    migrate.upgrade(Database(url))
    with psycopg.connect(url) as conn:
        promised = conn.execute("SELECT count(*) FROM runs WHERE data @? '$.feedback_stats.* ? (@.n > 0)'").fetchone()
    return {"rows": rows, "reviewed": int(promised[0]) if promised else 0}


def fake(traces: int, now: dt.datetime, reviewed: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "backfill.sandbox.fake_langsmith", "--port", "0", "--api-key", KEY),
            *("--traces", str(traces), "--now", now.isoformat(), "--reviewed", str(reviewed)),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout
    line = proc.stdout.readline().strip()  # "fake LangSmith listening on http://..."
    return proc, line.rsplit(" ", 1)[-1]


@contextlib.contextmanager
def served(server: Server, template: str, traces: int, reviewed: float) -> Iterator[tuple[dict[str, int], str]]:
    """The trace archive built as database ``template`` and served by the fake LangSmith in its
    own process: what ``build`` counted, and the fake's URL; both gone after the block."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    say(f"building the trace archive: {traces:,} traces, {reviewed:.0%} of the roots reviewed")
    built = build(server, template, traces, now, reviewed)
    proc, url = fake(traces, now, reviewed)
    try:
        yield built, url
    finally:
        proc.terminate()
        proc.wait(30)
        server.drop(template)


def measure(server: Server, template: str, url: str, strategy: str, delay_ms: int = 0) -> dict[str, Any]:
    name = f"{template}_{strategy}_{delay_ms}"
    db_url = server.create(name, template)
    reset_statements(db_url)
    started = time.perf_counter()
    summary = backfill.run(
        Database(db_url),
        LangSmith(api_key=KEY, endpoint=url, timeout_s=60),
        backfill.RunOptions(window=Window.parse("14d"), delay_ms=delay_ms, strategy=strategy),
    )
    wall = time.perf_counter() - started
    db_s = database_s(db_url)
    by_query = statement_times(db_url, list(QUERIES))
    if summary.exit_code != 0:
        raise RuntimeError(f"{strategy}: exit {summary.exit_code}: {summary.lines()}")
    with psycopg.connect(db_url) as conn:
        row = conn.execute(DIGEST).fetchone()
        listings = conn.execute(
            "SELECT project, records, requests FROM feedback_backfill_listing ORDER BY id"
        ).fetchall()
    server.drop(name)
    return {
        "strategy": summary.strategy,
        "requests": summary.api_requests,
        "records": summary.records,
        "enriched": summary.enriched,
        "examined": summary.examined,
        "listed": summary.listed_records,
        "outside": summary.listed_outside,
        "wall_s": wall,
        "db_s": db_s,
        "by_query": by_query,
        "digest": row[0] if row else None,
        "choices": summary.choices,
        "listings": [f"{p} {n:,} records in {k:,} requests" for p, n, k in listings],
        "sampled": summary.sampled,
    }


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def figure_strategy(server: Server, size: dict[str, Any], res: Results) -> None:
    """Figure 7 of `python -m bench`: the issue's two targets as rows, each archive's table in the details;
    with ``size["real_pacing"]``, the largest archive's project strategy measured at --delay-ms 1000."""
    largest = max(size["strategy_traces"])
    for traces in size["strategy_traces"]:
        paced = bool(size.get("real_pacing")) and traces == largest
        lines, results, runs = measured(server, traces, 0.5, real_pacing=paced)
        res.details.append("\n".join(["Figure 7 (strategies):", "", *lines]))
        runs_req, project = results["runs"]["requests"], results["project"]
        per_100 = 100 * project["requests"] / runs
        res.add(
            "7 strategy",
            f"requests, trace-shaped archive of {runs:,} runs ({project['records']:,} records), project vs runs",
            f"{project['requests']:,} ({per_100:.2f} per 100 runs)",
            f"{runs_req:,}",
            f"{runs_req / max(1, project['requests']):.1f}x fewer",
            "≤ 0.35 per 100 runs" if runs <= 50_000 else "",
            verdict(per_100 <= 0.35) if runs <= 50_000 else "",
        )
        res.add(
            "7 strategy",
            f"  the project strategy at --delay-ms 0, {runs:,} runs: wall clock; in the database (server time)",
            f"{project['wall_s']:.1f} s; {project['db_s']:.1f} s",
            "",
            "",
            "database ≤ 60 s" if runs >= 1_000_000 else "",
            verdict(project["db_s"] <= 60) if runs >= 1_000_000 else "",
        )
        bound = project["requests"] * SPEC_DELAY_S + project["wall_s"]
        res.add(
            "7 strategy",
            f"  time at --delay-ms 1000 (computed: requests x 1 s + the run at zero delay), {runs:,} runs",
            _duration(bound),
            _duration(runs_req * SPEC_DELAY_S + results["runs"]["wall_s"]),
            f"{(runs_req * SPEC_DELAY_S + results['runs']['wall_s']) / bound:.1f}x",
            "< 15 min" if runs >= 1_000_000 else "",
            verdict(bound < 15 * 60) if runs >= 1_000_000 else "",
        )
        if paced:
            r = results["paced"]
            floor = r["requests"] * SPEC_DELAY_S
            res.add(
                "7 strategy",
                f"  measured at --delay-ms 1000 (waited for), {runs:,} runs: wall clock vs the floor"
                f" ({r['requests']:,} requests x 1 s)",
                _duration(r["wall_s"]),
                _duration(floor),
                f"{r['wall_s'] / floor:.3f}x the floor",
                "≤ 1.05x the floor",
                verdict(r["wall_s"] <= 1.05 * floor),
            )


def measured(
    server: Server,
    traces: int,
    reviewed: float,
    strategies: tuple[str, ...] = STRATEGIES,
    *,
    real_pacing: bool = False,
) -> tuple[list[str], dict[str, dict[str, Any]], int]:
    """The strategies over one trace-shaped archive: the table, each strategy's figures, the runs.
    ``real_pacing``: the project strategy once more at the spec's --delay-ms 1000, waited for."""
    template = f"strategy_{traces}"
    with served(server, template, traces, reviewed) as (built, url):
        results = {}
        for strategy in strategies:
            say(f"  {strategy} on {built['rows']:,} runs")
            results[strategy] = measure(server, template, url, strategy)
        if real_pacing:
            say(f"  project on {built['rows']:,} runs at --delay-ms {SPEC_DELAY_MS} (waited for)")
            results["paced"] = measure(server, template, url, "project", SPEC_DELAY_MS)
    digests = {r["digest"] for r in results.values()}
    runs = built["rows"]
    any_run = next(iter(results.values()))
    out = [
        f"Trace-shaped archive: {runs:,} runs ({traces:,} traces of 10), {built['reviewed']:,} reviewed roots"
        f" ({100 * built['reviewed'] / runs:.1f} % of the runs),"
        f" {any_run['records']:,} records; the tables of every run below identical:"
        f" {'yes' if len(digests) == 1 else 'NO'}",
        "",
        "| strategy | requests | per 100 runs | records listed (outside the window) |"
        " time at --delay-ms 0 | in the database | at --delay-ms 1000: floor | bound |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for strategy, r in results.items():
        if strategy == "paced":
            continue
        floor = r["requests"] * SPEC_DELAY_S
        listed = f"{r['listed']:,} ({r['outside']:,})" if strategy == "project" else "-"
        out.append(
            f"| {strategy} | {r['requests']:,} | {100 * r['requests'] / runs:.2f} | {listed} | {r['wall_s']:.1f} s"
            f" | {r['db_s']:.1f} s | {_duration(floor)} | {_duration(floor + r['wall_s'])} |"
        )
    if "project" in results:
        p = results["project"]
        out += [
            "",
            f"The listings: {'; '.join(p['listings'])}; {p['sampled']} runs sampled. Estimated beforehand: "
            + "; ".join(p["choices"][:1]),
        ]
    if "paced" in results:
        r = results["paced"]
        floor = r["requests"] * SPEC_DELAY_S
        out += [
            "",
            f"Measured at --delay-ms {SPEC_DELAY_MS}, the project strategy: {r['requests']:,} requests, floor"
            f" (requests x 1 s) {_duration(floor)}, wall clock {_duration(r['wall_s'])} ({r['wall_s']:.1f} s):"
            f" {r['wall_s'] / floor:.3f} x the floor; in the database {r['db_s']:.1f} s.",
        ]
    return [*out, ""], results, runs


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fig_strategy", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--traces", type=int, nargs="+", default=[2000, 100_000])
    parser.add_argument("--reviewed", type=float, default=0.5, help="share of the roots with feedback")
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument(
        "--real-pacing", action="store_true", help="the project strategy again at --delay-ms 1000, waited for"
    )
    args = parser.parse_args()
    server = Server()
    started = time.perf_counter()
    try:
        command = " ".join(sys.argv[1:])
        lines = [f"PostgreSQL {server.version}; `python -m bench.fig_strategy {command}`", ""]
        for traces in args.traces:
            lines += measured(server, traces, args.reviewed, tuple(args.strategies), real_pacing=args.real_pacing)[0]
        print("\n".join(lines))
    finally:
        server.stop()
    say(f"done in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
