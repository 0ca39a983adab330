"""Requests packed by feedback_stats (backfill/pack.py), on real PostgreSQL and the fake over HTTP.

At ~1.2 records per run, fixed batches of 100 runs needed a second page for most batches;
packed requests stay within 1.15x of max(⌈runs/100⌉, ⌈records/100⌉), counted from the
fake's request log, and never cost more than fixed batches when the stats are wrong.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import psycopg
import pytest

import backfill
from backfill.config import Database, LangSmith, Window
from backfill.domain.options import RunOptions
from backfill.domain.packing import lower_bound
from backfill.domain.records import sort_records
from backfill.sandbox import synthetic
from backfill.sandbox.fake_langsmith import FakeLangSmith

from ..helpers import TODAY, insert, invocations, rows

KEY = "lsv2_test_key_0123456789"
#: The run's pre-flight probe (runner.preflight): one request before the batches, which packing does not make.
PROBE = 1
RUNS = 1500
DAYS = 3


def records_for(run_id: str) -> list[dict[str, Any]]:
    """0-3 records per run, 1.2 on average (the archive of issue 14 carries 1.17)."""
    rng = random.Random(run_id)
    count = rng.choices([0, 1, 2, 3], weights=[30, 30, 30, 10])[0]
    return [
        {
            "id": synthetic._uuid("fb", run_id, str(i)),
            "run_id": run_id,
            "key": f"k{i}",
            "score": 1.0,
            "comment": None,
            "created_at": f"2026-01-0{i + 1}T00:00:00+00:00",
        }
        for i in range(count)
    ]


def seed_archive(dsn: str, stats: str) -> list[str]:
    """RUNS runs over DAYS days; their feedback_stats ``accurate``, all ``zero``, or ``overstated`` (x3)."""
    ids = []
    with psycopg.connect(dsn) as conn:
        for i in range(RUNS):
            run_id = synthetic.run_id_for(i, "pack")
            doc = synthetic.run_document(run_id, run_id, "proj-a", TODAY - dt.timedelta(days=i % DAYS))
            recs = records_for(run_id)
            doc["feedback_stats"] = (
                {} if stats == "zero" else synthetic.feedback_stats_for(recs * (3 if stats == "overstated" else 1))
            )
            insert(conn, doc)
            ids.append(run_id)
    return ids


def fixed_batches(dsn: str) -> int:
    """What fixed batches of 100 runs in walk order cost: one request per full page, plus the last, short one."""
    with psycopg.connect(dsn) as conn:
        order = [r for (r,) in conn.execute("SELECT run_id FROM runs ORDER BY run_date, id")]
    return sum(sum(len(records_for(r)) for r in order[i : i + 100]) // 100 + 1 for i in range(0, len(order), 100))


@pytest.fixture
def fake():
    with FakeLangSmith(api_key=KEY, feedback=records_for) as server:
        yield server


def go(dsn: str, fake: FakeLangSmith) -> backfill.RunSummary:
    return backfill.run(
        Database(dsn),
        LangSmith(api_key=KEY, endpoint=fake.url, timeout_s=5.0),
        RunOptions(window=Window.parse("14d"), delay_ms=0, backoff_s=0.001),
    )


def test_accurate_stats_cost_at_most_1_15x_the_lower_bound_and_every_row_is_exact(dsn, fake):
    ids = seed_archive(dsn, "accurate")
    summary = go(dsn, fake)
    records = sum(len(records_for(r)) for r in ids)
    bound = lower_bound(RUNS, records)
    requests = len(fake.feedback_requests())
    assert bound == -(-records // 100) > RUNS // 100  # record-bound, as the archive
    assert summary.exit_code == 0 and summary.examined == RUNS
    assert summary.api_requests == requests and requests - PROBE <= 1.15 * bound
    assert requests - PROBE < fixed_batches(dsn)
    assert (summary.runs_fetched, summary.records_fetched, summary.lower_bound) == (RUNS, records, bound)
    assert all(len(r.query["run"]) <= 100 for r in fake.feedback_requests())
    assert all(r.query["limit"] == ["100"] for r in fake.feedback_requests())
    stored = rows(dsn)
    for run_id in ids:
        expected = sort_records(records_for(run_id))
        assert stored[run_id].get("feedback_records") == (expected or None)
    line = next(s for s in summary.lines() if "API requests" in s)
    assert (
        line == f"  API requests {requests} (0 failed) for {RUNS} run(s) and {records} record(s); lower bound {bound}"
    )
    assert [(i["api_requests"], i["records_stored"]) for i in invocations(dsn)] == [(requests, records)]


@pytest.mark.parametrize("stats", ["zero", "overstated"])
def test_wrong_stats_never_cost_more_requests_than_fixed_batches(dsn, fake, stats):
    ids = seed_archive(dsn, stats)
    summary = go(dsn, fake)
    requests = len(fake.feedback_requests())
    assert summary.api_requests == requests and requests - PROBE <= fixed_batches(dsn)
    assert summary.records_fetched == sum(len(records_for(r)) for r in ids)
    if stats == "zero":  # every record found by paging, none lost
        assert summary.exit_code == 0
        stored = rows(dsn)
        assert all(stored[r].get("feedback_records") == (sort_records(records_for(r)) or None) for r in ids)
    else:  # the API has fewer than promised: a retryable mismatch, as before packing
        assert summary.exit_code == 3 and set(summary.failed) == {"mismatch"}
