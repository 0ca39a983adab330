"""What production does to `backfill run`, injected through the fake LangSmith over HTTP.

Every test ends with `assert_exact`: each row marked ``done`` holds exactly the records
the API serves for it (sorted, each once) and the rest of its document unchanged; every
other row is byte-for-byte as before; no checkpoint row names a run that is not in
``runs``; and the invocations' figures add up to the checkpoint's (nothing counted twice).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

import backfill
from backfill import cli
from backfill.config import Database, LangSmith, Window
from backfill.domain.options import RunOptions
from backfill.errors import AlreadyRunning, ApiUnavailable, DatabaseError, WrongWorkspace
from backfill.langsmith import transport as source_module
from backfill.report import status_json
from backfill.report import text as report_text
from backfill.runner.summary import RunSummary
from backfill.sandbox import synthetic
from backfill.sandbox.fake_langsmith import FakeLangSmith, RequestLog

from ..helpers import TODAY, canonical, insert, invocations, raw_rows, rows, seed, status, wait_for

pytestmark = pytest.mark.timeout(60)

KEY = "lsv2_faults_key_0123456789"

#: Figures of the issue-11 scenarios (requests, seconds waited, rows marked), printed at the
#: end of the session with -s: the source of docs/reliability.md's figures.
FIGURES: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def _print_figures() -> Iterator[None]:
    yield
    for name, text in FIGURES.items():
        print(f"\nFIGURE {name}: {text}")


@pytest.fixture
def fake() -> Iterator[FakeLangSmith]:
    with FakeLangSmith(api_key=KEY) as server:
        yield server


def go(dsn: str, fake: FakeLangSmith, **opts: Any) -> RunSummary:
    """`backfill run` through the Python API, as tests/integration/test_run.py's ``go``."""
    opts.setdefault("delay_ms", 0)
    opts.setdefault("backoff_s", 0.001)
    window = opts.pop("window", None) or Window.parse("14d")
    timeout_s = opts.pop("timeout_s", 5.0)
    return backfill.run(
        Database(dsn), LangSmith(api_key=KEY, endpoint=fake.url, timeout_s=timeout_s), RunOptions(window=window, **opts)
    )


# the data the fake serves, and what must end up in the archive


def make_records(run_id: str, n: int, **fields: Any) -> list[dict[str, Any]]:
    """``n`` API-shaped records of ``run_id``: distinct ids, increasing created_at."""
    base = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    return [
        {
            "id": str(uuid.UUID(int=uuid.UUID(run_id).int ^ (i + 1))),
            "run_id": run_id,
            "trace_id": run_id,
            "key": "final_verdict" if i == 0 else f"k{i}",
            "score": 1.0,
            "value": {"verdict": "PASS", "rationale": {"criteria_a": True}},
            "comment": f"record {i}",
            "correction": None,
            "feedback_source": {"type": "api", "metadata": {}, "user_id": None},
            "created_at": (base + dt.timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "modified_at": None,
            **fields,
        }
        for i in range(n)
    ]


def add_run(
    conn: psycopg.Connection,
    fake: FakeLangSmith,
    records: list[Any],
    run_id: str | None = None,
    *,
    stats: list[dict[str, Any]] | None = None,
) -> str:
    """Archive one run whose feedback_stats count ``stats`` (default: ``records``); serve ``records``."""
    run_id = run_id or str(uuid.uuid4())
    doc = synthetic.run_document(run_id, run_id, "proj-a", TODAY)
    counted = stats if stats is not None else [r for r in records if isinstance(r, dict)]
    doc["feedback_stats"] = synthetic.feedback_stats_for(counted)
    insert(conn, doc)
    fake.set_feedback(run_id, records)
    return run_id


def expected(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """As the backfill must store them: every field, sorted by created_at then id."""
    return sorted(canonical(records), key=lambda r: (r.get("created_at") or "", r["id"]))


def assert_exact(
    dsn: str,
    fake: FakeLangSmith,
    before: dict[str, str],
    *,
    complete: bool = True,
    states: dict[str, tuple[str, str | None]] | None = None,
) -> dict[str, dict[str, Any]]:
    """The archive holds exactly what the API served, once, and nothing else changed.

    ``before`` is raw_rows() before the first run. ``complete``: every row is checkpointed
    done or no_feedback, except those in ``states`` (run_id -> (state, reason)).
    """
    states = states or {}
    after_raw, after, st = raw_rows(dsn), rows(dsn), status(dsn)
    assert set(after) == set(before)
    assert set(st) <= set(before), "a checkpoint row for a run that is not in the archive"
    for run_id, text in before.items():
        s = st.get(run_id)
        if s is not None and s["state"] == "done":
            want = expected(fake.records_of(run_id))
            assert want, f"{run_id} marked done, but the API serves no record for it"
            assert after[run_id]["feedback_records"] == want, run_id
            assert s["records"] == len(want)
            rest = {k: v for k, v in after[run_id].items() if k != "feedback_records"}
            assert rest == json.loads(text), f"{run_id}: more than feedback_records changed"
        else:
            assert after_raw[run_id] == text, f"{run_id} is not done but its row changed"
            if s is not None and s["state"] == "no_feedback":
                assert fake.records_of(run_id) == []
        if run_id in states:
            assert s is not None and (s["state"], s["reason"]) == states[run_id], (run_id, s)
        elif complete:
            assert s is not None and s["state"] in ("done", "no_feedback"), (run_id, s)
    inv = invocations(dsn)
    assert sum(i["records_stored"] for i in inv) == sum(s["records"] for s in st.values())
    assert sum(i["rows_examined"] for i in inv) == sum(s["attempts"] for s in st.values())
    return st


def arrivals(fake: FakeLangSmith) -> list[RequestLog]:
    """The GET /feedback requests in the order they arrived."""
    return sorted(fake.feedback_requests(), key=lambda r: r.at)


#: A run's first request is its pre-flight probe (runner.preflight: the window's newest runs whose
#: feedback_stats promise records). A test of what a batch's request meets lets it through
#: (``fake.pass_next(PROBE)``) and reads the batches' requests after it.
PROBE = 1


def batch_arrivals(fake: FakeLangSmith) -> list[RequestLog]:
    """The GET /feedback requests after the pre-flight probe, in the order they arrived."""
    got = arrivals(fake)
    assert len(got[0].query["run"]) <= 5 and got[0].status == 200  # the probe
    return got[PROBE:]


def tripwire(run_id: str, action: Callable[[], None]) -> Callable[[str], list[dict[str, Any]]]:
    """A data source for the fake that calls ``action`` (in the fake's handler thread, while
    the backfill waits for the answer) the first time ``run_id`` is asked for."""
    fired = threading.Lock()

    def feedback(asked: str) -> list[dict[str, Any]]:
        if asked == run_id and fired.acquire(blocking=False):
            action()
        return synthetic.feedback_for_run(asked)

    return feedback


# HTTP faults: each is retried or isolated, then the archive is exactly right


@pytest.mark.parametrize("times", [1, 4])
def test_429_without_retry_after_backs_off_and_completes(dsn, fake, times):
    seed(dsn, 30, days=1)
    before = raw_rows(dsn)
    fake.pass_next(PROBE)
    fake.fail_next(429, times=times)
    # the default first wait is 10 s (tests/integration/test_faults.py's 20 s window uses it); 0.05 s here
    summary = go(dsn, fake, rate_limit_first_s=0.05)
    assert summary.exit_code == 0
    got = batch_arrivals(fake)
    assert [r.status for r in got] == [429] * times + [200]
    assert summary.api_errors == times and summary.api_requests == PROBE + times + 1
    # the wait doubles with each 429 in a row, and is counted as time spent on rate limits
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    assert all(gap >= 0.05 * 2**i for i, gap in enumerate(gaps)), gaps
    assert summary.rate_limit_wait_s >= 0.05 * (2**times - 1) and summary.outage_wait_s == 0
    assert invocations(dsn)[-1]["rate_limit_wait_s"] == pytest.approx(summary.rate_limit_wait_s)
    assert_exact(dsn, fake, before)
    # the summary, and `backfill status` (text and --json), show the time waited
    assert any(line.startswith("  waited       ") and "on rate limits (429)" in line for line in summary.lines())
    report = backfill.status(Database(dsn))
    last = status_json.to_json(report)["runs"]["last"]
    assert last["rate_limit_wait_s"] == pytest.approx(summary.rate_limit_wait_s) and last["outage_wait_s"] == 0
    assert any(
        line.strip().startswith("waited ") and "on rate limits (429)" in line for line in report_text.lines(report)
    )


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_429_retry_after_is_honoured(dsn, fake, form):
    seed(dsn, 30, days=1)
    before = raw_rows(dsn)
    if form == "seconds":
        fake.fail_next(429, retry_after="1")
        not_before = None
    else:
        # an HTTP date has whole seconds: the retry must not come before that second
        wall = int(time.time()) + 2
        fake.fail_next(429, retry_after=email.utils.formatdate(wall, usegmt=True))
        not_before = wall
    offset = time.time() - time.monotonic()
    fake.pass_next(PROBE)
    summary = go(dsn, fake)
    assert summary.exit_code == 0
    refused, retry = batch_arrivals(fake)
    assert (refused.status, retry.status) == (429, 200)
    if not_before is None:
        assert retry.at - refused.at >= 1.0
    else:
        assert retry.at + offset >= not_before - 0.01  # 10 ms: two clocks' conversion
    assert_exact(dsn, fake, before)


@pytest.mark.parametrize("code", [502, 503, 504])
def test_gateway_errors_are_retried_with_backoff(dsn, fake, code):
    seed(dsn, 30, days=1)
    before = raw_rows(dsn)
    fake.pass_next(PROBE)
    fake.fail_next(code, times=4)  # max_retries is 5: the fifth attempt succeeds
    summary = go(dsn, fake)
    assert summary.exit_code == 0
    assert [r.status for r in batch_arrivals(fake)] == [code] * 4 + [200]
    assert_exact(dsn, fake, before)


def test_a_500_splits_the_batch_at_once_and_a_success_proves_the_api_healthy(dsn, fake):
    ids = seed(dsn, 30, days=1)
    before = raw_rows(dsn)
    fake.pass_next(PROBE)
    fake.fail_next(500, times=2)  # the batch, then its first half
    summary = go(dsn, fake)
    assert summary.exit_code == 0 and summary.failed == {}
    got = batch_arrivals(fake)
    # both halves are asked before either is split further: the second half's success shows
    # the API works, so the first half is split (it was a passing 500: nothing is lost)
    assert [r.status for r in got] == [500, 500, 200, 200, 200]
    assert [r.query["run"] for r in got] == [ids, ids[:15], ids[15:], ids[:7], ids[7:15]]
    assert_exact(dsn, fake, before)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_25_s_outage_of_500s_mid_run_is_waited_out_marking_nothing(dsn):
    """The issue's incident: 600 rows, every request answers 500 for 25 s from batch 4 on."""
    seed(dsn, 600, days=3)
    before = raw_rows(dsn)
    first = ids_in_walk_order(dsn)[300]
    with FakeLangSmith(KEY, feedback=tripwire(first, lambda: fake.outage(25.0))) as fake:
        summary = go(dsn, fake, backoff_s=0.5)  # the production backoff
        assert summary.exit_code == 0 and summary.failed == {}
        st = assert_exact(dsn, fake, before)
        assert {s["attempts"] for s in st.values()} == {1}  # no attempt spent on the outage
        started = fake.window_started_at()
        assert started is not None
        during = [r for r in arrivals(fake) if started <= r.at < started + 25.0]
        assert during and all(r.status == 500 for r in during)
        assert len(during) <= 40
        assert summary.outage_wait_s >= 20.0 and summary.rate_limit_wait_s == 0
        inv = invocations(dsn)[-1]
        assert inv["outage_wait_s"] == pytest.approx(summary.outage_wait_s) and inv["rows_failed"] == 0
        FIGURES["outage 25 s of 500s, waited out"] = (
            f"{summary.api_requests} requests ({len(during)} during the outage),"
            f" {summary.outage_wait_s:.1f} s waited, 0 rows marked failed"
        )


def test_an_outage_longer_than_outage_wait_stops_with_exit_1_and_the_rerun_is_exact(dsn):
    ids = seed(dsn, 60, days=1)
    before = raw_rows(dsn)
    # from batch 3 (rows 20-29) on, the API answers 503 until the test ends the incident
    with FakeLangSmith(KEY, feedback=tripwire(ids[20], lambda: fake.outage(600.0, status=503))) as fake:
        proc = start_cli(dsn, fake, "--outage-wait", "3s")
        _, err = proc.communicate(timeout=60)
        assert_one_line_error(proc, err)
        last = err.strip().splitlines()[-1]
        assert "failed" in last and "(HTTP 503)" in last and "--outage-wait 3s" in last
        assert "nothing of the current batch was marked" in last
        st = assert_exact(dsn, fake, before, complete=False)
        assert set(st) == set(ids[:30])  # batches 1-3 committed (3 answered as the outage began)
        inv = invocations(dsn)[-1]
        assert inv["outcome"] == "error" and inv["rows_failed"] == 0 and 1.0 <= inv["outage_wait_s"] <= 3.0
        started = fake.window_started_at()
        assert started is not None
        during = len([r for r in arrivals(fake) if r.at >= started])
        fake.end_windows()
        again = start_cli(dsn, fake)
        assert again.wait(30) == 0, again.stderr.read()
        assert_exact(dsn, fake, before)
        FIGURES["outage longer than --outage-wait 3s"] = (
            f"{during} requests during the outage, {inv['outage_wait_s']:.1f} s waited, exit 1,"
            " 0 rows marked; the re-run completes"
        )


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigterm_during_an_outage_wait_stops_at_once_marking_nothing(dsn, fake):
    seed(dsn, 30, days=1)
    before = raw_rows(dsn)
    fake.outage(600.0, status=503)
    proc = start_cli(dsn, fake)
    # 5 attempts, then probes; after the 7th request (the 2nd probe) the backoff is 16-32 s
    wait_for(lambda: len(fake.feedback_requests()) >= 7, 60, "the outage backoff to reach its 7th request")  # 12-24 s
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert time.monotonic() - sent < 10.0  # the backoff in progress was cut short, not served
    assert "interrupted" in err and "Traceback" not in err
    assert status(dsn) == {} and raw_rows(dsn) == before
    assert invocations(dsn)[-1]["outcome"] == "interrupted"


def test_an_outage_of_503s_from_the_start_is_waited_out(dsn, fake):
    seed(dsn, 30, days=1)
    before = raw_rows(dsn)
    fake.outage(requests=12, status=503)
    summary = go(dsn, fake)
    assert summary.exit_code == 0 and summary.failed == {}
    got = arrivals(fake)
    # the last outage probe, the pre-flight probe asked again, then the batch
    assert [r.status for r in got] == [503] * 12 + [200, 200, 200]
    # 5 attempts of the run's first request (its pre-flight probe), then outage probes naming
    # one random run id (no run known good yet)
    assert all(len(r.query["run"]) == 1 and r.query["limit"] == ["1"] for r in got[5:13])
    assert summary.outage_wait_s > 0
    assert_exact(dsn, fake, before)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_20_s_window_of_429_without_retry_after_is_waited_out(dsn):
    """LangSmith's load balancer: 429 to everything for 20 s, no Retry-After, mid-run."""
    seed(dsn, 400, days=1)
    before = raw_rows(dsn)
    first = ids_in_walk_order(dsn)[100]
    with FakeLangSmith(KEY, feedback=tripwire(first, lambda: fake.rate_limit_window(20.0))) as fake:
        summary = go(dsn, fake, batch_size=20)  # the default waits: 10 s, 20 s, 40 s, capped at 60 s
        assert summary.exit_code == 0 and summary.failed == {}
        st = assert_exact(dsn, fake, before)
        assert {s["attempts"] for s in st.values()} == {1}
        started = fake.window_started_at()
        assert started is not None
        got = arrivals(fake)
        inside = [r for r in got if started <= r.at < started + 20.0]
        assert inside and all(r.status == 429 for r in inside)
        assert len(inside) <= 30
        # 10 s, then 20 s: the retry after the window's end is answered
        assert summary.rate_limit_wait_s >= 20.0 and summary.outage_wait_s == 0
        assert invocations(dsn)[-1]["rate_limit_wait_s"] == pytest.approx(summary.rate_limit_wait_s)
        # after the 429s the pacing widened (0.5 s, then 1 s): the next requests keep >= 1 s apart
        after = [r for r in got if r.at >= started + 20.0]
        assert after[0].status == 200
        gaps = [b.at - a.at for a, b in itertools.pairwise(after[:10])]
        assert min(gaps) >= 1.0, gaps
        FIGURES["429 window of 20 s without Retry-After"] = (
            f"{summary.api_requests} requests ({len(inside)} inside the window),"
            f" {summary.rate_limit_wait_s:.1f} s waited, 0 rows marked"
        )


def test_429s_for_longer_than_the_budget_end_the_run_marking_nothing(dsn, fake, monkeypatch):
    seed(dsn, 30, days=1)
    before = raw_rows(dsn)
    monkeypatch.setattr(source_module, "RATE_LIMIT_BUDGET_S", 0.3)  # 15 minutes in production
    fake.rate_limit_window(600.0)
    with pytest.raises(ApiUnavailable, match=r"kept answering 429 \(rate limited\)"):
        go(dsn, fake, rate_limit_first_s=0.05)
    assert status(dsn) == {}
    assert_exact(dsn, fake, before, complete=False)
    assert invocations(dsn)[-1]["rate_limit_wait_s"] > 0


def test_a_server_that_ignores_offset_ends_paging_and_stores_no_duplicate(dsn, fake):
    ids = seed(dsn, 20, days=1)
    big = {str(uuid.uuid4()): 70, str(uuid.uuid4()): 60, str(uuid.uuid4()): 150}
    with psycopg.connect(dsn) as conn:
        for rid, n in big.items():
            add_run(conn, fake, make_records(rid, n), rid)
    unpageable = list(big)[2]
    fake.ignore_offset()
    before = raw_rows(dsn)
    summary = go(dsn, fake, batch_size=23)
    # the first page again: no new record, so paging stops and the request is split; the
    # runs of 70 and 60 records fit in one page each; 150 records of one run cannot be paged
    assert summary.exit_code == 3 and summary.failed == {"api_error": 1}
    st = assert_exact(dsn, fake, before, states={unpageable: ("failed", "api_error")})
    assert st[unpageable]["error"] == "API error: paging did not advance"
    assert [len(rows(dsn)[r]["feedback_records"]) for r in list(big)[:2]] == [70, 60]
    assert len(st) == len(ids) + 3
    assert len(fake.feedback_requests()) <= 30
    FIGURES["offset ignored"] = (
        f"{summary.api_requests} requests, 0 s waited, 1 row marked failed (a run of 150 records:"
        " paging did not advance), no duplicate stored"
    )


def test_414_above_50_ids_lowers_the_ids_per_request(dsn, fake):
    seed(dsn, 300, days=2)
    before = raw_rows(dsn)
    fake.max_ids(50)
    summary = go(dsn, fake)  # --batch-size 100
    assert summary.exit_code == 0 and summary.failed == {}
    got = batch_arrivals(fake)  # the pre-flight probe names 5 runs
    assert [r.status for r in got].count(414) == 1  # once: the ids per request stay at 50
    assert got[0].status == 414 and len(got[0].query["run"]) == 100
    assert all(len(r.query["run"]) <= 50 for r in got[1:])
    assert_exact(dsn, fake, before)
    FIGURES["414 above 50 ids"] = f"{summary.api_requests} requests (one 414), 0 s waited, 0 rows marked"


@pytest.mark.timeout(180)
def test_one_poisoned_run_in_2400_is_isolated(dsn, fake):
    seed(dsn, 2400, days=3)
    order = ids_in_walk_order(dsn)
    culprit = order[1234]
    fake.poison(culprit)
    before = raw_rows(dsn)
    summary = go(dsn, fake)  # 24 batches of 100
    assert summary.exit_code == 3 and summary.failed == {"api_error": 1}
    assert_exact(dsn, fake, before, states={culprit: ("failed", "api_error")})
    # 23 clean batches, one request each; the culprit's batch at most 2*ceil(log2(100)) + 2
    assert summary.api_requests - 23 <= 2 * 7 + 2
    assert summary.outage_wait_s == 0
    FIGURES["one poisoned run in 2,400"] = (
        f"{summary.api_requests} requests ({summary.api_requests - 23} for its batch of 100), 0 s waited,"
        " 1 row marked failed/api_error, 2,399 exact"
    )


@pytest.mark.parametrize("where", ["session", "json"])
def test_a_type_error_in_the_fetch_path_is_an_internal_error(dsn, fake, monkeypatch, capsys, where):
    """A bug is not an API failure: one line "internal error", exit 1, nothing marked."""
    seed(dsn, 10, days=1)
    if where == "session":  # inside the SDK's request_with_retries, which wraps it in LangSmithError

        def broken(*_a: Any, **_k: Any) -> Any:
            raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

        monkeypatch.setattr(requests.Session, "request", broken)
    else:  # in our own parsing of the answer
        monkeypatch.setattr(requests.Response, "json", lambda self, **k: None.get("x"))  # type: ignore[attr-defined]
    for name, value in cli_env(dsn, fake).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["backfill", "run", "--delay-ms", "0", "--no-progress"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    kind = "TypeError" if where == "session" else "AttributeError"
    assert last.startswith(f"backfill: internal error: {kind}: ") and "--debug" in last, err
    assert "Traceback" not in err and "unavailable" not in err and "failed" not in err
    assert status(dsn) == {}
    assert len(fake.feedback_requests()) == (0 if where == "session" else 1)  # never retried
    monkeypatch.setattr(sys, "argv", ["backfill", "--debug", "run", "--delay-ms", "0", "--no-progress"])
    with pytest.raises(TypeError if where == "session" else AttributeError):
        cli.main()


def ids_in_walk_order(dsn: str) -> list[str]:
    """run_ids in the order `backfill run` walks them: by run_date, then id."""
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT run_id FROM runs ORDER BY run_date, id").fetchall()]


def test_read_timeouts_are_retried(dsn, fake):
    seed(dsn, 30, days=1)
    before = raw_rows(dsn)
    fake.pass_next(PROBE)
    fake.stall_next(5.0, times=2)  # the stalled answers are abandoned after timeout_s
    started = time.monotonic()
    summary = go(dsn, fake, timeout_s=0.3)
    assert time.monotonic() - started < 4.0
    assert summary.exit_code == 0 and summary.api_errors == 2 and summary.api_requests == PROBE + 3
    assert_exact(dsn, fake, before)


def test_connection_resets_are_retried(dsn, fake):
    seed(dsn, 30, days=1)
    before = raw_rows(dsn)
    fake.pass_next(PROBE)
    fake.reset_next(2)
    summary = go(dsn, fake)
    assert summary.exit_code == 0 and summary.api_errors == 2
    assert [r.status for r in batch_arrivals(fake)] == [None, None, 200]
    assert_exact(dsn, fake, before)


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(lambda f: f.truncate_next(1), id="truncated-json"),
        pytest.param(lambda f: f.fail_next(200, body='{"detail": "not a list"}'), id="object-not-array"),
        pytest.param(lambda f: f.fail_next(200, body="<html>gateway</html>"), id="html"),
        pytest.param(lambda f: f.fail_next(200, body=""), id="empty-body"),
    ],
)
def test_a_malformed_answer_is_retried(dsn, fake, fault):
    seed(dsn, 30, days=1)
    before = raw_rows(dsn)
    fake.pass_next(PROBE)
    fault(fake)
    summary = go(dsn, fake)
    assert summary.exit_code == 0 and summary.api_errors == 1 and summary.api_requests == PROBE + 2
    assert_exact(dsn, fake, before)


def test_malformed_answers_every_time_split_the_batch_and_lose_nothing(dsn, fake):
    seed(dsn, 30, days=1)
    before = raw_rows(dsn)
    fake.pass_next(PROBE)
    fake.truncate_next(5)  # max_retries malformed answers: the request is refused as a whole
    summary = go(dsn, fake)
    assert summary.exit_code == 0 and summary.api_errors == 5
    assert_exact(dsn, fake, before)


def test_a_record_that_is_not_an_object_fails_only_its_run(dsn, fake):
    ids = seed(dsn, 12, days=1)
    with psycopg.connect(dsn) as conn:
        culprit = add_run(conn, fake, ["not a record"])
    before = raw_rows(dsn)
    summary = go(dsn, fake)
    assert summary.exit_code == 3 and summary.failed == {"api_error": 1}
    st = assert_exact(dsn, fake, before, states={culprit: ("failed", "api_error")})
    assert st[culprit]["error"] == "API error: malformed answer: a feedback record is not a JSON object"
    assert len(st) == len(ids) + 1


# paging and the data the API sends back


def test_a_page_of_exactly_limit_records_is_followed_by_an_empty_page(dsn, fake):
    run_id = str(uuid.uuid4())
    with psycopg.connect(dsn) as conn:
        add_run(conn, fake, make_records(run_id, 100), run_id)
    before = raw_rows(dsn)
    summary = go(dsn, fake)
    assert summary.exit_code == 0 and summary.records == 100
    got = arrivals(fake)
    # the pre-flight probe asks the window's newest promising run (this one) and pages as the batch does
    assert [(r.query["run"], r.query["offset"], r.query["limit"]) for r in got] == 2 * [
        ([run_id], ["0"], ["100"]),
        ([run_id], ["100"], ["100"]),
    ]
    assert_exact(dsn, fake, before)
    assert len(rows(dsn)[run_id]["feedback_records"]) == 100


def test_records_of_runs_not_asked_are_dropped(dsn, fake):
    ids = seed(dsn, 40, days=1)
    later = next(r for r in ids[20:] if synthetic.feedback_for_run(r))
    stray = [
        *make_records(str(uuid.uuid4()), 2),  # a run nobody has
        {**make_records(str(uuid.uuid4()), 1)[0], "run_id": None},  # a record without run
        synthetic.feedback_for_run(later)[0],  # a run of the next batch: its own record, not a copy
    ]
    fake.stray_records(stray)
    before = raw_rows(dsn)
    summary = go(dsn, fake, batch_size=20)
    assert summary.exit_code == 0
    assert len(fake.feedback_requests()) == PROBE + 2
    # on the first page of each of the 2 batches' requests (the pre-flight probe's are not the run's)
    assert summary.dropped == 2 * len(stray)
    assert_exact(dsn, fake, before)


def test_duplicates_across_pages_are_stored_once(dsn, fake):
    ids = seed(dsn, 18, days=1)
    big = {str(uuid.uuid4()): 150, str(uuid.uuid4()): 70}
    with psycopg.connect(dsn) as conn:
        for rid, n in big.items():
            add_run(conn, fake, make_records(rid, n), rid)
    fake.duplicate_across_pages()
    before = raw_rows(dsn)
    total = 220 + sum(len(synthetic.feedback_for_run(r)) for r in ids)
    summary = go(dsn, fake)  # one batch of 20 runs, in requests packed by their feedback_stats
    assert summary.exit_code == 0 and summary.records == total
    # page k of a request holds its records [99k, 99k + 100): the client pages on until a short page
    offsets = [int(r.query["offset"][0]) for r in arrivals(fake)]
    starts = [i for i, o in enumerate(offsets) if o == 0]
    chains = [offsets[a:b] for a, b in zip(starts, [*starts[1:], len(offsets)], strict=True)]
    assert all(chain == [100 * k for k in range(len(chain))] for chain in chains)
    _probe, *batches = chains  # the pre-flight probe's pages first (what it drops is not the run's)
    assert sum(map(len, batches)) > len(batches)  # the run of 150 records needed a later page
    assert summary.dropped == sum(len(c) - 1 for c in batches)  # one repeat at the head of each later page
    assert_exact(dsn, fake, before)
    assert [len(rows(dsn)[r]["feedback_records"]) for r in big] == [150, 70]


def test_two_poisoned_runs_in_one_batch_are_isolated(dsn, fake):
    ids = seed(dsn, 32, days=1)
    culprits = [ids[3], ids[20]]
    for c in culprits:
        fake.poison(c)
    before = raw_rows(dsn)
    summary = go(dsn, fake, batch_size=32)
    assert summary.exit_code == 3 and summary.failed == {"api_error": 2}
    assert_exact(dsn, fake, before, states={c: ("failed", "api_error") for c in culprits})
    # halving, both halves asked before either is split: the batch (1), its halves (2), both
    # refused: a probe (1); then 4 levels of two requests on each culprit's path (16), and a
    # probe where the culprit was the second of its pair (ids[3]: 1); and the pre-flight probe
    assert summary.api_requests == 1 + 2 + 1 + 16 + 1 + PROBE


def test_an_api_answering_empty_mid_run_stops_writing_nobody_off(dsn):
    ids = seed(dsn, 60, days=1)
    before = raw_rows(dsn)
    # while batch 2 is answered, the API starts answering [] to everything
    with FakeLangSmith(KEY, feedback=tripwire(ids[20], lambda: setattr(fake, "empty_all", True))) as fake:
        with pytest.raises(WrongWorkspace):
            go(dsn, fake, batch_size=20)
        st = assert_exact(dsn, fake, before, complete=False)
        assert set(st) == set(ids[:40])  # batch 3 came back empty: nothing of it was written off
        fake.empty_all = False
        go(dsn, fake, batch_size=20)
        assert_exact(dsn, fake, before)


def test_feedback_deleted_on_the_oldest_day_does_not_block_the_window(dsn, fake):
    """Runs whose feedback LangSmith no longer has are mismatches, not a wrong workspace."""
    ids = seed(dsn, 90, days=3)  # run i on TODAY - (i % 3) days: the walk starts at ids[2::3]
    gone = [r for r in ids[2::3] if synthetic.feedback_for_run(r)]
    assert len(gone) >= 3
    for rid in gone:
        fake.set_feedback(rid, [])  # deleted in LangSmith; feedback_stats still count them
    before = raw_rows(dsn)
    summary = go(dsn, fake, batch_size=30)  # the first batch is the oldest day
    assert summary.exit_code == 3 and summary.failed == {"mismatch": len(gone)}
    assert_exact(dsn, fake, before, states={r: ("failed", "mismatch") for r in gone})
    # the probe asked the window's newest runs whose feedback_stats count records, and got them
    # (as the pre-flight did before the first batch)
    newest = [r for r in ids[0::3] if synthetic.feedback_for_run(r)]
    for probe in (arrivals(fake)[0], arrivals(fake)[PROBE + 1]):
        assert len(probe.query["run"]) == 5 and set(probe.query["run"]) <= set(newest)
    assert len(fake.feedback_requests()) == PROBE + 4  # 3 batches and one probe


def test_an_api_answering_empty_for_runs_without_feedback_is_no_feedback(dsn, fake):
    """[] everywhere is only an alarm when feedback_stats promise records."""
    ids = [r for r in (synthetic.run_id_for(i, "quiet") for i in range(60)) if not synthetic.feedback_for_run(r)]
    with psycopg.connect(dsn) as conn:
        for rid in ids:
            insert(conn, synthetic.run_document(rid, rid, "proj-a", TODAY))
    before = raw_rows(dsn)
    fake.empty_all = True
    summary = go(dsn, fake)
    assert summary.exit_code == 0 and summary.no_feedback == len(ids)
    assert_exact(dsn, fake, before)


# pacing


def test_delay_ms_is_the_minimum_interval_across_pages_and_retries(dsn, fake):
    ids = seed(dsn, 30, days=1)
    paged = ids[0]
    fake.set_feedback(paged, make_records(paged, 120))  # batch 1 needs two pages
    fake.fail_next(503)  # and a retry, with a backoff far below the delay
    fake.fail_next(429, retry_after="0")
    before = raw_rows(dsn)
    summary = go(dsn, fake, batch_size=10, delay_ms=200)
    assert summary.exit_code == 0
    at = [r.at for r in arrivals(fake)]
    # two refused (the pre-flight probe's), the probe, batch 1's two pages, batches 2 and 3
    assert len(at) == 2 + PROBE + 2 + 2
    # measured on arrival at the API, however long the client took to send each request
    gaps = [b - a for a, b in itertools.pairwise(at)]
    assert min(gaps) >= 0.2, gaps
    assert_exact(dsn, fake, before)


# the database goes away, and two runners at once


def cli_env(dsn: str, fake: FakeLangSmith) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": dsn,
        "LANGSMITH_API_KEY": KEY,
        "LANGSMITH_ENDPOINT": fake.url,
        "LANGSMITH_CONFIG_FILE": os.devnull,
    }


def start_cli(dsn: str, fake: FakeLangSmith, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "backfill", "run", "--delay-ms", "0", "--batch-size", "10", "--no-progress", *args],
        env=cli_env(dsn, fake),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def terminate_backfill(dsn: str) -> int:
    """pg_terminate_backend the backfill's session(s); returns how many were ended."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity"
            " WHERE application_name = 'feedback-backfill' AND datname = current_database()"
        ).fetchone()[0]


def assert_one_line_error(proc: subprocess.Popen[str], err: str, prefix: str = "backfill: error: ") -> None:
    """Exit 1, the window's log line first, then log lines only, and the error in one last line; no traceback."""
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    _ts, level, message = lines[0].split(" ", 2)
    assert level == "INFO" and message.startswith("run_date "), err  # the window, logged before the run
    # (WARNING: the waiting lines of an outage)
    assert all(line.split(" ", 2)[1] in ("INFO", "WARNING") for line in lines[1:-1]), err
    assert lines[-1].startswith(prefix), err


def after_3_batches(dsn: str) -> int:
    """Terminate the backfill's session once batches 1-3 are committed.

    Batch 4's request is fetched ahead while batch 3 is written: terminating at once could land
    inside batch 3's write. Waiting for its commit keeps the kill where the test means it:
    during batch 4's API call, with nothing else in flight.
    """
    wait_for(lambda: len(status(dsn)) == 30, 20, "batches 1-3 to be committed")
    return terminate_backfill(dsn)


def test_database_connection_killed_during_an_api_call(dsn):
    ids = seed(dsn, 100, days=1)
    before = raw_rows(dsn)
    ended: list[int] = []
    # while batch 4 (rows 30-39) waits for its answer, its session is terminated
    with FakeLangSmith(KEY, feedback=tripwire(ids[30], lambda: ended.append(after_3_batches(dsn)))) as fake:
        proc = start_cli(dsn, fake)
        _, err = proc.communicate(timeout=30)
        assert ended == [1]
        assert_one_line_error(proc, err, "backfill: error: database error: ")
        st = assert_exact(dsn, fake, before, complete=False)
        assert set(st) == set(ids[:30])  # batches 1-3 committed, the 4th (in flight) lost
        again = start_cli(dsn, fake)
        assert again.wait(30) == 0, again.stderr.read()
        assert_exact(dsn, fake, before)


def test_database_connection_killed_inside_the_write_transaction(dsn):
    ids = seed(dsn, 100, days=1)
    before = raw_rows(dsn)
    assert any(synthetic.feedback_for_run(r) for r in ids[40:50])  # batch 5 patches rows
    with psycopg.connect(dsn) as blocker, psycopg.connect(dsn, autocommit=True) as watcher:

        def hold_the_invocation_row() -> None:
            # while batch 5 is being fetched (and batch 4 maybe still written): the next write
            # transaction (patch, checkpoint, then the invocation's counters) queues behind this
            # row lock, after the patch
            blocker.execute("SELECT 1 FROM feedback_backfill_invocations FOR UPDATE")

        fake = FakeLangSmith(KEY, feedback=tripwire(ids[40], hold_the_invocation_row)).start()
        proc = start_cli(dsn, fake)
        # (polled in autocommit: pg_stat_activity is a snapshot per transaction)
        wait_for(
            lambda: (
                watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'feedback-backfill'"
                    " AND wait_event_type = 'Lock' AND state = 'active'"
                ).fetchone()[0]
                == 1
            ),
            20,
            "the write of batch 5 to wait on the invocation row",
        )
        assert terminate_backfill(dsn) == 1
        _, err = proc.communicate(timeout=30)
        blocker.rollback()
    try:
        assert_one_line_error(proc, err, "backfill: error: database error: ")
        st = assert_exact(dsn, fake, before, complete=False)
        # the write waiting on the lock was batch 5's, or batch 4's (written while batch 5 was
        # fetched ahead); either way its patch and checkpoint were rolled back together
        assert set(st) in (set(ids[:40]), set(ids[:30]))
        again = start_cli(dsn, fake)
        assert again.wait(30) == 0, again.stderr.read()
        assert_exact(dsn, fake, before)
    finally:
        fake.stop()


def test_a_row_the_extractor_holds_is_skipped_not_waited_for(dsn, fake):
    """lock_rows uses SKIP LOCKED: the backfill never queues behind the app's row locks."""
    ids = seed(dsn, 30, days=1)
    held = next(r for r in ids if synthetic.feedback_for_run(r))
    before = raw_rows(dsn)
    with psycopg.connect(dsn) as extractor:
        extractor.execute("SELECT 1 FROM runs WHERE run_id = %s FOR UPDATE", (held,))
        summary = go(dsn, fake)  # returns although the lock is held all along
        extractor.rollback()
    assert summary.skipped == 1 and summary.exit_code == 0
    assert held not in status(dsn)
    assert raw_rows(dsn)[held] == before[held]
    again = go(dsn, fake)
    assert again.examined == 1 and status(dsn)[held]["state"] == "done"
    assert_exact(dsn, fake, before)


def test_a_lost_connection_is_a_database_error(dsn):
    """backfill.run raises the toolkit's DatabaseError, and the CLI prints it as such."""
    ids = seed(dsn, 30, days=1)
    with FakeLangSmith(KEY, feedback=tripwire(ids[10], lambda: terminate_backfill(dsn))) as fake:
        # libpq words it by where the client was: reading when the server's FATAL arrived, or
        # sending its next statement on the closed socket (both seen on CI)
        lost = "terminating connection due to administrator|server closed the connection unexpectedly"
        with pytest.raises(DatabaseError, match=f"^database error: .*({lost})"):
            go(dsn, fake, batch_size=10)
    with FakeLangSmith(KEY, feedback=tripwire(ids[20], lambda: terminate_backfill(dsn))) as fake:
        proc = start_cli(dsn, fake)
        _, err = proc.communicate(timeout=30)
    assert_one_line_error(proc, err, "backfill: error: database error: ")


def test_a_second_runner_on_the_same_window_exits_1_while_the_first_runs(dsn):
    ids = seed(dsn, 50, days=1)
    before = raw_rows(dsn)
    asked, release = threading.Event(), threading.Event()
    # the first runner is held in its first API call, the lock taken, until the second is done
    with FakeLangSmith(KEY, feedback=tripwire(ids[0], lambda: (asked.set(), release.wait(30)))) as fake:
        first = start_cli(dsn, fake)
        try:
            assert asked.wait(20)
            second = start_cli(dsn, fake)
            _, err = second.communicate(timeout=30)
        finally:
            release.set()
        assert_one_line_error(second, err)
        assert re.fullmatch(
            r"backfill: error: another backfill command holds the lease on this database: `backfill run` on \S+"
            r" \(pid \d+\), since [-\d: +]+, last heartbeat \d+s ago; wait for it or stop it \(a killed holder's"
            r" lease expires \d+s from now\)",
            err.strip().splitlines()[-1],
        ), err
        assert first.wait(30) == 0, first.stderr.read()
        assert len(fake.feedback_requests()) == PROBE + 5  # the second runner asked the API nothing
        assert_exact(dsn, fake, before)
    # the second one left no trace: one invocation, every row examined once
    assert [i["outcome"] for i in invocations(dsn)] == ["completed"]
    assert {s["attempts"] for s in status(dsn).values()} == {1}


def test_the_runner_lock_in_the_python_api(dsn):
    """The same through backfill.run in a thread: AlreadyRunning, and the first finishes."""
    ids = seed(dsn, 30, days=1)
    before = raw_rows(dsn)
    asked, release = threading.Event(), threading.Event()
    results: list[RunSummary] = []
    with FakeLangSmith(KEY, feedback=tripwire(ids[0], lambda: (asked.set(), release.wait(30)))) as fake:
        t = threading.Thread(target=lambda: results.append(go(dsn, fake)))
        t.start()
        try:
            assert asked.wait(20)
            with pytest.raises(AlreadyRunning):
                go(dsn, fake)
        finally:
            release.set()
            t.join(30)
        assert results and results[0].exit_code == 0
        assert_exact(dsn, fake, before)


# bad input data


@pytest.mark.parametrize("data", ['"a string"', "42", "true", "null", '[{"run_id": "x"}]'])
def test_data_that_is_a_json_scalar_is_invalid_and_untouched(dsn, fake, data):
    ids = seed(dsn, 10, days=1)
    odd = str(uuid.uuid4())
    fake.set_feedback(odd, make_records(odd, 2))
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO runs (run_id, trace_id, project, run_date, data) VALUES (%s, 't', 'proj-a', %s, %s::jsonb)",
            (odd, TODAY, data),
        )
    before = raw_rows(dsn)
    summary = go(dsn, fake)
    assert summary.failed == {"not_an_object": 1} and summary.exit_code == 3
    st = assert_exact(dsn, fake, before, states={odd: ("invalid", "not_an_object")})
    assert raw_rows(dsn)[odd] == before[odd]
    assert all(odd not in q.query["run"] for q in fake.feedback_requests())
    assert len(st) == len(ids) + 1


def test_a_3_mb_record_is_stored_exactly(dsn, fake):
    seed(dsn, 5, days=1)
    with psycopg.connect(dsn) as conn:
        rid = str(uuid.uuid4())
        huge = make_records(rid, 2)
        huge[1]["value"] = {"rationale": "x" * 3_000_000, "tail": "é\U0001f600"}
        add_run(conn, fake, huge, rid)
    before = raw_rows(dsn)
    summary = go(dsn, fake)
    assert summary.exit_code == 0
    assert_exact(dsn, fake, before)
    assert rows(dsn)[rid]["feedback_records"][1]["value"]["rationale"] == "x" * 3_000_000


def test_non_bmp_unicode_is_stored_exactly(dsn, fake):
    seed(dsn, 5, days=1)
    with psycopg.connect(dsn) as conn:
        rid = str(uuid.uuid4())
        recs = make_records(rid, 2)
        recs[0]["comment"] = "\U0001f600 grinning, \U0001d11e clef, \U00010348 hwair, \U0010fffd last plane"
        recs[0]["value"] = {"\U0001f600": ["e\u0301", "\u200d", "\U0001f469\u200d\U0001f4bb"]}
        recs[1]["key"] = "verdict_\U0001f44d"
        add_run(conn, fake, recs, rid)
    before = raw_rows(dsn)
    go(dsn, fake)
    assert_exact(dsn, fake, before)
    with psycopg.connect(dsn) as conn:  # one code point each in the database, not surrogate pairs
        chars, octets = conn.execute(
            "SELECT length(c), octet_length(c) FROM (SELECT data->'feedback_records'->0->>'comment' AS c"
            " FROM runs WHERE run_id = %s) AS x",
            (rid,),
        ).fetchone()
    assert (chars, octets) == (len(recs[0]["comment"]), len(recs[0]["comment"].encode()))


@pytest.mark.parametrize(
    "poison",
    [
        pytest.param({"comment": "a\u0000b"}, id="in-a-value"),
        pytest.param({"value": {"rationale": {"crit\u0000eria": True}}}, id="in-a-nested-key"),
    ],
)
def test_nul_fails_its_run_untouched_and_its_batch_mates_are_stored(dsn, fake, poison):
    ids = seed(dsn, 20, days=1)
    with psycopg.connect(dsn) as conn:
        rid = str(uuid.uuid4())
        recs = make_records(rid, 3)
        add_run(conn, fake, [*recs[:2], {**recs[2], **poison}], rid, stats=recs)
    before = raw_rows(dsn)
    summary = go(dsn, fake)
    assert summary.failed == {"unstorable": 1} and summary.exit_code == 3
    st = assert_exact(dsn, fake, before, states={rid: ("failed", "unstorable")})
    assert raw_rows(dsn)[rid] == before[rid]
    assert len(st) == len(ids) + 1 and summary.enriched == sum(1 for r in ids if synthetic.feedback_for_run(r))


def test_a_lone_surrogate_fails_its_run_only_like_nul(dsn, fake):
    """Valid JSON (an emoji cut in half by a UTF-16 client) that jsonb cannot store either.

    Before feedback.unstorable, it reached patch_batch and PostgreSQL refused the whole batch,
    so every re-run stopped at that batch for ever.
    """
    ids = seed(dsn, 20, days=1)
    rid = str(uuid.uuid4())
    recs = make_records(rid, 2)
    with psycopg.connect(dsn) as conn:
        add_run(conn, fake, [recs[0], {**recs[1], "comment": "half an emoji \ud83d"}], rid, stats=recs)
    before = raw_rows(dsn)
    summary = go(dsn, fake)
    assert summary.failed == {"unstorable": 1} and summary.exit_code == 3
    st = assert_exact(dsn, fake, before, states={rid: ("failed", "unstorable")})
    assert "\\ud83d" in st[rid]["error"]
    assert len(st) == len(ids) + 1


# secrets


SECRET_KEY = "lsv2_pt_SECRETKEY_7f3a9c1e5b"
SECRET_PW = "pw-S3cr3t-9d8e7f"


@pytest.fixture
def secret_dsn(dsn: str) -> Iterator[str]:
    """The test database through a role with a password (trust auth: accepted, not checked)."""
    role = f"secret_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{SECRET_PW}'")
    rest = dsn.split("@", 1)[1]
    try:
        yield f"postgresql://{role}:{SECRET_PW}@{rest}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")


def stored_text(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        return "\n".join(
            str(row)
            for table in ("feedback_backfill_status", "feedback_backfill_invocations")
            for row in conn.execute(f"SELECT t::text FROM {table} AS t").fetchall()
        )


def test_the_api_key_and_the_database_password_are_never_printed_nor_stored(dsn, secret_dsn):
    """`python -m backfill run` as cron runs it, through a success and four failures."""
    ids = seed(dsn, 40, days=1)
    printed: list[str] = []

    def run_cli(url: str, endpoint: str, *args: str) -> int:
        env = {**os.environ, "DATABASE_URL": url, "LANGSMITH_API_KEY": SECRET_KEY, "LANGSMITH_ENDPOINT": endpoint}
        proc = subprocess.run(
            [sys.executable, "-m", "backfill", "run", "--delay-ms", "0", "--no-progress", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        printed.append(proc.stdout + proc.stderr)
        return proc.returncode

    with FakeLangSmith(api_key="another-key") as refusing:  # the key is refused: 401
        assert run_cli(secret_dsn, refusing.url) == 1
    with FakeLangSmith(api_key=SECRET_KEY) as down:  # an outage (Retry-After 0: no backoff), not waited out
        down.outage(600.0, status=503)
        assert run_cli(secret_dsn, down.url, "--limit", "10", "--outage-wait", "0") == 1
    # the connection lost mid-run, after 3 batches
    with FakeLangSmith(api_key=SECRET_KEY, feedback=tripwire(ids[30], lambda: after_3_batches(dsn))) as kill:
        assert run_cli(secret_dsn, kill.url, "--batch-size", "10") == 1
    with FakeLangSmith(api_key=SECRET_KEY) as ok:  # the rest, with a failed row's error stored
        ok.poison(ids[35])
        assert run_cli(secret_dsn, ok.url, "--batch-size", "2") == 3
        assert run_cli(secret_dsn.rsplit("/", 1)[0] + "/no_such_db", ok.url) == 1  # cannot connect
    text = "\n".join(printed)
    for seen in (
        "refused the API key",
        "failed 2 times in a row (HTTP 503)",
        "examined 10 row(s)",
        "cannot connect to the database",
        "database error: terminating connection",
    ):
        assert seen in text
    stored = stored_text(dsn)
    assert "refused the API key" in stored and "API error: HTTP 500" in stored and "completed_with_failures" in stored
    for secret in (SECRET_KEY, SECRET_PW):
        assert secret not in text
        assert secret not in stored


# the table in docs/reliability.md


def test_every_test_named_in_docs_reliability_exists():
    root = Path(__file__).resolve().parents[2]
    named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", (root / "docs" / "reliability.md").read_text())
    assert len(named) > 40
    missing = [f"{f}::{t}" for f, t in named if not re.search(rf"^def {t}\(", (root / f).read_text(), re.MULTILINE)]
    assert missing == []
