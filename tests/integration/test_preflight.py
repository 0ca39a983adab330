"""`backfill run` checks before it acts, and says what it waits for: as a DBA meets it, through the CLI,
against the real PostgreSQL and the fake LangSmith over HTTP."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator

import psycopg
import pytest
from typer.testing import CliRunner, Result

from backfill.cli import app
from backfill.langsmith import waits
from backfill.sandbox.fake_langsmith import FakeLangSmith

from ..helpers import invocations, raw_rows, seed, status
from .test_check import limited_role  # noqa: F401  (the fixture: grants.sql minus UPDATE on runs)

pytestmark = pytest.mark.timeout(90)

KEY = "lsv2_preflight_key_0123456789"
#: What the error line says after the URL and what was answered.
ADVICE = "set it to the API's URL (such as https://api.smith.langchain.com), not the web app's"


@pytest.fixture
def fake() -> Iterator[FakeLangSmith]:
    with FakeLangSmith(api_key=KEY) as server:
        yield server


def backfill_run(dsn: str, endpoint: str, *args: str) -> Result:
    env = {"DATABASE_URL": dsn, "LANGSMITH_API_KEY": KEY, "LANGSMITH_ENDPOINT": endpoint}
    return CliRunner().invoke(app, ["run", "--since", "14d", "--no-progress", *args], env=env)


def tables(dsn: str) -> dict[str, int]:
    """Rows in each of our tables that a run writes for rows of ``runs``."""
    with psycopg.connect(dsn) as conn:
        return {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
            for t in ("feedback_backfill_status", "feedback_backfill_settled", "feedback_backfill_staged")
        }


# an endpoint that is not the LangSmith API


@pytest.mark.parametrize(
    ("mode", "answered"),
    [
        ("404", "answered 404 Not Found"),
        ("html", "answered 200 OK with an HTML page (text/html), not JSON"),
        ("login", "answered 302 Found, a redirect to {url}/login?next=/feedback"),
    ],
)
def test_an_endpoint_that_is_not_the_api_stops_the_run_at_once_marking_nothing(dsn, fake, mode, answered):
    seed(dsn, 100, days=5)
    before = raw_rows(dsn)
    fake.not_the_api(mode)
    started = time.monotonic()
    result = backfill_run(dsn, fake.url)  # the defaults a DBA runs with (--delay-ms 1000 ...)
    elapsed = time.monotonic() - started
    message = (
        f"LANGSMITH_ENDPOINT {fake.url} is not the LangSmith API: GET /feedback {answered.format(url=fake.url)};"
        f" {ADVICE}; no row was marked"
    )
    assert result.exit_code == 1, result.stderr
    assert elapsed < 15
    lines = result.stderr.splitlines()
    assert lines[-1] == f"backfill: error: {message}"
    assert [line for line in lines if fake.url in line] == [lines[-1]]
    assert [line for line in lines if "error" in line.lower()] == [lines[-1]]
    # no row in any state but pending, `runs` unchanged byte for byte
    assert status(dsn) == {}
    assert tables(dsn) == dict.fromkeys(tables(dsn), 0)
    assert raw_rows(dsn) == before
    # the invocation row says why it ended
    (inv,) = invocations(dsn)
    assert (inv["outcome"], inv["message"], inv["rows_examined"]) == ("error", message, 0)
    assert inv["api_requests"] == len(fake.requests) == 1  # one answer tells: no retry, no split


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ('{"detail": "not the feedback API"}', "malformed JSON answer (NotAnArray)"),
        ("<html>gateway</html>", "malformed JSON answer (JSONDecodeError)"),  # declared JSON, not JSON
    ],
)
def test_a_json_api_that_is_not_langsmith_stops_the_run_marking_nothing(dsn, fake, body, why):
    seed(dsn, 100, days=5)
    before = raw_rows(dsn)
    fake.fail_next(200, body=body, times=10_000)  # 200, application/json, never the array GET /feedback returns
    result = backfill_run(dsn, fake.url, "--delay-ms", "0")
    assert result.exit_code == 1, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"backfill: error: LANGSMITH_ENDPOINT {fake.url} is not the LangSmith API: GET /feedback answered no request"
        f" with a JSON array ({why}); {ADVICE}; no row was marked"
    )
    # each malformed answer is retried (a transmission may break one): 5 for the probe's runs, 5 naming nobody
    assert len(fake.requests) == 2 * 5
    assert (status(dsn), raw_rows(dsn)) == ({}, before)


@pytest.mark.parametrize("mode", ["404", "html", "login"])
def test_check_names_the_wrong_endpoint_as_run_does(dsn, fake, mode):
    seed(dsn, 20)
    fake.not_the_api(mode)
    env = {"DATABASE_URL": dsn, "LANGSMITH_API_KEY": KEY, "LANGSMITH_ENDPOINT": fake.url}
    result = CliRunner().invoke(app, ["check"], env=env)
    assert result.exit_code == 1
    (api,) = [line for line in result.stdout.splitlines() if line.startswith("FAIL  api ")]
    assert f"LANGSMITH_ENDPOINT {fake.url} is not the LangSmith API: GET /feedback answered " in api
    assert api.endswith(ADVICE)


def test_a_role_that_may_not_run_stops_before_anything_is_written(dsn, fake, limited_role):  # noqa: F811
    role, url = limited_role
    seed(dsn, 20)
    before = raw_rows(dsn)
    result = backfill_run(url, fake.url)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        f"backfill: error: role {role} lacks UPDATE (data) on runs for `backfill run`: the owner grants them"
        f" (`backfill db grants {role}`, and `backfill check` says what else is missing); stopped before anything"
        " was written"
    )
    assert (raw_rows(dsn), status(dsn), invocations(dsn), fake.requests) == (before, {}, [], [])


@pytest.mark.parametrize("code", [404, 405])
def test_a_404_or_405_mid_run_stops_it_and_writes_nobody_off(dsn, fake, code):
    seed(dsn, 300, days=1)
    # the pre-flight probe and the first batch are answered; every request after them gets `code`
    fake.outage(requests=10_000, status=code, after=2)
    result = backfill_run(dsn, fake.url, "--delay-ms", "0", "--strategy", "runs", "--batch-size", "100")
    assert result.exit_code == 1, result.stderr
    error = result.stderr.splitlines()[-1]
    assert error.startswith(f"backfill: error: LANGSMITH_ENDPOINT {fake.url} is not the LangSmith API: GET /feedback")
    assert error.endswith("stopped, nothing of the current batch was marked")
    st = status(dsn)
    # the first batch is written; the batch in flight is not marked, and no run is written off
    assert len(st) == 100
    assert {r["state"] for r in st.values()} <= {"done", "no_feedback"}
    assert len(fake.feedback_requests()) == 3


# waiting lines

LINE = re.compile(r"^(\S+Z) (INFO|WARNING) (.*)$")


def said(stderr: str) -> list[tuple[dt.datetime, str]]:
    """(time, message) of each log line."""
    out = []
    for line in stderr.splitlines():
        m = LINE.match(line)
        if m:
            out.append((dt.datetime.fromisoformat(m.group(1)), m.group(3)))
    return out


def assert_cadence(lines: list[tuple[dt.datetime, str]], pattern: str, end: str) -> list[re.Match[str]]:
    """The waiting lines match ``pattern``, one at least every WAIT_LINE_S from the first to the
    line that ends the wait (starting with ``end``); returns their matches."""
    waiting = [(at, re.fullmatch(pattern, text)) for at, text in lines if text.startswith("waiting for")]
    assert waiting, "no waiting line"
    assert all(m is not None for _, m in waiting), [text for _, text in lines if text.startswith("waiting for")]
    over = [at for at, text in lines if text.startswith(end)]
    assert len(over) == 1
    times = [at for at, _ in waiting] + over
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    # a line at least every WAIT_LINE_S (with the 50 ms a request's answer is polled at)
    assert max(gaps) <= waits.WAIT_LINE_S + 0.2, gaps
    return [m for _, m in waiting if m is not None]


def test_a_rate_limit_window_is_said_at_least_every_wait_line_s(dsn, fake, monkeypatch):
    monkeypatch.setattr(waits, "WAIT_LINE_S", 0.5)
    seed(dsn, 30, days=1)
    before = raw_rows(dsn)
    # after the probe: the batch gets 429s (Retry-After 2 s) for 3 s, so it waits twice
    fake.rate_limit_window(3.0, retry_after="2", after=1)
    result = backfill_run(dsn, fake.url, "--delay-ms", "0", "--strategy", "runs")
    assert result.exit_code == 0, result.stderr
    matches = assert_cadence(
        said(result.stderr),
        r"waiting for LangSmith's rate limit \(HTTP 429\) since (\d\d:\d\d:\d\d),"
        r" (next try at|trying again since) (\d\d:\d\d:\d\d) \(stops after 15m 00s of 429s\)",
        "done waiting for LangSmith's rate limit (HTTP 429): answered after",
    )
    assert len(matches) >= 3 / 0.5  # the whole window, not only its start
    assert {m.group(1) for m in matches} == {matches[0].group(1)}  # since: the first 429
    assert len({m.group(3) for m in matches}) == 2  # until: each wait's next try
    assert raw_rows(dsn) != before and all(r["state"] in ("done", "no_feedback") for r in status(dsn).values())


@pytest.mark.parametrize("code", [503, 500])
def test_an_outage_is_said_at_least_every_wait_line_s(dsn, fake, monkeypatch, code):
    monkeypatch.setattr(waits, "WAIT_LINE_S", 0.5)
    seed(dsn, 30, days=1)
    fake.outage(3.0, status=code, after=1)
    result = backfill_run(dsn, fake.url, "--delay-ms", "0", "--strategy", "runs")
    assert result.exit_code == 0, result.stderr
    url = re.escape(fake.url)
    matches = assert_cadence(
        said(result.stderr),
        rf"waiting for LangSmith at {url} to answer \(HTTP {code}, \d+ failed requests? in a row\)"
        r" since (\d\d:\d\d:\d\d), (next try at|trying again since) (\d\d:\d\d:\d\d)"
        r" \(stops after --outage-wait 10m 00s of waiting\)",
        f"done waiting for LangSmith at {fake.url} to answer",
    )
    assert len(matches) >= 3 / 0.5
    assert {m.group(1) for m in matches} == {matches[0].group(1)}
    assert all(r["state"] in ("done", "no_feedback") for r in status(dsn).values()) and len(status(dsn)) == 30
