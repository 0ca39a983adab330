"""Settled days (fb0006): the next walk skips what a complete walk settled, and misses nothing.

Each way a settled day can become unsettled gets a test: the next run examines exactly
the rows the walk without marks would have examined, and the table and checkpoint are
exact afterwards. ``--dry-run``'s count (the progress bar's total, `backfill check`'s
pending) is the walk's own rows in every case.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

import backfill
from backfill.config import Database, LangSmith, Window
from backfill.domain.options import RunOptions
from backfill.operations import repair as operations
from backfill.sandbox import synthetic
from backfill.sandbox.fake_langsmith import FakeLangSmith

from ..helpers import TODAY, expected_records, insert, rows, seed, status

KEY = "lsv2_settled_key"
WINDOW = Window.parse("14d")

#: The extractor's upsert (tests/integration/test_extractor.py): the whole document is replaced.
UPSERT = """
    INSERT INTO runs (run_id, trace_id, project, run_date, data)
    VALUES (%(run_id)s, %(trace_id)s, %(project)s, %(run_date)s, %(data)s)
    ON CONFLICT (run_id) DO UPDATE SET run_date = EXCLUDED.run_date, data = EXCLUDED.data
"""


@pytest.fixture
def fake():
    with FakeLangSmith(api_key=KEY) as server:
        yield server


def go(dsn: str, fake: FakeLangSmith, **opts: Any) -> backfill.RunSummary:
    opts.setdefault("window", WINDOW)
    return backfill.run(
        Database(dsn), LangSmith(api_key=KEY, endpoint=fake.url), RunOptions(delay_ms=0, backoff_s=0.001, **opts)
    )


def marks(dsn: str) -> dict[dt.date, int]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT run_date, id_bound FROM feedback_backfill_settled").fetchall())


def max_id(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT max(id) FROM runs").fetchone()[0]


def visits(dsn: str) -> list[str]:
    """The run ids the next walk visits (a --dry-run), checked against its own count."""
    seen: list[str] = []
    summary = backfill.run(
        Database(dsn), None, RunOptions(window=WINDOW, dry_run=True), listing=lambda rid, _d, _a: seen.append(rid)
    )
    assert summary.pending_at_start == summary.examined == len(seen)
    return seen


def upsert(dsn: str, doc: dict[str, Any]) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(UPSERT, {**{k: doc[k] for k in ("run_id", "trace_id", "project", "run_date")}, "data": Jsonb(doc)})


def original(run_id: str, day: dt.date) -> dict[str, Any]:
    return synthetic.run_document(run_id, run_id, "proj-a", day)


def assert_enriched(dsn: str, run_id: str, attempts: int) -> None:
    doc = rows(dsn)[run_id]
    assert doc["feedback_records"] == expected_records(run_id)
    st = status(dsn)[run_id]
    assert (st["state"], st["attempts"], st["records"]) == ("done", attempts, len(doc["feedback_records"]))


def settled(dsn: str, fake: FakeLangSmith, n: int = 40, days: int = 4) -> list[str]:
    ids = seed(dsn, n, days=days)
    first = go(dsn, fake)
    assert first.examined == n and first.exit_code == 0
    return ids


def test_a_complete_run_marks_every_day_of_the_window_and_the_next_walk_visits_nothing(dsn, fake):
    settled(dsn, fake)
    bound = max_id(dsn)
    assert marks(dsn) == {WINDOW.since + dt.timedelta(days=d): bound for d in range(WINDOW.days)}
    requests = len(fake.feedback_requests())
    assert visits(dsn) == []
    again = go(dsn, fake)
    assert again.examined == 0 and len(fake.feedback_requests()) == requests


@pytest.mark.parametrize("opts", [{"limit": 1000}, {"window": Window.parse("14d", projects=("proj-a",))}])
def test_a_walk_with_limit_or_project_marks_nothing(dsn, fake, opts):
    seed(dsn, 30, days=3)
    assert go(dsn, fake, **opts).examined == 30
    assert marks(dsn) == {}
    go(dsn, fake, dry_run=True)
    assert marks(dsn) == {}


def test_a_row_archived_later_into_a_settled_day_is_walked(dsn, fake):
    settled(dsn, fake)
    old_day = TODAY - dt.timedelta(days=3)
    late = next(r for r in (synthetic.run_id_for(i, "late") for i in range(50)) if synthetic.feedback_for_run(r))
    with psycopg.connect(dsn) as conn:
        insert(conn, original(late, old_day))
    assert visits(dsn) == [late]
    assert go(dsn, fake).examined == 1
    assert_enriched(dsn, late, attempts=1)
    assert visits(dsn) == []


@pytest.mark.parametrize("shape", ["null", "absent"])
def test_an_enriched_row_the_extractor_re_archives_is_enriched_again(dsn, fake, shape):
    ids = settled(dsn, fake)
    rid = next(r for r in ids if synthetic.feedback_for_run(r))
    day = dt.date.fromisoformat(rows(dsn)[rid]["run_date"])
    plain = original(rid, day)
    again = {**plain, "feedback_records": None} if shape == "null" else plain
    upsert(dsn, again)
    assert visits(dsn) == [rid]
    assert go(dsn, fake).examined == 1
    assert rows(dsn)[rid] == {**again, "feedback_records": expected_records(rid)}
    assert_enriched(dsn, rid, attempts=2)
    assert visits(dsn) == []


def test_a_row_enriched_although_its_stats_promised_nothing_is_enriched_again_after_a_re_archive(dsn, fake):
    """Its feedback_stats cannot bring it back (runs_feedback_missing_idx): the ledger's unpromised part does."""
    rid = next(r for r in (synthetic.run_id_for(i, "stale") for i in range(50)) if synthetic.feedback_for_run(r))
    stale = {**original(rid, TODAY), "feedback_stats": {}}
    with psycopg.connect(dsn) as conn:
        insert(conn, stale)
    seed(dsn, 20, days=2)
    assert go(dsn, fake).examined == 21
    with psycopg.connect(dsn) as conn:
        assert conn.execute(
            "SELECT stats_count FROM feedback_backfill_status WHERE run_id = %s", (rid,)
        ).fetchone() == (0,)
    upsert(dsn, {**stale, "feedback_records": None})
    assert visits(dsn) == [rid]
    assert go(dsn, fake).examined == 1
    assert rows(dsn)[rid] == {**stale, "feedback_records": expected_records(rid)}
    assert_enriched(dsn, rid, attempts=2)


def test_the_one_row_a_settled_day_leaves_waits_for_its_feedback_stats(dsn, fake):
    """The stated exception: enriched while its feedback_stats promised records, re-archived
    without records and with feedback_stats promising none. The walk without marks would ask
    the API again; below the mark it waits until feedback_stats promise records again, as a
    no_feedback row does, and `backfill status` counts it as re-archived since."""
    ids = settled(dsn, fake)
    rid = next(r for r in ids if synthetic.feedback_for_run(r))
    day = dt.date.fromisoformat(rows(dsn)[rid]["run_date"])
    upsert(dsn, {**original(rid, day), "feedback_records": None, "feedback_stats": {}})
    assert visits(dsn) == []
    report = backfill.status(Database(dsn), WINDOW)
    assert report.data.lacking_now == 1
    upsert(dsn, {**original(rid, day), "feedback_records": None})  # feedback_stats promise again
    assert visits(dsn) == [rid]
    assert go(dsn, fake).examined == 1
    assert_enriched(dsn, rid, attempts=2)


def test_a_no_feedback_row_whose_stats_now_promise_records_is_examined(dsn, fake):
    ids = settled(dsn, fake)
    rid = next(r for r in ids if not synthetic.feedback_for_run(r))
    assert status(dsn)[rid]["state"] == "no_feedback"
    donor = next(r for r in ids if synthetic.feedback_for_run(r))
    record = {**synthetic.feedback_for_run(donor)[0], "run_id": rid}
    fake.set_feedback(rid, [record])
    # a verdict entered in LangSmith: not walked until feedback_stats say so (as without marks)
    assert visits(dsn) == []
    day = dt.date.fromisoformat(rows(dsn)[rid]["run_date"])
    upsert(dsn, {**original(rid, day), "feedback_stats": synthetic.feedback_stats_for([record])})
    assert visits(dsn) == [rid]
    assert go(dsn, fake).examined == 1
    assert rows(dsn)[rid]["feedback_records"] == [record]
    assert (status(dsn)[rid]["state"], status(dsn)[rid]["attempts"]) == ("done", 2)
    assert visits(dsn) == []


def test_a_failed_row_below_the_mark_is_retried_up_to_max_attempts_then_after_retry(dsn):
    ids = seed(dsn, 40, days=4)
    # a run without feedback: its feedback_stats promise nothing, so only the status table brings it back
    poisoned = next(r for r in ids if not synthetic.feedback_for_run(r))
    with FakeLangSmith(api_key=KEY) as fake:
        fake.poison(poisoned)
        assert go(dsn, fake).examined == 40
        assert len(marks(dsn)) == WINDOW.days  # a row failed with attempts left does not keep its day open
        for attempt in (2, 3):
            assert visits(dsn) == [poisoned]
            assert go(dsn, fake).examined == 1
            st = status(dsn)[poisoned]
            assert (st["state"], st["reason"], st["attempts"]) == ("failed", "api_error", attempt)
        assert visits(dsn) == []  # at --max-attempts: settled, as without marks
        assert go(dsn, fake, max_attempts=4).examined == 1  # a higher --max-attempts reaches it
    assert operations.retry(Database(dsn), WINDOW).rows == 1
    with FakeLangSmith(api_key=KEY) as healed:
        assert visits(dsn) == [poisoned]
        assert go(dsn, healed).examined == 1
        assert "feedback_records" not in rows(dsn)[poisoned]
        assert (status(dsn)[poisoned]["state"], status(dsn)[poisoned]["attempts"]) == (
            "no_feedback",
            1,
        )  # retry set attempts to 0
        assert visits(dsn) == []


def test_reset_forgets_the_marks_and_the_next_run_examines_the_window_again(dsn, fake):
    ids = settled(dsn, fake)
    before, checkpoint = rows(dsn), status(dsn)
    operations.reset(Database(dsn), WINDOW)
    assert marks(dsn) == {}
    no_feedback = sorted(r for r in ids if checkpoint[r]["state"] == "no_feedback")
    assert sorted(visits(dsn)) == no_feedback
    assert go(dsn, fake).examined == len(no_feedback)
    assert rows(dsn) == before
    assert {r: s["state"] for r, s in status(dsn).items()} == {r: s["state"] for r, s in checkpoint.items()}
    assert len(marks(dsn)) == WINDOW.days and visits(dsn) == []


def test_revert_forgets_the_marks_and_the_next_run_enriches_again(dsn, fake):
    ids = settled(dsn, fake)
    enriched = rows(dsn)
    operations.revert(Database(dsn), WINDOW)
    assert marks(dsn) == {} and status(dsn) == {}
    assert sorted(visits(dsn)) == sorted(ids)
    assert go(dsn, fake).examined == len(ids)
    assert rows(dsn) == enriched
    assert visits(dsn) == []


def test_a_row_skipped_under_another_writers_lock_leaves_its_day_unmarked(dsn):
    ids = seed(dsn, 60, days=3)
    day_of = {r: TODAY - dt.timedelta(days=i % 3) for i, r in enumerate(ids)}
    held = next(r for r in reversed(ids) if synthetic.feedback_for_run(r) and day_of[r] == TODAY)
    locked, release = threading.Event(), threading.Event()

    def lock_it() -> None:  # the extractor locks a row of the newest day while the first batch is asked
        with psycopg.connect(dsn) as conn:
            conn.execute("SELECT 1 FROM runs WHERE run_id = %s FOR UPDATE", (held,))
            locked.set()
            release.wait(30)

    def feedback(asked: str) -> list[dict[str, Any]]:
        if not locked.is_set():
            threading.Thread(target=lock_it, daemon=True).start()
            assert locked.wait(10)
        return synthetic.feedback_for_run(asked)

    with FakeLangSmith(api_key=KEY, feedback=feedback) as fake:
        try:
            summary = go(dsn, fake, batch_size=10)
        finally:
            release.set()
        assert summary.skipped == 1
        assert held not in status(dsn)
        got = marks(dsn)
        assert TODAY not in got and len(got) == WINDOW.days - 1
        assert visits(dsn) == [held]
        assert go(dsn, fake).examined == 1
    assert status(dsn)[held]["state"] == "done"
    assert rows(dsn)[held]["feedback_records"] == expected_records(held)
    assert TODAY in marks(dsn)


def test_a_row_committed_late_with_an_id_below_newer_rows_is_not_lost(dsn, fake):
    """ids are handed out at insert, rows become visible at commit: the horizon waits for both."""
    seed(dsn, 20, days=2)
    old_day = TODAY - dt.timedelta(days=1)
    slow, fast = (
        next(r for r in (synthetic.run_id_for(i, name) for i in range(50)) if synthetic.feedback_for_run(r))
        for name in ("slow", "fast")
    )
    with psycopg.connect(dsn) as extractor:
        insert(extractor, original(slow, old_day))  # takes its id, not committed yet
        with psycopg.connect(dsn) as other:
            insert(other, original(fast, old_day))  # a higher id, committed first
        assert go(dsn, fake).examined == 21
        assert marks(dsn) == {}  # the slow transaction was open throughout: no day could be marked
        extractor.commit()
    assert visits(dsn) == [slow]
    assert go(dsn, fake).examined == 1
    assert_enriched(dsn, slow, attempts=1)
    assert len(marks(dsn)) == WINDOW.days and visits(dsn) == []


def test_the_horizon_stays_open_while_a_transaction_newer_than_every_completed_one_runs(dsn):
    """The same race without the run's own commits in between (they hide it above): read
    right after the first transaction commits, the snapshot's xmax is the extractor's xid,
    and a horizon taken from it closed at once."""
    from backfill.archive import gateway as db
    from backfill.archive import settled as settle

    seed(dsn, 4, days=1)
    gw = db.connect(Database(dsn))
    try:
        with psycopg.connect(dsn) as first, psycopg.connect(dsn) as extractor:
            first.execute("SELECT pg_current_xact_id()")
            insert(extractor, original(synthetic.run_id_for(1, "slow-h"), TODAY))
            insert(first, original(synthetic.run_id_for(1, "fast-h"), TODAY))
            first.commit()
            horizon = settle.horizon(gw, RunOptions(window=WINDOW))
            assert horizon.marking and not settle.closed(gw, horizon)
            extractor.commit()
        assert settle.closed(gw, horizon)
    finally:
        gw.close()
