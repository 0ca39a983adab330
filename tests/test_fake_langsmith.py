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
from collections.abc import Iterator
from pathlib import Path

import langsmith
import pytest
import requests
import urllib3
from langsmith import utils as ls_utils

from backfill.sandbox import synthetic
from backfill.sandbox.fake_langsmith import FakeLangSmith

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
    root = Path(__file__).resolve().parents[1]
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
    root = Path(__file__).resolve().parents[1]
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
