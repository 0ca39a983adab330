"""An answer no LangSmith API gives, and the waiting lines' cadence: pure logic, no server."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import requests

from backfill import logs
from backfill.errors import Interrupted
from backfill.langsmith import waits
from backfill.langsmith.classify import classify, not_the_api
from backfill.langsmith.pacing import Pacer


def answer(
    status: int, reason: str = "", content_type: str | None = "application/json", **headers: str
) -> requests.Response:
    r = requests.Response()
    r.status_code, r.reason, r.url = status, reason, "https://smith.example.com/api/v1/feedback?run=x"
    if content_type is not None:
        r.headers["Content-Type"] = content_type
    r.headers.update(headers)
    return r


def failure(response: requests.Response) -> requests.HTTPError:
    return requests.HTTPError(f"{response.status_code}", response=response)


@pytest.mark.parametrize(("status", "reason"), [(404, "Not Found"), (405, "Method Not Allowed")])
def test_404_and_405_are_the_address_not_a_run(status, reason):
    assert classify(failure(answer(status, reason))) == ("not_api", f"answered {status} {reason}", None)


@pytest.mark.parametrize("status", [400, 422])
def test_other_4xx_are_still_the_requests_own(status):
    assert classify(failure(answer(status, "Bad Request")))[0] == "refused"


@pytest.mark.parametrize(
    ("response", "why"),
    [
        (
            answer(302, "Found", "text/html", Location="/login?next=/feedback"),
            "answered 302 Found, a redirect to https://smith.example.com/login?next=/feedback",
        ),
        (answer(301, "Moved Permanently", None), "answered 301 Moved Permanently, a redirect"),
        (answer(200, "OK", "text/html; charset=utf-8"), "answered 200 OK with an HTML page (text/html), not JSON"),
        (answer(200, "OK", "text/plain"), "answered 200 OK with a body (text/plain), not JSON"),
        (answer(200, "OK", "application/json"), None),
        (answer(200, "OK", "application/json; charset=utf-8"), None),
        (answer(200, "OK", "application/problem+json"), None),
        (answer(200, "OK", None), None),  # no type declared: the body is judged (malformed: retried)
    ],
)
def test_not_the_api(response, why):
    assert not_the_api(response) == why


def test_a_sleep_is_sliced_where_the_tick_asks_and_stays_interruptible():
    calls: list[float] = []

    def tick() -> float:
        calls.append(time.monotonic())
        return 0.05

    stop = threading.Event()
    pacer = Pacer(0.0, stop, tick=tick)
    started = time.monotonic()
    pacer.sleep(0.3)
    assert 0.3 <= time.monotonic() - started < 0.5
    assert len(calls) >= 6
    threading.Timer(0.1, stop.set).start()
    with pytest.raises(Interrupted):
        pacer.sleep(30)  # stopped a tenth of a second in, not after the 30 s


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((time.monotonic(), record.getMessage()))


def test_a_line_at_once_then_at_least_every_wait_line_s_until_the_episode_is_over(monkeypatch):
    monkeypatch.setattr(waits, "WAIT_LINE_S", 0.1)
    lines = Lines()
    logs.log.addHandler(lines)
    logs.log.setLevel(logging.INFO)
    try:
        w = waits.Waits()
        pacer = Pacer(0.0, threading.Event(), tick=w.tick)
        w.begin("rate_limit", "LangSmith's rate limit (HTTP 429)", 0.35, "stops after 15m 00s of 429s")
        pacer.sleep(0.35)
        w.begin("rate_limit", "LangSmith's rate limit (HTTP 429)", 0.25, "stops after 15m 00s of 429s")
        pacer.sleep(0.25)
        w.over()
        pacer.sleep(0.3)  # over: nothing more is said
    finally:
        logs.log.removeHandler(lines)
    said = [text for _, text in lines.records]
    assert said[-1].startswith("done waiting for LangSmith's rate limit (HTTP 429): answered after")
    assert all(t.startswith("waiting for LangSmith's rate limit (HTTP 429) since ") for t in said[:-1])
    assert len(said) - 1 >= 6  # 0.6 s of waiting, a line every 0.1 s
    times = [at for at, _ in lines.records]
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) <= 0.1 + 0.05
    assert len({t.split(" since ")[1][:8] for t in said[:-1]}) == 1  # one episode: one "since"
