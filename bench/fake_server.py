"""The project's fake LangSmith in its own process, for the benchmarks.

    python -m bench.fake_server --latency-ms 20 [--feedback sparse|dense]    # from the project root

Prints its URL on the first stdout line, then answers commands read from stdin, one a line:
``count`` prints how many GET /feedback requests it has received (the benchmarks' request
counts come from the server, not from the client they measure); ``quit`` stops it.

A separate process so that the server's threads do not share the client's GIL: the client
under test must not pay for the server.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
from typing import Any

from backfill.sandbox import synthetic
from backfill.sandbox.fake_langsmith import FakeLangSmith

API_KEY = "bench-not-a-secret"


def sparse_feedback(run_id: str) -> list[dict[str, Any]]:
    """Feedback for about 1 run in 20 (the memory benchmark's "no feedback for most")."""
    if hashlib.sha256(("sparse:" + run_id).encode()).digest()[0] >= 13:  # 13/256 ~ 5 %
        return []
    for salt in range(64):  # the synthetic records of a related id, made this run's
        records = synthetic.feedback_for_run(f"{run_id}:{salt}")
        if records:
            return [{**r, "run_id": run_id, "trace_id": run_id} for r in records]
    return []


def dense_feedback(run_id: str) -> list[dict[str, Any]]:
    """0-3 records per run, 1.2 on average (issue 14's archive carries 1.17): batches of 100
    runs hold more than a page, the case that packing requests by feedback_stats is for."""
    count = random.Random("dense:" + run_id).choices([0, 1, 2, 3], weights=[30, 30, 30, 10])[0]
    records: list[dict[str, Any]] = []
    for salt in range(256):  # synthetic records of related ids, made this run's
        for r in synthetic.feedback_for_run(f"{run_id}:{salt}"):
            if len(records) < count:
                n = len(records)
                records.append({**r, "id": f"{r['id'][:-3]}{n:03d}", "run_id": run_id, "trace_id": run_id})
        if len(records) >= count:
            break
    return records


FEEDBACK = {"synthetic": synthetic.feedback_for_run, "sparse": sparse_feedback, "dense": dense_feedback}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--feedback", choices=tuple(FEEDBACK), default="synthetic")
    args = parser.parse_args()
    feedback = FEEDBACK[args.feedback]
    fake = FakeLangSmith(API_KEY, feedback=feedback, latency_s=args.latency_ms / 1000).start()
    print(fake.url, flush=True)
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "count":
                print(len(fake.feedback_requests()), flush=True)
            elif command == "quit":
                break
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
