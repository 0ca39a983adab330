"""kill -9 of a real `backfill run --strategy project` during the listing and during the apply, then resume.

Where the kill lands is read from the database, not left to a sleep: the listing's progress
row (feedback_backfill_listing) says when a slice has been staged and the listing is not
complete; the checkpoint says when the apply phase has written some rows and not all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Any

import psycopg
import pytest

from backfill.sandbox.fake_langsmith import FakeLangSmith
from backfill.sandbox.fake_langsmith.listing import Filters
from backfill.sandbox.traces import TraceRun, trace_feedback

from ..helpers import invocations, seed_traces, status, wait_for
from ..integration.test_project_strategy import KEY, expected, serve, states, stored

pytestmark = pytest.mark.slow


def start(dsn: str, fake: FakeLangSmith, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "LANGSMITH_API_KEY": KEY,
        "LANGSMITH_ENDPOINT": fake.url,
        "LANGSMITH_CONFIG_FILE": os.devnull,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "backfill", "run", "--strategy", "project", "--no-progress", "--timeout", "30", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class HoldSecondSlice(FakeLangSmith):
    """Holds the first listing request of a project's second slice unanswered (``held``) until
    ``release``: a kill -9 meanwhile lands after the first slice was staged, inside the listing.
    ``session``: only that project's listing is held (default: the first listed)."""

    def __init__(self, *args: Any, session: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held, self.release = threading.Event(), threading.Event()
        self._mins: dict[frozenset[str], set[Any]] = {}
        self.session = session

    def _matching(self, filters: Filters) -> list[dict[str, Any]]:
        if filters.listing and filters.sessions and self.session in (None, *filters.sessions):
            mins = self._mins.setdefault(filters.sessions, set())
            mins.add(filters.min_created)
            if len(mins) == 2 and not self.held.is_set():
                self.held.set()
                self.release.wait(30)
        return super()._matching(filters)


def listings(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute("SELECT * FROM feedback_backfill_listing ORDER BY id").fetchall()


def dense(dsn: str) -> list[TraceRun]:
    """5,000 runs, each reviewed (1.2 records on average): 3,000 records a project, two slices each."""
    return seed_traces(dsn, 5000, runs_per_trace=1, reviewed=1.0)


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_kill_9_during_the_listing_resumes_at_the_last_completed_slice_and_is_exact(dsn):
    runs = dense(dsn)
    fake = HoldSecondSlice(api_key=KEY, feedback=trace_feedback(reviewed=1.0))
    fake.add_runs(r.info for r in runs)
    with fake:
        want = expected(fake, runs)
        proc = start(dsn, fake, "--delay-ms", "0")
        wait_for(fake.held.is_set, 60, "the first request of proj-a's second slice")
        kill(proc)
        fake.release.set()
        (killed,) = listings(dsn)
        assert killed["completed_at"] is None, "the kill was meant to land inside the listing"
        assert 0 < killed["records"] < len([r for r in runs if r.project == "proj-a" and want.get(r.run_id)]) * 3
        assert status(dsn) == {}  # nothing applied yet
        n = len(fake.feedback_requests())
        resumed = start(dsn, fake, "--delay-ms", "0")
        out, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err
        after = fake.feedback_requests()[n:]
    # the resumed listing of proj-a starts where the staged slices end, not at the window's start
    first = next(r for r in after if r.query.get("session") == [killed["session_id"]])
    assert first.query["min_created_at"] == [killed["listed_until"].isoformat()]
    rows = listings(dsn)
    assert rows[0]["id"] == killed["id"] and rows[0]["applied_at"] is not None
    assert {k: v for k, v in stored(dsn).items() if v is not None} == want
    assert set(states(dsn).values()) == {("done", 1), ("done", 2), ("done", 3)}


def test_kill_9_during_the_apply_resumes_the_apply_without_listing_again_and_is_exact(dsn):
    runs = dense(dsn)
    with serve(runs, reviewed=1.0) as fake:
        want = expected(fake, runs)
        proc = start(dsn, fake, "--delay-ms", "0", "--batch-size", "5")
        wait_for(lambda: len(status(dsn)) >= 50, 60, "the apply phase to have written some batches")
        kill(proc)
        applied = len(status(dsn))
        assert applied < len(runs), "the kill was meant to land inside the apply"
        killed = listings(dsn)
        assert killed[0]["completed_at"] is not None and killed[0]["applied_at"] is None
        (row,) = invocations(dsn)  # the killed invocation's row says what it was doing
        assert row["strategy"] == "project" and row["finished_at"] is None
        n = len(fake.feedback_requests())
        resumed = start(dsn, fake, "--delay-ms", "0")
        out, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err
        after = fake.feedback_requests()[n:]
    session_a = killed[0]["session_id"]
    assert not [r for r in after if r.query.get("session") == [session_a]], "proj-a was listed again"
    assert {k: v for k, v in stored(dsn).items() if v is not None} == want
    assert len(status(dsn)) == len(runs)
    assert all(s["attempts"] == 1 for s in status(dsn).values())  # no row examined twice


def test_kill_9_while_one_project_is_applied_and_the_next_listed_resumes_both_exactly(dsn):
    """proj-b is listed while proj-a's apply writes: killed with some of proj-a's rows written
    and one slice of proj-b staged, the next run applies the rest of proj-a without listing it
    again, lists proj-b from its last staged slice on, and the table is exact."""
    runs = dense(dsn)
    session_b = next(r.info.session_id for r in runs if r.project == "proj-b")
    fake = HoldSecondSlice(api_key=KEY, feedback=trace_feedback(reviewed=1.0), session=session_b)
    fake.add_runs(r.info for r in runs)
    a_rows = {r.run_id for r in runs if r.project == "proj-a"}
    with fake:
        want = expected(fake, runs)
        proc = start(dsn, fake, "--delay-ms", "0", "--batch-size", "5")
        wait_for(fake.held.is_set, 60, "the first request of proj-b's second slice")
        wait_for(lambda: len(status(dsn)) >= 50, 60, "proj-a's apply to have written some batches")
        kill(proc)
        fake.release.set()
        written = set(status(dsn))
        a, b = listings(dsn)
        assert written <= a_rows and len(written) < len(a_rows), "the kill was meant to land inside proj-a's apply"
        assert a["completed_at"] is not None and a["applied_at"] is None
        assert b["completed_at"] is None and b["records"] > 0  # proj-b listed meanwhile: a slice staged
        n = len(fake.feedback_requests())
        resumed = start(dsn, fake, "--delay-ms", "0")
        out, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err
        after = fake.feedback_requests()[n:]
    assert not [r for r in after if r.query.get("session") == [a["session_id"]]], "proj-a was listed again"
    first_b = next(r for r in after if r.query.get("session") == [session_b])
    assert first_b.query["min_created_at"] == [b["listed_until"].isoformat()]
    assert [x["applied_at"] is not None for x in listings(dsn)] == [True, True]
    assert {k: v for k, v in stored(dsn).items() if v is not None} == want
    assert len(status(dsn)) == len(runs)
    assert all(s["attempts"] == 1 for s in status(dsn).values())  # no row examined twice
