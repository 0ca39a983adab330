"""``python -m backfill.sandbox.fake_langsmith``: serve the fake in the foreground (the demo runs it so)."""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import sys
import threading
from typing import Any

from backfill.sandbox import traces
from backfill.sandbox.fake_langsmith import __doc__ as package_doc
from backfill.sandbox.fake_langsmith.server import FakeLangSmith


def main(argv: list[str] | None = None) -> int:
    """Serve in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m backfill.sandbox.fake_langsmith", description=(package_doc or "").splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--api-key", default="fake-key")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--outage", type=float, metavar="S", help="an incident: S seconds of --outage-status answers")
    parser.add_argument("--outage-requests", type=int, metavar="N", help="an incident of N requests instead")
    parser.add_argument("--outage-status", type=int, default=500, help="the incident's status (500, 502, 503)")
    parser.add_argument("--rate-limit-window", type=float, metavar="S", help="S seconds of 429 without Retry-After")
    parser.add_argument("--retry-after", metavar="V", help="send this Retry-After with the window's 429s")
    parser.add_argument(
        "--fault-after", type=int, default=0, metavar="N", help="the windows start after the first N requests"
    )
    parser.add_argument("--ignore-offset", action="store_true", help="serve the first page whatever offset says")
    parser.add_argument("--max-ids", type=int, metavar="N", help="414 to requests naming more than N runs")
    parser.add_argument(
        "--listing-misses", type=int, metavar="K", help="project listings silently omit every K-th record"
    )
    _trace_options(parser.add_argument_group("a trace-shaped archive (backfill.sandbox.traces), listed by project"))
    args = parser.parse_args(argv)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    feedback = {} if args.traces is None else {"feedback": traces.trace_feedback(args.seed, args.reviewed)}
    fake = FakeLangSmith(args.api_key, latency_s=args.latency_ms / 1000, host=args.host, port=args.port, **feedback)
    if args.traces is not None:
        fake.add_runs(r.info for r in traces.trace_archive(**_archive_arguments(args)))
    if args.listing_misses is not None:
        fake.listing_misses(args.listing_misses)
    if args.outage is not None or args.outage_requests is not None:
        fake.outage(args.outage, requests=args.outage_requests, status=args.outage_status, after=args.fault_after)
    if args.rate_limit_window is not None:
        fake.rate_limit_window(args.rate_limit_window, retry_after=args.retry_after, after=args.fault_after)
    if args.ignore_offset:
        fake.ignore_offset()
    if args.max_ids is not None:
        fake.max_ids(args.max_ids)
    fake.start()
    print(f"fake LangSmith listening on {fake.url}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


def _trace_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--traces", type=int, metavar="N", help="hold N traces (serve trace_archive(N, ...))")
    group.add_argument("--runs-per-trace", type=int, default=10, metavar="R")
    group.add_argument("--projects", default="proj-a,proj-b", help="comma-separated project names")
    group.add_argument("--days", type=int, default=14)
    group.add_argument("--reviewed", type=float, default=0.5, help="share of roots with feedback")
    group.add_argument("--until", type=dt.date.fromisoformat, metavar="DATE", help="the last day (default today)")
    group.add_argument("--seed", default="traces")
    group.add_argument(
        "--now",
        type=dt.datetime.fromisoformat,
        metavar="ISO",
        help="the archive's clock (runs of today start an hour before it): the one it was built with",
    )


def _archive_arguments(args: argparse.Namespace) -> dict[str, Any]:
    now = args.now if args.now is None or args.now.tzinfo else args.now.replace(tzinfo=dt.UTC)
    return {
        "traces": args.traces,
        "runs_per_trace": args.runs_per_trace,
        "projects": tuple(p for p in args.projects.split(",") if p),
        "days": args.days,
        "reviewed": args.reviewed,
        "until": args.until,
        "seed": args.seed,
        "now": now,
    }


if __name__ == "__main__":
    sys.exit(main())
