"""Feedback by run (``langsmith.by_run``) from the fake over HTTP: paging, dropped records, isolation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from backfill.domain.rows import Tally
from backfill.langsmith.by_run import fetch, fetch_isolating
from backfill.langsmith.transport import BatchFailed, Transport
from backfill.sandbox import synthetic
from backfill.sandbox.fake_langsmith import FakeLangSmith

pytestmark = pytest.mark.timeout(30)

RUNS = [synthetic.run_id_for(i, "by-run") for i in range(100)]

Connect = Callable[..., Transport]


def records(run_id: str, n: int) -> list[dict[str, Any]]:
    return [
        {"id": synthetic.run_id_for(i, run_id), "run_id": run_id, "key": "k", "created_at": "2026-11-20T10:00:00Z"}
        for i in range(n)
    ]


def answered(fake: FakeLangSmith, runs: list[str]) -> dict[str, Any]:
    return {r: fake.records_of(r) for r in runs}


def test_the_records_of_a_batch_follow_offset_pages(fake: FakeLangSmith, connect: Connect) -> None:
    fake.set_feedback(RUNS[0], records(RUNS[0], 230))
    t, tally = connect(), Tally()
    got = fetch(t, RUNS[:10], tally)
    assert got == answered(fake, RUNS[:10]) and len(got[RUNS[0]]) == 230
    served = sum(len(fake.records_of(r)) for r in RUNS[:10])
    assert [r.query["offset"] for r in fake.feedback_requests()] == [[str(o)] for o in range(0, served, 100)]
    assert (tally.requests, tally.records, tally.dropped) == (len(fake.feedback_requests()), served, 0)
    assert t.known_good == RUNS[0]  # a run the API answered for: the outage probe's


def test_records_of_runs_not_asked_are_dropped(fake: FakeLangSmith, connect: Connect) -> None:
    fake.stray_records(records(synthetic.run_id_for(0, "not-asked"), 2))
    tally = Tally()
    assert fetch(connect(), RUNS[:3], tally) == answered(fake, RUNS[:3]) and tally.dropped == 2


def test_a_record_repeated_across_pages_is_kept_once(fake: FakeLangSmith, connect: Connect) -> None:
    fake.set_feedback(RUNS[0], records(RUNS[0], 150))
    fake.duplicate_across_pages()
    tally = Tally()
    assert fetch(connect(), RUNS[:3], tally) == answered(fake, RUNS[:3])
    assert tally.dropped == len(fake.feedback_requests()) - 1  # each page after the first repeats one


def test_a_run_id_is_answered_under_the_spelling_it_was_asked_with(fake: FakeLangSmith, connect: Connect) -> None:
    shouted = RUNS[0].upper()
    fake.set_feedback(RUNS[0], records(RUNS[0], 2))
    got = fetch(connect(), [shouted, RUNS[1]], Tally())
    assert got == {shouted: fake.records_of(RUNS[0]), RUNS[1]: fake.records_of(RUNS[1])}
    assert fake.feedback_requests()[0].query["run"] == [RUNS[0], RUNS[1]]  # asked canonical


def test_a_server_that_ignores_offset_cannot_be_paged(fake: FakeLangSmith, connect: Connect) -> None:
    fake.set_feedback(RUNS[0], records(RUNS[0], 150))
    fake.ignore_offset()
    with pytest.raises(BatchFailed, match="paging did not advance"):
        fetch(connect(), RUNS[:1], Tally())
    got = fetch_isolating(connect(), RUNS[:4], Tally())
    assert got == answered(fake, RUNS[1:4]) | {RUNS[0]: "API error: paging did not advance"}


def test_a_poisoned_run_is_isolated_and_its_batch_mates_answered(fake: FakeLangSmith, connect: Connect) -> None:
    fake.poison(RUNS[41])
    t, tally = connect(), Tally()
    got = fetch_isolating(t, RUNS, tally)
    assert got == answered(fake, RUNS) | {RUNS[41]: "API error: HTTP 500"}
    assert tally.requests == len(fake.feedback_requests()) <= 16  # 2 * ceil(log2(100)) + 2
    assert tally.errors == sum(1 for r in fake.feedback_requests() if r.status == 500)


def test_a_414_lowers_the_ids_per_request_for_the_rest_of_the_invocation(fake: FakeLangSmith, connect: Connect) -> None:
    fake.max_ids(30)
    t, tally = connect(), Tally()
    assert fetch_isolating(t, RUNS, tally) == answered(fake, RUNS)
    assert t.max_ids == 25
    assert [len(r.query["run"]) for r in fake.feedback_requests()] == [100, 50, 25, 25, 25, 25]
    assert fetch_isolating(t, RUNS[:30], tally) == answered(fake, RUNS[:30])
    assert [len(r.query["run"]) for r in fake.feedback_requests()[6:]] == [25, 5]
