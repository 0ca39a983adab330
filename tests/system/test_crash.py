"""kill -9, SIGINT and SIGTERM of a real `backfill run` process, then resume.

Where a signal or a kill must land is not left to sleeps: a data source of the fake holds
one chosen GET /feedback unanswered (the request on the wire) until the test releases it,
the fake's request log says which requests were answered (and for which runs), and
pg_stat_activity says when the write transaction of a batch waits on a lock the test holds.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backfill.sandbox import synthetic
from backfill.sandbox.fake_langsmith import FakeLangSmith

from ..helpers import invocations, raw_rows, seed, status, wait_for

pytestmark = pytest.mark.slow

KEY = "lsv2_crash_key"
BATCH = 5
#: How long the gate holds a request at most: shorter than the client's --timeout (60 s below), so
#: that a process that waits for the answer gets it (and writes the batch) rather than a timeout.
HOLD_S = 15.0
#: The lease of the kill -9 test's runs: a killed run's lease blocks the next run this long.
LEASE_S = 2.0
#: Requests of a run before its first batch's: the pre-flight probe (runner.preflight).
PROBE = 1


class Gate:
    """A data source for the fake: holds one chosen GET /feedback in the fake's handler thread,
    unanswered, until ``release`` (or HOLD_S); the fake logs a request only once answered."""

    def __init__(self) -> None:
        self.fake: FakeLangSmith | None = None
        self.held = threading.Event()
        self.release = threading.Event()
        self._at: int | None = None
        self._lock = threading.Lock()

    def arm(self, answered: int) -> None:
        """Hold the request that arrives once ``answered`` GET /feedback have been answered."""
        self.held.clear()
        self.release.clear()
        self._at = answered

    def __call__(self, run_id: str) -> list[dict[str, Any]]:
        assert self.fake is not None
        with self._lock:  # called once per run of a request: hold its first call only
            hold = self._at is not None and len(self.fake.feedback_requests()) == self._at
            if hold:
                self._at = None
        if hold:
            self.held.set()
            self.release.wait(HOLD_S)
        return synthetic.feedback_for_run(run_id)


def start(dsn: str, fake: FakeLangSmith, *args: str, lease_s: float | None = None) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "LANGSMITH_API_KEY": KEY,
        "LANGSMITH_ENDPOINT": fake.url,
        "LANGSMITH_CONFIG_FILE": os.devnull,
    }
    if lease_s is not None:
        env["BACKFILL_LEASE_SECONDS"] = str(lease_s)
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "backfill", "run", "--delay-ms", "0", "--batch-size", str(BATCH)),
            *("--timeout", "60", "--no-progress", *args),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished_state(dsn: str) -> tuple[dict[str, str], dict[str, tuple[str, int]]]:
    return raw_rows(dsn), {k: (v["state"], v["records"]) for k, v in status(dsn).items()}


def asked(fake: FakeLangSmith, start: int = 0, stop: int | None = None) -> list[set[str]]:
    """The runs of each answered GET /feedback (canonical ids), from the fake's log."""
    return [{str(uuid.UUID(r)) for r in req.query["run"]} for req in fake.feedback_requests()[start:stop]]


def checkpointed(dsn: str) -> set[str]:
    return {str(uuid.UUID(r)) for r in status(dsn)}


def sessions(dsn: str, where: str = "true") -> int:
    """Backends of `backfill` (its work and lease connections) on this database matching ``where``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            f" AND application_name LIKE 'feedback-backfill%%' AND {where}"
        ).fetchone()[0]


def lease_expired(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT expires_at <= clock_timestamp() FROM feedback_backfill_lease").fetchone()
    return row is None or row[0]


def signal_pending(pid: int, sig: int) -> bool:
    """Whether ``sig`` sent to the process is still pending (not yet delivered to its handler)."""
    line = next(s for s in Path(f"/proc/{pid}/status").read_text().splitlines() if s.startswith("ShdPnd:"))
    return bool(int(line.split()[1], 16) >> (sig - 1) & 1)


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.release.set()  # never leave a handler thread of the fake waiting


@pytest.fixture
def fake(gate: Gate) -> Iterator[FakeLangSmith]:
    with FakeLangSmith(api_key=KEY, latency_s=0.01, feedback=gate) as server:
        gate.fake = server
        yield server


def kill_on_the_wire(dsn: str, fake: FakeLangSmith, gate: Gate, proc: subprocess.Popen[str], n: int) -> None:
    """The process waits for the answer of its request ``n``: kill it; nothing of that batch is written."""
    before = raw_rows(dsn), status(dsn)
    assert len(fake.feedback_requests()) == n - 1  # request n was sent, not answered
    proc.kill()
    proc.wait(30)
    gate.release.set()
    wait_for(lambda: len(fake.feedback_requests()) == n, 10, "the fake to answer the killed run's request")
    wait_for(lambda: sessions(dsn) == 0, 30, "the killed run's sessions to end")
    assert (raw_rows(dsn), status(dsn)) == before


def kill_in_the_write(dsn: str, fake: FakeLangSmith, gate: Gate, proc: subprocess.Popen[str], n: int) -> None:
    """Let request ``n`` be answered, hold the batch's write transaction on the checkpoint table,
    kill the process there: the batch was fetched (the log) and not committed (the tables)."""
    before = raw_rows(dsn)
    with psycopg.connect(dsn) as blocker:
        # the checkpoint's INSERT needs ROW EXCLUSIVE: it waits, after the patch of runs
        blocker.execute("LOCK TABLE feedback_backfill_status IN SHARE MODE")
        gate.release.set()
        wait_for(
            lambda: sessions(dsn, "application_name = 'feedback-backfill' AND wait_event_type = 'Lock'") == 1,
            30,
            f"the write of batch {n} to wait on the checkpoint table",
        )
        proc.kill()
        proc.wait(30)
        blocker.rollback()
    wait_for(lambda: sessions(dsn) == 0, 30, "the killed run's sessions to end")
    # the killed batch was fetched, and maybe the next one too (fetched ahead while the write waited)
    assert len(fake.feedback_requests()) in (n, n + 1)
    fetched = asked(fake)[n - 1]
    assert len(fetched) == BATCH
    assert not set().union(*asked(fake, n - 1)) & checkpointed(dsn)  # ... and nothing of either committed
    after = raw_rows(dsn)
    assert {r: after[r] for r in before if str(uuid.UUID(r)) in fetched} == {
        r: before[r] for r in before if str(uuid.UUID(r)) in fetched
    }


def test_kill_9_between_fetch_and_commit_then_resume_equals_an_uninterrupted_run(dsn, app_dsn, fake, gate):
    from backfill.config import Database
    from backfill.operations import migrate

    seed(dsn, 150, days=7)
    # the reference: an uninterrupted run on an identical database
    migrate.upgrade(Database(app_dsn))
    seed(app_dsn, 150, days=7)
    ref = start(app_dsn, fake)
    assert ref.wait(60) == 0, ref.stderr.read()
    expected = finished_state(app_dsn)

    rng = random.Random(20261129)
    committed: set[str] = set()  # the runs of every batch a killed process committed
    kinds = []
    for i in range(10):
        left = (150 - len(status(dsn))) // BATCH
        n = rng.randint(1, min(4, left))  # the n-th batch of this process; n - 1 batches commit before it
        kind = rng.choice([kill_on_the_wire, kill_in_the_write])
        answered = len(fake.feedback_requests()) + PROBE  # the probe's runs are not committed: left out
        gate.arm(answered + n - 1)
        proc = start(dsn, fake, lease_s=LEASE_S)
        wait_for(gate.held.is_set, 60, f"batch {n} of killed run {i} to reach the fake")
        committed |= set().union(*asked(fake, answered))
        # the batches before it: fetched and committed, whole (the last one is written while
        # request n is on the wire: fetch ahead)
        wait_for(lambda c=committed: checkpointed(dsn) == c, 30, f"the {n - 1} batch(es) before request {n} to commit")
        kind(dsn, fake, gate, proc, answered + n)
        assert proc.returncode == -signal.SIGKILL
        assert checkpointed(dsn) == committed  # ... and nothing of the killed one
        kinds.append(kind)
        wait_for(lambda: lease_expired(dsn), LEASE_S + 10, "the killed run's lease to expire")
    assert set(kinds) == {kill_on_the_wire, kill_in_the_write}
    final = start(dsn, fake)
    assert final.wait(60) == 0, final.stderr.read()
    assert finished_state(dsn) == expected
    # a re-run after completion asks the API nothing
    n = len(fake.feedback_requests())
    again = start(dsn, fake)
    assert again.wait(60) == 0
    assert len(fake.feedback_requests()) == n


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_after_the_current_batch_and_resume_completes(dsn, fake, sig, code):
    seed(dsn, 200)
    fake.latency_s = 0.05
    proc = start(dsn, fake)
    wait_for(lambda: status(dsn), 30, "a first batch to be committed")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert "interrupted: the last batch was committed or abandoned whole; run the same command to resume" in err
    partial = status(dsn)
    assert 0 < len(partial) < 200 and len(partial) % 5 == 0  # whole batches only
    proc = start(dsn, fake)
    assert proc.wait(60) == 0
    assert len(status(dsn)) == 200


def test_a_second_sigterm_abandons_the_batch_in_flight(dsn, fake, gate):
    seed(dsn, 200)
    gate.arm(PROBE + 2)  # hold the third batch's request: two batches committed, the third on the wire
    proc = start(dsn, fake)
    wait_for(gate.held.is_set, 60, "the third batch's GET /feedback to reach the fake")
    # the second batch is written while the third request is on the wire (fetch ahead)
    wait_for(lambda: len(status(dsn)) == 2 * BATCH, 30, "the second batch to commit")
    committed = raw_rows(dsn), status(dsn)
    assert checkpointed(dsn) == set().union(*asked(fake, PROBE))
    proc.send_signal(signal.SIGTERM)
    # two SIGTERMs pending at once would be one: send the second once the first was delivered
    wait_for(lambda: not signal_pending(proc.pid, signal.SIGTERM), 10, "the first SIGTERM to be delivered")
    proc.send_signal(signal.SIGTERM)
    # the answer comes after HOLD_S at the latest: a process that waits for it writes the batch
    _, err = proc.communicate(timeout=HOLD_S + 30)
    assert len(fake.feedback_requests()) == PROBE + 2, "the process waited for the answer of the batch in flight"
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert (raw_rows(dsn), status(dsn)) == committed  # nothing of the batch in flight was written
    last = invocations(dsn)[-1]
    assert (last["outcome"], last["finished_at"] is not None) == ("interrupted", True)
