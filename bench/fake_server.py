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
import functools
import hashlib
import sys
import uuid
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
    runs hold more than a page, the case that packing requests by feedback_stats is for.

    Cheap on purpose (one sha256 per run, records copied from a pool of synthetic ones): the
    fake shares the benchmark's 2 cores with the client it measures, and LangSmith's own
    CPU is not the client's to pay. Generating each run's records afresh cost ~10 ms of CPU
    per request of 100 runs, on the fetch's path and taken from the client and the server.
    """
    digest = hashlib.sha256(("dense:" + run_id).encode()).digest()
    count = _DENSE_COUNTS[int.from_bytes(digest[:4], "big") % len(_DENSE_COUNTS)]
    pool = _dense_pool()
    return [
        {
            **pool[digest[4 + n] % len(pool)],
            "id": str(uuid.UUID(bytes=hashlib.sha256(f"dense:{run_id}:{n}".encode()).digest()[:16], version=4)),
            "run_id": run_id,
            "trace_id": run_id,
        }
        for n in range(count)
    ]


#: weights 30/30/30/10 for 0/1/2/3 records: 1.2 on average
_DENSE_COUNTS = (0, 0, 0, 1, 1, 1, 2, 2, 2, 3)


@functools.cache
def _dense_pool() -> list[dict[str, Any]]:
    """64 synthetic records (GET /feedback shape) that dense_feedback's records are copied from."""
    pool: list[dict[str, Any]] = []
    salt = 0
    while len(pool) < 64:
        pool += synthetic.feedback_for_run(f"dense-pool:{salt}")
        salt += 1
    return pool[:64]


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
