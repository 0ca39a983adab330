"""Issue 24, item 1: the project strategy's apply with every row walked and checkpointed, and with the
rows its listing proves empty settled by the day's mark instead, side by side on one archive.

    python -m bench.settled_apply                  # 10,000 traces (100 k runs)
    python -m bench.settled_apply --traces 2000    # 20 k runs

One trace-shaped archive (bench.fig_strategy's: 5 % of the runs reviewed, 14 days, two
projects), one template, each variant on its own copy, in turns (``--rounds``), against the
fake LangSmith in its own process, at --delay-ms 0. "walk every row" is the same code with
the listing kept from the walk (``archive.reader.walk`` without ``listing``: walk_settled and
walk_batch, every row lacking records read and checkpointed), which is what the apply did
before. Measured per variant: the apply's wall time (``Invocation.apply`` of the listed
projects), the time the main thread spent in the database during it (every named query
and commit of the gateway, round trips included), the checkpoint rows written, and the
tables compared (md5 over every row).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

import psycopg

import backfill
from backfill.archive import gateway
from backfill.config import Database, LangSmith, Window
from backfill.runner import invocation
from bench.fig_strategy import KEY, build, fake
from bench.harness import Server, say

VARIANTS = ("walk every row", "settle proven rows")
TABLE = "SELECT md5(string_agg(id || ':' || data::text, ',' ORDER BY id)) FROM runs"


class Clock:
    """Time in the apply, and the main thread's time in the gateway during it."""

    def __init__(self) -> None:
        self.apply_s = self.db_s = 0.0
        self.inside = False

    @contextlib.contextmanager
    def timing(self, variant: str) -> Iterator[None]:
        real_apply = invocation.Invocation.apply
        real_walk = invocation.walk
        # ``one`` runs ``execute``; a write transaction's COMMIT is the exit of ``transaction``
        calls = {name: getattr(gateway.Gateway, name) for name in ("execute", "rowcount", "commit")}
        real_transaction = gateway.Gateway.transaction
        clock = self

        def apply(self: invocation.Invocation, options: Any, listing: Any) -> bool:
            if listing is None:
                return real_apply(self, options, listing)
            started, clock.inside = time.perf_counter(), True
            try:
                return real_apply(self, options, listing)
            finally:
                clock.inside = False
                clock.apply_s += time.perf_counter() - started

        def walk(gw: Any, options: Any, since: Any = None, settling: Any = None, listing: Any = None) -> Any:
            return real_walk(gw, options, since, settling, listing if variant == VARIANTS[1] else None)

        def timed(real: Any) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                if not clock.inside:
                    return real(*args, **kwargs)
                started = time.perf_counter()
                try:
                    return real(*args, **kwargs)
                finally:
                    clock.db_s += time.perf_counter() - started

            return call

        @contextlib.contextmanager
        def transaction(gw: gateway.Gateway) -> Iterator[None]:
            cm = real_transaction(gw)
            started = time.perf_counter()
            cm.__enter__()
            clock.db_s += (time.perf_counter() - started) if clock.inside else 0.0
            try:
                yield
            except BaseException:
                if not cm.__exit__(*sys.exc_info()):
                    raise
            else:
                started = time.perf_counter()
                cm.__exit__(None, None, None)
                clock.db_s += (time.perf_counter() - started) if clock.inside else 0.0

        invocation.Invocation.apply = apply  # type: ignore[method-assign]
        gateway.Gateway.transaction = transaction  # type: ignore[method-assign,assignment]
        invocation.walk = walk  # type: ignore[assignment]
        for name, real in calls.items():
            setattr(gateway.Gateway, name, timed(real))
        try:
            yield
        finally:
            invocation.Invocation.apply = real_apply  # type: ignore[method-assign]
            invocation.walk = real_walk
            gateway.Gateway.transaction = real_transaction  # type: ignore[method-assign]
            for name, real in calls.items():
                setattr(gateway.Gateway, name, real)


def measure(server: Server, template: str, url: str, variant: str, n: int) -> dict[str, Any]:
    name = f"{template}_{n}"
    db_url = server.create(name, template)
    clock = Clock()
    with clock.timing(variant):
        summary = backfill.run(
            Database(db_url),
            LangSmith(api_key=KEY, endpoint=url, timeout_s=60),
            backfill.RunOptions(window=Window.parse("14d"), delay_ms=0, strategy="project"),
        )
    if summary.exit_code != 0 or summary.strategy != "project":
        raise RuntimeError(f"{variant}: exit {summary.exit_code}, {summary.strategy}: {summary.lines()}")
    with psycopg.connect(db_url) as conn:
        digest = conn.execute(TABLE).fetchone()
        written = conn.execute("SELECT count(*) FROM feedback_backfill_status").fetchone()
    server.drop(name)
    return {
        "apply_s": clock.apply_s,
        "db_s": clock.db_s,
        "checkpoint_rows": written[0] if written else 0,
        "examined": summary.examined,
        "settled": summary.settled,
        "enriched": summary.enriched,
        "digest": digest[0] if digest else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.settled_apply", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--traces", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each variant, in turns")
    args = parser.parse_args()
    server = Server()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    template = f"settled_{args.traces}"
    try:
        say(f"building the trace archive: {args.traces:,} traces")
        built = build(server, template, args.traces, now, 0.5)
        proc, url = fake(args.traces, now, 0.5)
        try:
            results: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
            for n in range(args.rounds):
                for variant in VARIANTS if n % 2 == 0 else reversed(VARIANTS):
                    say(f"  round {n + 1}: {variant}")
                    results[variant].append(measure(server, template, url, variant, n))
        finally:
            proc.terminate()
            proc.wait(30)
        server.drop(template)
        digests = {r["digest"] for rs in results.values() for r in rs}
        lines = [
            f"PostgreSQL {server.version}; `python -m bench.settled_apply --traces {args.traces}"
            f" --rounds {args.rounds}`: {built['rows']:,} runs, {built['reviewed']:,} reviewed;"
            f" every table identical: {'yes' if len(digests) == 1 else 'NO'}",
            "",
            "| the apply | wall (median) | in the database (median) | checkpoint rows | examined (settled) |",
            "|---|---|---|---|---|",
        ]
        for variant, rs in results.items():
            r = rs[0]
            lines.append(
                f"| {variant} | {statistics.median(x['apply_s'] for x in rs):.2f} s"
                f" | {statistics.median(x['db_s'] for x in rs):.2f} s | {r['checkpoint_rows']:,}"
                f" | {r['examined']:,} ({r['settled']:,}) |"
            )
        print("\n".join(lines))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
