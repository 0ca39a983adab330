"""``langsmith.transport.Transport`` against the fake over HTTP: what each failure costs, pacing,
and every request counted in the caller's tally."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from backfill.domain.rows import Tally
from backfill.errors import ApiAuthError, ApiUnavailable, Interrupted
from backfill.langsmith.transport import BatchFailed, Transport, UrlTooLong
from backfill.sandbox import synthetic
from backfill.sandbox.embedded import free_port
from backfill.sandbox.fake_langsmith import FakeLangSmith

pytestmark = pytest.mark.timeout(30)

RUNS = [synthetic.run_id_for(i, "transport") for i in range(5)]
WITH = next(r for r in RUNS if synthetic.feedback_for_run(r))

Connect = Callable[..., Transport]


def page(**params: object) -> dict[str, object]:
    return {"run": [WITH], "limit": 100, "offset": 0} | params


def test_a_page_is_the_json_the_api_sent_and_costs_one_request(fake: FakeLangSmith, connect: Connect) -> None:
    t, tally = connect(), Tally()
    assert t.get_page(page(), tally) == fake.records_of(WITH)
    assert (tally.requests, tally.errors, t.sent, t.last_success) == (1, 0, 1, 1)
    (req,) = fake.feedback_requests()
    assert req.query == {"run": [WITH], "limit": ["100"], "offset": ["0"]}
    assert req.headers["x-api-key"] == "lsv2_component_key"


def test_a_429_is_waited_out_as_retry_after_says_and_widens_the_pace(fake: FakeLangSmith, connect: Connect) -> None:
    fake.fail_next(429, retry_after="0.2")
    t, tally = connect(), Tally()
    assert t.get_page(page(), tally) == fake.records_of(WITH)
    assert (tally.requests, tally.errors) == (2, 1) and 0.2 <= tally.rate_limit_wait_s < 1
    first, retry = fake.feedback_requests()
    assert first.status == 429 and retry.status == 200
    assert retry.at - first.at >= 0.5  # the pace widened to PACE_MIN_S after the 429
    assert tally.outage_wait_s == 0


def test_429s_without_retry_after_double_the_wait_until_the_budget(fake: FakeLangSmith, connect: Connect) -> None:
    fake.fail_next(429, times=10)
    t, tally = connect(rate_limit_budget_s=0.1), Tally()
    with pytest.raises(ApiUnavailable, match="kept answering 429"):
        t.get_page(page(), tally)
    # 0.05 waited; the second wait (0.1, doubled) would pass the budget
    assert tally.requests == 2 and 0.05 <= tally.rate_limit_wait_s < 0.1


def test_a_500_is_raised_at_once_for_the_caller_to_split(fake: FakeLangSmith, connect: Connect) -> None:
    fake.fail_next(500)
    t, tally = connect(), Tally()
    with pytest.raises(BatchFailed) as failed:
        t.get_page(page(), tally)
    assert (failed.value.detail, failed.value.seq, failed.value.needs_proof) == ("HTTP 500", 1, True)
    assert (tally.requests, tally.errors) == (1, 1)


def test_gateway_errors_are_retried_with_backoff(fake: FakeLangSmith, connect: Connect) -> None:
    fake.fail_next(503, times=2)
    fake.fail_next(502)
    t, tally = connect(), Tally()
    assert t.get_page(page(), tally) == fake.records_of(WITH)
    assert (tally.requests, tally.errors) == (4, 3) and tally.outage_wait_s > 0
    assert [r.status for r in fake.feedback_requests()] == [503, 503, 502, 200]


def test_after_max_retries_a_probe_decides_the_request_is_the_problem(fake: FakeLangSmith, connect: Connect) -> None:
    t, tally = connect(max_retries=3), Tally()
    t.get_page(page(), tally)  # the API has answered: known_good is set by the caller, here by hand
    t.known_good = RUNS[0]
    fake.fail_next(504, times=3)
    with pytest.raises(BatchFailed) as failed:
        t.get_page(page(run=RUNS[1:3]), tally)
    assert failed.value.detail == "HTTP 504" and not failed.value.needs_proof  # the probe proved the API healthy
    probe = fake.feedback_requests()[-1]
    assert probe.query == {"run": [RUNS[0]], "limit": ["1"], "offset": ["0"]} and probe.status == 200
    assert tally.requests == 1 + 3 + 1 and tally.errors == 3


def test_an_outage_is_waited_out_by_probes_and_the_request_asked_again(fake: FakeLangSmith, connect: Connect) -> None:
    t, tally = connect(max_retries=2), Tally()
    t.get_page(page(), tally)
    fake.outage(requests=4, status=503)  # the request twice, then two probes
    assert t.get_page(page(run=[RUNS[1]]), tally) == fake.records_of(RUNS[1])
    statuses = [r.status for r in fake.feedback_requests()]
    assert statuses == [200, 503, 503, 503, 503, 200, 200]  # ... then a probe answered, then the request
    assert tally.outage_wait_s > 0 and tally.requests == 7


def test_an_outage_longer_than_outage_wait_stops_the_run(fake: FakeLangSmith, connect: Connect) -> None:
    t, tally = connect(max_retries=2, outage_wait_s=0.1), Tally()
    t.get_page(page(), tally)
    fake.outage(requests=100, status=503)
    with pytest.raises(ApiUnavailable, match=r"failed \d+ times in a row \(HTTP 503\).*nothing of the current batch"):
        t.get_page(page(), tally)
    assert tally.outage_wait_s <= 0.1 + 0.05


def test_a_url_too_long_is_said_at_once(fake: FakeLangSmith, connect: Connect) -> None:
    fake.max_ids(2, status=431)
    t, tally = connect(), Tally()
    with pytest.raises(UrlTooLong, match="HTTP 431"):
        t.get_page(page(run=RUNS[:3]), tally)
    assert tally.requests == 1


def test_the_key_refused_stops_everything(connect: Connect) -> None:
    with pytest.raises(ApiAuthError, match=r"refused the API key \(HTTP 401\).*no row was marked"):
        connect(api_key="lsv2_wrong").get_page(page(), Tally())


def test_a_malformed_answer_is_asked_again_then_refused(fake: FakeLangSmith, connect: Connect) -> None:
    fake.truncate_next()
    t, tally = connect(), Tally()
    assert t.get_page(page(), tally) == fake.records_of(WITH) and tally.errors == 1
    fake.truncate_next(times=3)
    with pytest.raises(BatchFailed, match="malformed JSON") as failed:
        connect(max_retries=3).get_page(page(), Tally())
    assert not failed.value.needs_proof


def test_an_answer_that_is_not_an_array_is_malformed(fake: FakeLangSmith, connect: Connect) -> None:
    sid = synthetic.session_id_for("proj-a")
    fake.add_project("proj-a", sid)
    t, tally = connect(max_retries=2), Tally()
    with pytest.raises(BatchFailed, match=r"malformed JSON answer \(NotAnArray\)"):
        t.get_page({}, tally, f"/sessions/{sid}")  # one project: an object
    assert tally.requests == 2


def test_a_refused_request_is_refused_after_a_second_try(fake: FakeLangSmith, connect: Connect) -> None:
    with pytest.raises(BatchFailed, match="HTTP 422"):
        connect().get_page(page(limit=1000), Tally())  # the fake validates like the API: limit <= 100
    assert [r.status for r in fake.feedback_requests()] == [422, 422]


def test_an_endpoint_that_never_answered_is_said_at_once_without_probes(connect: Connect) -> None:
    t, tally = connect(endpoint=f"http://127.0.0.1:{free_port()}", max_retries=3), Tally()
    with pytest.raises(ApiUnavailable, match=r"failed 3 times in a row \(connection failed\)"):
        t.get_page(page(), tally)
    assert tally.requests == 3 and not t.answered


def test_delay_ms_is_the_least_interval_between_requests_as_the_api_receives_them(
    fake: FakeLangSmith, connect: Connect
) -> None:
    fake.fail_next(503)
    t, tally = connect(delay_ms=150), Tally()
    for run in RUNS[:3]:
        t.get_page(page(run=[run]), tally)
    at = [r.at for r in fake.feedback_requests()]
    assert len(at) == 4 and min(b - a for a, b in zip(at, at[1:], strict=False)) >= 0.15  # retries included


def test_a_stop_interrupts_the_wait_for_a_turn(connect: Connect) -> None:
    t = connect(delay_ms=10_000)
    t.get_page(page(), Tally())
    threading.Timer(0.2, t.stop.set).start()
    started = time.monotonic()
    with pytest.raises(Interrupted):
        t.get_page(page(), Tally())
    assert time.monotonic() - started < 2


def test_abandon_gives_up_the_request_on_the_wire(fake: FakeLangSmith, connect: Connect) -> None:
    fake.stall_next(10)
    t = connect(timeout_s=20)
    threading.Timer(0.2, t.abandon.set).start()
    started = time.monotonic()
    with pytest.raises(Interrupted, match="abandoned"):
        t.get_page(page(), Tally())
    assert time.monotonic() - started < 2
