"""kill -9, SIGINT and SIGTERM of a real `backfill run` process, then resume."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from backfill.sandbox.fake_langsmith import FakeLangSmith

from .helpers import raw_rows, seed, status

KEY = "lsv2_crash_key"


def start(dsn: str, fake: FakeLangSmith, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "LANGSMITH_API_KEY": KEY,
        "LANGSMITH_ENDPOINT": fake.url,
        "LANGSMITH_CONFIG_FILE": os.devnull,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "backfill", "run", "--delay-ms", "0", "--batch-size", "5", "--no-progress", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished_state(dsn: str) -> tuple[dict[str, str], dict[str, tuple[str, int]]]:
    return raw_rows(dsn), {k: (v["state"], v["records"]) for k, v in status(dsn).items()}


@pytest.fixture
def fake():
    with FakeLangSmith(api_key=KEY, latency_s=0.01) as server:
        yield server


def test_kill_9_at_random_points_then_resume_equals_an_uninterrupted_run(dsn, app_dsn, fake):
    from backfill import migrate
    from backfill.config import Database

    seed(dsn, 150, days=7)
    # the reference: an uninterrupted run on an identical database
    migrate.upgrade(Database(app_dsn))
    seed(app_dsn, 150, days=7)
    ref = start(app_dsn, fake)
    assert ref.wait(60) == 0, ref.stderr.read()
    expected = finished_state(app_dsn)

    rng = random.Random(20261129)
    kills = 0
    for _ in range(20):
        proc = start(dsn, fake)
        time.sleep(rng.uniform(0.05, 0.6))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(30)
    final = start(dsn, fake)
    assert final.wait(60) == 0, final.stderr.read()
    assert kills >= 10
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
    deadline = time.monotonic() + 30
    while not status(dsn) and time.monotonic() < deadline:  # at least one batch committed
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert "interrupted: the last batch was committed or abandoned whole; run the same command to resume" in err
    partial = status(dsn)
    assert 0 < len(partial) < 200 and len(partial) % 5 == 0  # whole batches only
    proc = start(dsn, fake)
    assert proc.wait(60) == 0
    assert len(status(dsn)) == 200


def test_a_second_sigterm_abandons_the_batch_in_flight(dsn, fake):
    seed(dsn, 200)
    fake.latency_s = 0.3
    proc = start(dsn, fake)
    deadline = time.monotonic() + 30
    while not status(dsn) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert len(status(dsn)) % 5 == 0  # whole batches only
