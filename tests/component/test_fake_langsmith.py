"""The fake LangSmith server, driven by the real langsmith.Client, and the synthetic data."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import langsmith
import pytest
import requests
import urllib3
from langsmith import utils as ls_utils

from backfill.sandbox import synthetic, traces
from backfill.sandbox.fake_langsmith import FakeLangSmith, RunInfo
from backfill.sandbox.fake_langsmith.listing import place

pytestmark = pytest.mark.timeout(30)

KEY = "test-key"
RUNS = [synthetic.run_id_for(i, "tests") for i in range(60)]
WITH_FEEDBACK = [r for r in RUNS if synthetic.feedback_for_run(r)]
WITHOUT_FEEDBACK = [r for r in RUNS if not synthetic.feedback_for_run(r)]


@pytest.fixture
def fake() -> Iterator[FakeLangSmith]:
    with FakeLangSmith(KEY) as server:
        yield server


def client(fake: FakeLangSmith, key: str = KEY, *, retries: bool = False) -> langsmith.Client:
    # Without retries, an injected error surfaces at once instead of after urllib3's backoff.
    retry = None if retries else urllib3.util.Retry(total=0)
    return langsmith.Client(api_url=fake.url, api_key=key, auto_batch_tracing=False, retry_config=retry)


def raw(fake: FakeLangSmith, key: str = KEY, **params: object) -> requests.Response:
    params.setdefault("limit", 100)
    params.setdefault("offset", 0)
    return requests.get(f"{fake.url}/feedback", params=params, headers={"x-api-key": key}, timeout=5)


def records(run_id: str, n: int, key: str = "final_verdict") -> list[dict]:
    """``n`` API-shaped records for ``run_id`` with distinct ids."""
    template = synthetic.feedback_for_run(WITH_FEEDBACK[0])[0]
    return [
        {**template, "id": synthetic.run_id_for(i, run_id), "run_id": run_id, "trace_id": run_id, "key": key}
        for i in range(n)
    ]


# synthetic


def test_feedback_for_run_is_deterministic_and_about_one_third() -> None:
    ids = [synthetic.run_id_for(i) for i in range(3000)]
    assert ids == [synthetic.run_id_for(i) for i in range(3000)]
    assert len(set(ids)) == 3000
    lists = [synthetic.feedback_for_run(r) for r in ids]
    assert lists == [synthetic.feedback_for_run(r) for r in ids]
    share = sum(1 for fb in lists if fb) / len(ids)
    assert 0.25 <= share <= 0.42
    sizes = Counter(len(fb) for fb in lists)
    assert set(sizes) <= {0, 1, 2, 3} and sizes[1] > sizes[2] + sizes[3] > 0
    for run_id, fb in zip(ids, lists, strict=True):
        assert len({r["created_at"] for r in fb}) == len(fb)
        assert len({r["id"] for r in fb}) == len(fb)
        for i, rec in enumerate(fb):
            assert rec["run_id"] == rec["trace_id"] == run_id
            assert rec["key"] == "final_verdict" or i > 0
            assert rec["score"] == (1.0 if rec["value"]["verdict"] == "PASS" else 0.0)
            assert rec["comment"] == f"Human verdict: {rec['value']['verdict']}"
            assert rec["created_at"].startswith("2026-") and rec["created_at"].endswith("Z")


def test_feedback_stats_counts_per_key_and_loses_values() -> None:
    run_id = next(r for r in (synthetic.run_id_for(i) for i in range(3000)) if len(synthetic.feedback_for_run(r)) == 3)
    fb = synthetic.feedback_for_run(run_id)
    stats = synthetic.feedback_stats_for(fb + [fb[0]])
    assert stats["final_verdict"]["n"] == 2
    assert {k: v["n"] for k, v in stats.items() if k != "final_verdict"} == {r["key"]: 1 for r in fb[1:]}
    for entry in stats.values():
        assert entry["values"] == {}
        assert entry["sources"] == ['{"type":"api","metadata":{}}'] * entry["n"]
        assert len(entry["comments"]) == entry["n"]
    assert synthetic.feedback_stats_for([]) == {}


def test_run_document_has_stats_no_records_and_requested_size() -> None:
    run_id = WITH_FEEDBACK[0]
    doc = synthetic.run_document(run_id, run_id, "proj", dt.date(2026, 3, 1), size_bytes=50_000)
    assert "feedback_records" not in doc
    assert doc["feedback_stats"] == synthetic.feedback_stats_for(synthetic.feedback_for_run(run_id))
    assert doc["run_date"] == "2026-03-01" and doc["project"] == "proj"
    assert abs(len(json.dumps(doc)) - 50_000) < 100
    assert doc == synthetic.run_document(run_id, run_id, "proj", dt.date(2026, 3, 1), size_bytes=50_000)


# the real client against the fake


def test_list_feedback_returns_the_synthetic_records(fake: FakeLangSmith) -> None:
    c = client(fake)
    assert c.info.version == "0.0-fake"
    got = [str(f.id) for f in c.list_feedback(run_ids=RUNS)]
    assert got == [r["id"] for run in RUNS for r in synthetic.feedback_for_run(run)]
    assert list(c.list_feedback(run_ids=WITHOUT_FEEDBACK)) == []
    (req,) = [r for r in fake.feedback_requests() if r.query["run"] == RUNS]
    assert req.headers["x-api-key"] == KEY and req.query["limit"] == ["100"] and req.status == 200


def test_key_filter(fake: FakeLangSmith) -> None:
    fake.set_feedback(RUNS[0], records(RUNS[0], 2, "correctness") + records(RUNS[1], 1))
    got = list(client(fake).list_feedback(run_ids=[RUNS[0]], feedback_key=["correctness"]))
    assert [f.key for f in got] == ["correctness", "correctness"]
    assert fake.feedback_requests()[-1].query["key"] == ["correctness"]


def test_paging_by_offset_until_a_short_page(fake: FakeLangSmith) -> None:
    a, b = WITHOUT_FEEDBACK[:2]
    fake.set_feedback(a, records(a, 3))
    fake.set_feedback(b, records(b, 2))
    c = client(fake)
    # list_feedback(limit=2) would stop after 2 items; the pager is what it uses underneath.
    got = list(c._get_paginated_list("/feedback", params={"run": [a, b], "limit": 2}))
    assert [r["id"] for r in got] == [r["id"] for r in records(a, 3) + records(b, 2)]
    assert [(r.query["offset"], r.query["limit"]) for r in fake.feedback_requests()] == [
        (["0"], ["2"]),
        (["2"], ["2"]),
        (["4"], ["2"]),
    ]


def test_wrong_key_is_401(fake: FakeLangSmith) -> None:
    with pytest.raises(ls_utils.LangSmithAuthError):
        list(client(fake, "wrong").list_feedback(run_ids=RUNS[:3]))
    resp = raw(fake, "wrong", run=RUNS[:3])
    assert resp.status_code == 401 and resp.json() == {"detail": "Invalid token"}
    assert requests.get(f"{fake.url}/feedback", params={"run": RUNS[0]}, timeout=5).status_code == 401


@pytest.mark.parametrize(
    "params",
    [
        {"run": ["not-a-uuid"]},
        {"run": [RUNS[0]], "limit": 0},
        {"run": [RUNS[0]], "limit": 101},
        {"run": [RUNS[0]], "limit": "x"},
        {"run": [RUNS[0]], "offset": -1},
    ],
)
def test_invalid_parameters_are_422(fake: FakeLangSmith, params: dict) -> None:
    resp = raw(fake, **params)
    assert resp.status_code == 422 and "detail" in resp.json()


def test_non_uuid_run_through_the_client_fails(fake: FakeLangSmith) -> None:
    with pytest.raises(ls_utils.LangSmithError, match="422"):
        list(client(fake).list_feedback(run_ids=[RUNS[0], "nope"]))


def test_poison_fails_only_requests_that_contain_it(fake: FakeLangSmith) -> None:
    bad = WITH_FEEDBACK[0]
    fake.poison(bad)
    assert raw(fake, run=[RUNS[-1], bad]).status_code == 500
    assert raw(fake, run=[r for r in RUNS if r != bad]).status_code == 200
    with pytest.raises(ls_utils.LangSmithAPIError):
        list(client(fake).list_feedback(run_ids=[bad]))
    assert list(client(fake).list_feedback(run_ids=WITH_FEEDBACK[1:3]))


def test_empty_all(fake: FakeLangSmith) -> None:
    fake.empty_all = True
    fake.stray_records(records(RUNS[0], 1))
    assert list(client(fake).list_feedback(run_ids=WITH_FEEDBACK)) == []
    assert raw(fake, run=WITH_FEEDBACK).json() == []


def test_fail_next_with_retry_after(fake: FakeLangSmith) -> None:
    fake.fail_next(429, retry_after="7", times=2)
    resp = raw(fake, run=RUNS[:2])
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "7"
    with pytest.raises(ls_utils.LangSmithRateLimitError):
        list(client(fake).list_feedback(run_ids=RUNS[:2]))
    assert raw(fake, run=RUNS[:2]).status_code == 200
    fake.fail_next(503, body='{"detail": "maintenance"}')
    resp = raw(fake, run=RUNS[:2])
    assert resp.status_code == 503 and resp.json() == {"detail": "maintenance"} and "Retry-After" not in resp.headers


def test_default_client_retries_5xx_through_urllib3(fake: FakeLangSmith) -> None:
    # Why backfill.source sets Retry(total=0): the SDK silently multiplies requests.
    fake.fail_next(503)
    assert len(list(client(fake, retries=True).list_feedback(run_ids=WITH_FEEDBACK[:2]))) >= 2
    assert [r.status for r in fake.feedback_requests()] == [503, 200]


def test_stray_records_only_on_the_first_page(fake: FakeLangSmith) -> None:
    stray = records(WITHOUT_FEEDBACK[0], 1)
    fake.stray_records(stray)
    first = raw(fake, run=WITH_FEEDBACK[:3], limit=2).json()
    assert first[-1] == stray[0] and len(first) == 3
    assert stray[0]["id"] not in {r["id"] for r in raw(fake, run=WITH_FEEDBACK[:3], limit=2, offset=2).json()}


def test_duplicate_across_pages(fake: FakeLangSmith) -> None:
    a = WITHOUT_FEEDBACK[0]
    fake.set_feedback(a, records(a, 5))
    fake.duplicate_across_pages()
    pages = [raw(fake, run=[a], limit=2, offset=o).json() for o in (0, 2, 4, 6, 8)]
    assert all(later[0] == earlier[-1] for earlier, later in zip(pages, pages[1:], strict=False))
    assert [len(p) for p in pages] == [2, 2, 2, 2, 1]
    # Through the client: every record arrives, the page boundaries twice.
    got = [r["id"] for r in client(fake)._get_paginated_list("/feedback", params={"run": [a], "limit": 2})]
    assert Counter(got) == Counter(r["id"] for r in records(a, 5)) + Counter(r["id"] for r in records(a, 5)[1:])
    fake.duplicate_across_pages(False)
    assert raw(fake, run=[a], limit=2, offset=2).json()[0]["id"] == records(a, 5)[2]["id"]


def test_truncate_next_gives_invalid_json(fake: FakeLangSmith) -> None:
    fake.truncate_next()
    resp = raw(fake, run=WITH_FEEDBACK[:3])
    assert resp.status_code == 200
    with pytest.raises(ValueError):
        resp.json()
    assert raw(fake, run=WITHOUT_FEEDBACK[:1]).json() == []


def test_reset_next_is_a_connection_error(fake: FakeLangSmith) -> None:
    fake.reset_next()
    with pytest.raises(requests.ConnectionError):
        raw(fake, run=RUNS[:2])
    assert fake.feedback_requests()[-1].status is None
    fake.reset_next()
    with pytest.raises(ls_utils.LangSmithConnectionError):
        list(client(fake).list_feedback(run_ids=RUNS[:2]))
    assert raw(fake, run=RUNS[:2]).status_code == 200


def test_stall_next_triggers_read_timeout(fake: FakeLangSmith) -> None:
    fake.stall_next(2.0)
    with pytest.raises(requests.ReadTimeout):
        requests.get(f"{fake.url}/feedback", params={"run": RUNS[0]}, headers={"x-api-key": KEY}, timeout=0.2)
    assert raw(fake, run=RUNS[:1]).status_code == 200


def test_odd_records_survive_exactly(fake: FakeLangSmith) -> None:
    run_id = WITHOUT_FEEDBACK[0]
    odd = {
        **records(run_id, 1)[0],
        "created_at": None,
        "future_field": {"nested": [1, None, "x"]},
        "comment": "nul \u0000 inside",
        "value": {"blob": "z" * 200_000},
    }
    fake.set_feedback(run_id, [odd])
    assert raw(fake, run=[run_id]).json() == [odd]


def test_info_latency_unknown_path_and_concurrency() -> None:
    with FakeLangSmith(KEY, latency_s=0.05) as fake:
        assert requests.get(f"{fake.url}/info", timeout=5).json()["version"] == "0.0-fake"
        assert requests.get(f"{fake.url}/nope", timeout=5).status_code == 404
        assert requests.post(f"{fake.url}/feedback", json={}, timeout=5).status_code == 405
        results: list[int] = []

        def worker(i: int) -> None:
            results.append(raw(fake, run=RUNS[i : i + 5]).status_code)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [200] * 40 and len(fake.feedback_requests()) == 40
        url = fake.url
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/info", timeout=2)


def test_command_line_runs_until_sigterm() -> None:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "backfill.sandbox.fake_langsmith", "--port", "0", "--api-key", "K"],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("fake LangSmith listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        assert requests.get(f"{url}/feedback", params={"run": RUNS[0]}, headers={"x-api-key": "K"}, timeout=5).ok
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()


# incident modes (issue 11)


def test_outage_for_n_requests_after_some(fake: FakeLangSmith) -> None:
    fake.outage(requests=3, status=503, after=2)
    assert [raw(fake, run=RUNS[0]).status_code for _ in range(7)] == [200, 200, 503, 503, 503, 200, 200]


def test_outage_for_seconds_then_end_windows(fake: FakeLangSmith) -> None:
    fake.outage(600.0)
    assert fake.window_started_at() is None  # starts with the next request
    assert [raw(fake, run=RUNS[0]).status_code for _ in range(3)] == [500] * 3
    assert fake.window_started_at() is not None
    fake.end_windows()
    assert raw(fake, run=RUNS[0]).status_code == 200


def test_outage_ends_after_its_seconds(fake: FakeLangSmith) -> None:
    fake.outage(0.3)
    assert raw(fake, run=RUNS[0]).status_code == 500
    started = fake.window_started_at()
    assert started is not None
    while time.monotonic() < started + 0.3:
        time.sleep(0.05)
    assert raw(fake, run=RUNS[0]).status_code == 200


def test_rate_limit_window_without_and_with_retry_after(fake: FakeLangSmith) -> None:
    fake.rate_limit_window(600.0)
    answer = raw(fake, run=RUNS[0])
    assert answer.status_code == 429 and "Retry-After" not in answer.headers
    fake.end_windows()
    fake.rate_limit_window(600.0, retry_after="7")
    answer = raw(fake, run=RUNS[0])
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "7"


def test_ignore_offset_serves_the_first_page_again(fake: FakeLangSmith) -> None:
    run = WITH_FEEDBACK[0]
    fake.set_feedback(run, records(run, 150))
    first = raw(fake, run=run).json()
    assert len(first) == 100 and raw(fake, run=run, offset=100).json() == records(run, 150)[100:]
    fake.ignore_offset()
    assert raw(fake, run=run, offset=100).json() == first


def test_max_ids_answers_414_above_n(fake: FakeLangSmith) -> None:
    fake.max_ids(50)
    assert raw(fake, run=RUNS[:50]).status_code == 200
    assert raw(fake, run=RUNS[:51]).status_code == 414
    fake.max_ids(50, status=431)
    assert raw(fake, run=RUNS[:51]).status_code == 431
    fake.max_ids(None)
    assert raw(fake, run=RUNS[:51]).status_code == 200


def test_command_line_fault_modes() -> None:
    root = Path(__file__).resolve().parents[2]
    args = ["--outage-requests", "2", "--outage-status", "502", "--fault-after", "1", "--max-ids", "3"]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "backfill.sandbox.fake_langsmith",
            "--port",
            "0",
            "--api-key",
            "K",
            *args,
            "--ignore-offset",
        ],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip().rsplit(" ", 1)[1]

        def get(runs: list[str], offset: int = 0) -> requests.Response:
            params = {"run": runs, "limit": 100, "offset": offset}
            return requests.get(f"{url}/feedback", params=params, headers={"x-api-key": "K"}, timeout=5)

        assert [get(RUNS[:1]).status_code for _ in range(4)] == [200, 502, 502, 200]
        assert get(RUNS[:4]).status_code == 414
        assert get(WITH_FEEDBACK[:1], offset=5).json() == get(WITH_FEEDBACK[:1]).json() != []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()


# project listings (issue 17): the run catalog, session=, level, min/max_created_at, /sessions

NOW = dt.datetime(2026, 6, 15, 12, 30, tzinfo=dt.UTC)
ARCHIVE = list(traces.trace_archive(80, runs_per_trace=5, days=7, reviewed=0.6, now=NOW))
PROJ_A, PROJ_B = synthetic.session_id_for("proj-a"), synthetic.session_id_for("proj-b")


@pytest.fixture
def held() -> Iterator[FakeLangSmith]:
    """The fake holding ARCHIVE, as a trace-archive test serves it."""
    with FakeLangSmith(KEY, feedback=traces.trace_feedback(reviewed=0.6)) as server:
        server.add_runs(r.info for r in ARCHIVE)
        yield server


def served_ids(answer: Iterable[Any]) -> list[str]:
    return [str(f.id) if hasattr(f, "id") else f["id"] for f in answer]


def listing(fake: FakeLangSmith, **params: object) -> list[dict]:
    """A whole listing through raw requests of ``limit`` (default 100), page by page."""
    limit, out = int(params.pop("limit", 100)), []  # type: ignore[call-overload]
    while True:
        page = raw(fake, limit=limit, offset=len(out), **params).json()
        out += page
        if len(page) < limit:
            return out


def test_trace_archive_shape() -> None:
    assert ARCHIVE == list(traces.trace_archive(80, runs_per_trace=5, days=7, reviewed=0.6, now=NOW))
    feedback = traces.trace_feedback(reviewed=0.6)
    roots = [r for r in ARCHIVE if r.run_id == r.trace_id]
    assert len(ARCHIVE) == 400 and len(roots) == 80 and len({r.run_id for r in ARCHIVE}) == 400
    assert all(feedback(r.run_id) == [] for r in ARCHIVE if r.run_id != r.trace_id)
    reviewed = [r for r in roots if feedback(r.run_id)]
    assert 0.4 <= len(reviewed) / len(roots) <= 0.8
    assert {len(feedback(r.run_id)) for r in reviewed} <= {1, 2, 3}
    for r in ARCHIVE:
        doc = r.document
        assert (doc["run_id"], doc["trace_id"], doc["project"], doc["run_date"]) == (
            r.run_id,
            r.trace_id,
            r.project,
            r.run_date.isoformat(),
        )
        assert doc["session_id"] == r.info.session_id == synthetic.session_id_for(r.project)
        assert doc["feedback_stats"] == synthetic.feedback_stats_for(feedback(r.run_id))
        assert doc["parent_run_id"] == (None if r.run_id == r.trace_id else r.trace_id)
        assert doc["start_time"] == synthetic._iso(r.info.start_time) and r.info.project == r.project
        assert r.info.start_time <= NOW - dt.timedelta(hours=1) and r.info.start_time.date() == r.run_date
    assert {r.project for r in roots} == {"proj-a", "proj-b"}
    assert {r.run_date for r in roots if r.project == "proj-a"} == {NOW.date() - dt.timedelta(days=d) for d in range(7)}
    # the archives built before keep their bytes: no session_id unless asked
    plain = synthetic.run_document(RUNS[0], RUNS[0], "proj-a", dt.date(2026, 3, 1))
    assert "session_id" not in plain
    with_id = synthetic.run_document(RUNS[0], RUNS[0], "proj-a", dt.date(2026, 3, 1), with_session_id=True)
    assert with_id == {**plain, "session_id": PROJ_A}
    assert PROJ_A == synthetic.session_id_for("proj-a") != PROJ_B


def test_listing_is_the_union_of_the_per_run_answers(held: FakeLangSmith) -> None:
    c = client(held)
    for project, session in (("proj-a", PROJ_A), ("proj-b", PROJ_B)):
        runs = [r for r in ARCHIVE if r.project == project]
        per_run = {rec["id"]: rec for r in runs for rec in raw(held, run=[r.run_id]).json()}
        listed = listing(held, session=session, level="run")
        assert len(per_run) > 20 and {r["id"]: r for r in listed} == per_run and len(listed) == len(per_run)
        assert sorted(served_ids(c.list_feedback(session=session))) == sorted(per_run)
        starts = {r.run_id: r.info.start_time for r in runs}
        for rec in listed:
            created, modified = (dt.datetime.fromisoformat(rec[k]) for k in ("created_at", "modified_at"))
            assert rec["session_id"] == session and rec["run_id"] in starts
            assert starts[rec["run_id"]] < created <= modified <= NOW  # the horizon: latest start + 1 h
            assert rec == next(r for r in held.records_of(rec["run_id"]) if r["id"] == rec["id"])
    both = listing(held)  # no session: every cataloged project
    assert len(both) == sum(len(held.records_of(r.run_id)) for r in ARCHIVE)


def test_reviews_come_minutes_to_hours_after_the_run_and_some_days_later() -> None:
    feedback = traces.trace_feedback()
    far = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)  # a horizon that clamps nothing
    delays = [
        dt.datetime.fromisoformat(rec["created_at"]) - r.info.start_time
        for r in traces.trace_archive(400, runs_per_trace=1, now=NOW)
        for rec in place(feedback(r.run_id), r.info, far)
    ]
    assert min(delays) > dt.timedelta(0) and max(delays) > dt.timedelta(days=1)
    assert sum(d < dt.timedelta(hours=8) for d in delays) > len(delays) / 2
    info = RunInfo(RUNS[0], PROJ_A, NOW - dt.timedelta(minutes=5))
    placed = place(records(RUNS[0], 3), info, NOW)  # clamped: between the start and the horizon, in order
    created = [dt.datetime.fromisoformat(r["created_at"]) for r in placed]
    assert info.start_time < created[0] < created[1] < created[2] <= NOW
    assert all(r["session_id"] == PROJ_A and r["modified_at"] >= r["created_at"] for r in placed)


def test_runs_outside_the_catalog_are_answered_per_run_but_never_listed(held: FakeLangSmith) -> None:
    held.set_feedback(RUNS[0], records(RUNS[0], 2))
    assert len(raw(held, run=[RUNS[0]]).json()) == 2
    assert RUNS[0] not in {r["run_id"] for r in listing(held)}
    assert raw(held, run=[RUNS[0]], session=PROJ_A).json() == []
    with FakeLangSmith(KEY) as bare:  # no catalog: a request naming no run answers [] as before
        assert raw(bare).json() == [] and raw(bare, session=PROJ_A).json() == []


def test_run_and_session_and_created_at_combine_as_and(held: FakeLangSmith) -> None:
    a = next(r for r in ARCHIVE if r.project == "proj-a" and len(held.records_of(r.run_id)) >= 2)
    recs = held.records_of(a.run_id)
    assert raw(held, run=[a.run_id], session=PROJ_A).json() == recs
    assert raw(held, run=[a.run_id], session=PROJ_B).json() == []
    assert raw(held, run=[a.run_id], session=[PROJ_B, PROJ_A]).json() == recs
    first = recs[0]["created_at"]
    assert raw(held, run=[a.run_id], max_created_at=first).json() == recs[:1]
    assert raw(held, run=[a.run_id], min_created_at=recs[1]["created_at"]).json() == recs[1:]
    assert raw(held, session=PROJ_A, min_created_at=first, max_created_at=first).json() == recs[:1]
    # an override of a cataloged run is what its listing serves too
    held.set_feedback(a.run_id, recs[:1])
    assert recs[1]["id"] not in served_ids(listing(held, session=PROJ_A))


def test_listing_order_newest_first_ties_by_id_and_stable(held: FakeLangSmith) -> None:
    a, b = [r.run_id for r in ARCHIVE if r.project == "proj-a" and r.run_id == r.trace_id][:2]
    tie = "2026-06-10T10:00:00.000000Z"
    held.set_feedback(a, [{**records(a, 1)[0], "id": "00000000-0000-4000-8000-00000000000a", "created_at": tie}])
    held.set_feedback(b, [{**records(b, 1)[0], "id": "00000000-0000-4000-8000-00000000000b", "created_at": tie}])
    full = listing(held, session=PROJ_A)
    keys = [(dt.datetime.fromisoformat(r["created_at"]), r["id"]) for r in full]
    assert keys == sorted(keys, reverse=True)
    tied = [r["id"] for r in full if r["created_at"] == tie]
    assert tied == ["00000000-0000-4000-8000-00000000000b", "00000000-0000-4000-8000-00000000000a"]
    assert listing(held, session=PROJ_A, limit=7) == full == listing(held, session=PROJ_A)
    assert served_ids(client(held).list_feedback(session=PROJ_A)) == [r["id"] for r in full]


def test_created_at_slices_partition_the_listing(held: FakeLangSmith) -> None:
    full = listing(held, session=PROJ_B)
    instants = sorted(dt.datetime.fromisoformat(r["created_at"]) for r in full)
    cuts = [instants[0], instants[len(instants) // 3], instants[len(instants) // 2], instants[-1]]
    cuts += [cuts[-1] + dt.timedelta(microseconds=1)]
    sliced: list[dict] = []
    for lo, hi in zip(cuts, cuts[1:], strict=False):  # [lo, hi): max is inclusive, so hi - 1 us
        top = (hi - dt.timedelta(microseconds=1)).isoformat()
        sliced += listing(held, session=PROJ_B, min_created_at=lo.isoformat(), max_created_at=top, limit=9)
    assert sorted(r["id"] for r in sliced) == sorted(r["id"] for r in full) and len(sliced) == len(full)
    # with Z, with an offset, naive (UTC), with a space: the same instant
    at = instants[len(instants) // 2]
    forms = [at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), at.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()]
    forms += [at.replace(tzinfo=None).isoformat(), str(at)]
    assert len({len(listing(held, session=PROJ_B, min_created_at=f)) for f in forms}) == 1


def test_level_run_session_or_both(held: FakeLangSmith) -> None:
    template = records(RUNS[0], 1)[0]
    session_level = [{**template, "id": synthetic.run_id_for(1, "session-level"), "run_id": None, "trace_id": None}]
    session_level[0] |= {"session_id": PROJ_A, "created_at": "2026-06-14T09:00:00.000000Z"}
    held.add_session_feedback(PROJ_A, session_level)
    runs_only = listing(held, session=PROJ_A, level="run")
    assert all(r["run_id"] for r in runs_only)
    assert listing(held, session=PROJ_A, level="session") == session_level
    assert sorted(served_ids(listing(held, session=PROJ_A))) == sorted(served_ids(runs_only + session_level))
    assert listing(held, session=PROJ_B, level="session") == []


@pytest.mark.parametrize(
    "params",
    [
        {"session": "not-a-uuid"},
        {"session": PROJ_A, "level": "trace"},
        {"session": PROJ_A, "min_created_at": "yesterday"},
        {"max_created_at": "2026-13-01T00:00:00Z"},
    ],
)
def test_listing_parameters_are_422(held: FakeLangSmith, params: dict) -> None:
    resp = raw(held, **params)
    assert resp.status_code == 422 and resp.json()["detail"][0]["loc"][0] == "query"


def test_sessions_resolve_a_project_by_name_and_id(held: FakeLangSmith) -> None:
    c = client(held)
    project = c.read_project(project_name="proj-a")
    assert str(project.id) == PROJ_A and project.name == "proj-a"
    req = [r for r in held.requests if r.path == "/sessions"][-1]
    assert req.query["name"] == ["proj-a"] and req.query["limit"] == ["1"]
    assert c.read_project(project_id=PROJ_B).name == "proj-b"
    assert sorted(p.name for p in c.list_projects()) == ["proj-a", "proj-b"]
    assert [p.name for p in c.list_projects(name_contains="-b")] == ["proj-b"]
    with pytest.raises(ls_utils.LangSmithNotFoundError):
        c.read_project(project_name="proj-z")
    with pytest.raises(ls_utils.LangSmithNotFoundError):
        c.read_project(project_id=synthetic.session_id_for("proj-z"))
    assert requests.get(f"{held.url}/sessions", params={"name": "proj-a"}, timeout=5).status_code == 401
    held.add_project("proj-empty", synthetic.session_id_for("proj-empty"))
    assert str(c.read_project(project_name="proj-empty").id) == synthetic.session_id_for("proj-empty")
    assert held.feedback_requests() == []


def test_listing_misses_drops_every_kth_record_of_a_listing_only(held: FakeLangSmith) -> None:
    full = listing(held, session=PROJ_A)
    held.listing_misses(7)
    missed = listing(held, session=PROJ_A, limit=10)
    assert missed == [r for i, r in enumerate(full, 1) if i % 7] and len(full) - len(missed) == len(full) // 7
    assert served_ids(client(held).list_feedback(session=PROJ_A)) == served_ids(missed)
    lost = next(r for i, r in enumerate(full, 1) if i % 7 == 0)
    assert lost in raw(held, run=[lost["run_id"]]).json()  # per-run answers stay complete
    assert lost in raw(held, run=[lost["run_id"]], session=PROJ_A).json()
    held.listing_misses(None)
    assert listing(held, session=PROJ_A) == full


def test_faults_apply_to_listings(held: FakeLangSmith) -> None:
    full = listing(held, session=PROJ_A)
    held.ignore_offset()
    assert raw(held, session=PROJ_A, limit=5, offset=5).json() == full[:5]
    held.ignore_offset(False)
    held.poison(full[3]["run_id"])
    assert raw(held, session=PROJ_A).status_code == 500
    assert raw(held, session=PROJ_B).status_code == 200  # another project's listing does not carry it
    oldest = min(dt.datetime.fromisoformat(r["created_at"]) for r in held.records_of(full[3]["run_id"]))
    before = (oldest - dt.timedelta(microseconds=1)).isoformat()
    assert raw(held, session=PROJ_A, max_created_at=before).status_code == 200  # a slice without its records
    held.outage(requests=1, status=503)
    assert raw(held, session=PROJ_B).status_code == 503
    assert raw(held, KEY + "x", session=PROJ_B).status_code == 401
    held.max_ids(0)  # counts the runs named: a listing names none
    assert raw(held, session=PROJ_B).status_code == 200
    held.truncate_next()
    with pytest.raises(json.JSONDecodeError):
        raw(held, session=PROJ_B).json()
    held.reset_next()
    with pytest.raises(requests.ConnectionError):
        raw(held, session=PROJ_B)
    b = listing(held, session=PROJ_B)
    stray = records(RUNS[0], 1)
    held.stray_records(stray)
    assert raw(held, session=PROJ_B, limit=5).json() == b[:5] + stray
    held.stray_records([])
    held.duplicate_across_pages()
    assert raw(held, session=PROJ_B, limit=5, offset=5).json() == b[4:9]
    held.empty_all = True
    assert raw(held, session=PROJ_B).json() == []


def test_command_line_serves_a_trace_archive_and_listing_misses() -> None:
    root = Path(__file__).resolve().parents[2]
    args = ["--traces", "80", "--runs-per-trace", "5", "--days", "7", "--reviewed", "0.6"]
    args += ["--now", NOW.isoformat(), "--listing-misses", "3"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "backfill.sandbox.fake_langsmith", "--port", "0", "--api-key", "K", *args],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip().rsplit(" ", 1)[1]
        c = langsmith.Client(api_url=url, api_key="K", auto_batch_tracing=False)
        assert str(c.read_project(project_name="proj-b").id) == PROJ_B
        runs = [r.run_id for r in ARCHIVE if r.project == "proj-b"]
        per_run = [f for i in range(0, len(runs), 50) for f in c.list_feedback(run_ids=runs[i : i + 50])]
        listed = list(c.list_feedback(session=PROJ_B, level="run"))
        assert per_run and len(listed) == len(per_run) - len(per_run) // 3
        assert {f.id for f in listed} < {f.id for f in per_run}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
