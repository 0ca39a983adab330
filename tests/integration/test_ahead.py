"""Fetch ahead (backfill/runner/pipeline.py) in a real run: the request of batch N+1 is on the
wire while batch N is written. (tests/unit/test_pipeline.py proves the loop's property alone.)

Shown without timing: the test holds batch 1's checkpoint write on a table lock (as
test_crash's kill_in_the_write does) and releases it only from inside the fake's handler
of request 2. A runner that fetched only after writing could never send request 2 while
batch 1 was held: the lock would be released by the watchdog instead, and the test fails.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg

import backfill
from backfill.config import Database, LangSmith, Window
from backfill.domain.options import RunOptions
from backfill.sandbox import synthetic
from backfill.sandbox.fake_langsmith import FakeLangSmith

from ..helpers import expected_records, rows, seed, status

KEY = "lsv2_test_key_0123456789"
#: The watchdog releases the lock after this long: then request 2 never came while batch 1 was held.
WATCHDOG_S = 30.0
#: Requests before batch 1's: the run's pre-flight probe (runner.preflight).
PROBE = 1


class HoldFirstWrite:
    """The fake's data source: batch 1's request takes a SHARE lock on the checkpoint table (batch
    1's write will wait on it); batch 2's looks whether batch 1 is committed, then releases the lock."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.fake: FakeLangSmith | None = None
        self.blocker: psycopg.Connection[Any] | None = None
        self.lock = threading.Lock()
        self.checkpointed_when_request_2_arrived: int | None = None
        self.released_by_watchdog = False
        self.watchdog = threading.Timer(WATCHDOG_S, self.timeout)

    def __call__(self, run_id: str) -> list[dict[str, Any]]:
        assert self.fake is not None
        with self.lock:
            answered = len(self.fake.feedback_requests())
            if answered == PROBE and self.blocker is None:
                self.blocker = psycopg.connect(self.dsn)
                self.blocker.execute("LOCK TABLE feedback_backfill_status IN SHARE MODE")
                self.watchdog.start()
            elif answered == PROBE + 1 and self.checkpointed_when_request_2_arrived is None:
                self.checkpointed_when_request_2_arrived = len(status(self.dsn))
                self.release()
        return synthetic.feedback_for_run(run_id)

    def release(self) -> None:
        if self.blocker is not None and not self.blocker.closed:
            self.blocker.rollback()
            self.blocker.close()

    def timeout(self) -> None:
        with self.lock:
            self.released_by_watchdog = True
            self.release()


def test_the_next_request_is_on_the_wire_while_the_batch_before_it_is_written(dsn):
    ids = seed(dsn, 30, days=1)
    source = HoldFirstWrite(dsn)
    with FakeLangSmith(api_key=KEY, feedback=source) as fake:
        source.fake = fake
        try:
            summary = backfill.run(
                Database(dsn),
                LangSmith(api_key=KEY, endpoint=fake.url, timeout_s=60.0),
                RunOptions(window=Window.parse("14d"), delay_ms=0, batch_size=10),
            )
        finally:
            source.watchdog.cancel()
            source.release()
        assert not source.released_by_watchdog, "request 2 was not sent while batch 1's write was held"
        assert source.checkpointed_when_request_2_arrived == 0  # batch 1 was fetched, not yet written
        assert summary.exit_code == 0 and summary.examined == 30
        assert len(fake.feedback_requests()) == PROBE + 3 == summary.api_requests
    stored = rows(dsn)
    assert all(stored[r].get("feedback_records") == (expected_records(r) or None) for r in ids)
    assert len(status(dsn)) == 30
