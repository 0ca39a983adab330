"""Feedback by project (``langsmith.by_project``) from the fake over HTTP: a project's id, a slice's records."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

import pytest

from backfill.domain.listing import ListingFailed
from backfill.domain.rows import Tally
from backfill.langsmith.by_project import SliceRefused, list_slice, session_id
from backfill.langsmith.transport import Transport
from backfill.sandbox import synthetic, traces
from backfill.sandbox.fake_langsmith import FakeLangSmith

from .conftest import KEY

pytestmark = pytest.mark.timeout(30)

NOW = dt.datetime(2026, 6, 15, 12, 30, tzinfo=dt.UTC)
ARCHIVE = list(traces.trace_archive(500, runs_per_trace=2, days=7, reviewed=0.8, now=NOW))
PROJ_A = synthetic.session_id_for("proj-a")
EVER = (NOW - dt.timedelta(days=30), NOW + dt.timedelta(days=1))

Connect = Callable[..., Transport]


@pytest.fixture
def fake() -> Iterator[FakeLangSmith]:
    """The fake holding ARCHIVE's runs, listed by project."""
    with FakeLangSmith(KEY, feedback=traces.trace_feedback(reviewed=0.8)) as server:
        server.add_runs(r.info for r in ARCHIVE)
        yield server


def listed(fake: FakeLangSmith, a: dt.datetime, b: dt.datetime) -> list[dict]:
    return fake.listed(session=PROJ_A, level="run", min_created_at=a.isoformat(), max_created_at=b.isoformat())


def test_a_project_is_found_by_its_name(fake: FakeLangSmith, connect: Connect) -> None:
    tally = Tally()
    assert session_id(connect(), "proj-a", tally) == PROJ_A and tally.requests == 1
    (asked,) = [r for r in fake.requests if r.path == "/sessions"]
    assert asked.query["name"] == ["proj-a"]
    with pytest.raises(ListingFailed, match="knows no project named 'proj-z'"):
        session_id(connect(), "proj-z", tally)


def test_a_slice_lists_the_projects_run_level_records_created_in_it(fake: FakeLangSmith, connect: Connect) -> None:
    t, tally = connect(), Tally()
    whole = list_slice(t, PROJ_A, *EVER, tally)
    assert whole == listed(fake, *EVER) and len(whole) > 200  # pages of 100, each record once
    assert tally.requests == len(fake.feedback_requests()) == len(whole) // 100 + 1 and tally.records == len(whole)
    mid = dt.datetime.fromisoformat(whole[len(whole) // 2]["created_at"])
    newer = list_slice(t, PROJ_A, mid, EVER[1], tally)
    assert newer == listed(fake, mid, EVER[1]) and 0 < len(newer) < len(whole)
    query = fake.feedback_requests()[-1].query
    assert query["session"] == [PROJ_A] and query["level"] == ["run"] and query["min_created_at"] == [mid.isoformat()]


def test_records_of_another_project_are_dropped(fake: FakeLangSmith, connect: Connect) -> None:
    other = {"id": synthetic.run_id_for(1, "other"), "run_id": ARCHIVE[0].run_id, "session_id": "another"}
    fake.stray_records([other])  # (on the first page, past its 100: a slice of one page here)
    day = (NOW - dt.timedelta(days=2), NOW - dt.timedelta(days=1))
    tally = Tally()
    assert list_slice(connect(), PROJ_A, *day, tally) == listed(fake, *day) and tally.dropped == 1
    assert 0 < len(listed(fake, *day)) < 100


def test_a_slice_that_cannot_be_paged_is_refused_for_halving(fake: FakeLangSmith, connect: Connect) -> None:
    fake.ignore_offset()
    with pytest.raises(SliceRefused, match="paging did not advance"):
        list_slice(connect(), PROJ_A, *EVER, Tally())


def test_a_500_on_a_slice_is_its_own_once_a_probe_finds_the_api_healthy(fake: FakeLangSmith, connect: Connect) -> None:
    fake.fail_next(500)
    t, tally = connect(), Tally()
    with pytest.raises(SliceRefused, match="HTTP 500"):
        list_slice(t, PROJ_A, *EVER, tally)
    slice_request, probe = fake.feedback_requests()
    assert slice_request.status == 500 and probe.status == 200 and probe.query["limit"] == ["1"]
    assert tally.requests == 2


def test_a_500_in_an_outage_is_waited_out_and_the_slice_asked_again(fake: FakeLangSmith, connect: Connect) -> None:
    fake.outage(requests=3, status=500)  # the slice's request and two probes
    t, tally = connect(), Tally()
    assert list_slice(t, PROJ_A, *EVER, tally) == listed(fake, *EVER)
    assert [r.status for r in fake.feedback_requests()][:4] == [500, 500, 500, 200]
    assert tally.outage_wait_s > 0
