"""What a failed request means (``langsmith.classify``), from answers and exceptions built by hand."""

from __future__ import annotations

import datetime as dt
import email.utils
import json

import pytest
import requests
import urllib3
from langsmith.utils import LangSmithAPIError

from backfill.langsmith.classify import NotAnArray, classify, retry_after


def answer(status: int, headers: dict[str, str] | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers or {})
    response._content = b"{}"
    return response


def http_error(status: int, headers: dict[str, str] | None = None, text: str = "") -> requests.HTTPError:
    return requests.HTTPError(text or f"{status} Error", response=answer(status, headers))


def wrapped(cause: BaseException) -> LangSmithAPIError:
    """As the SDK raises it: its own error, the cause chained."""
    try:
        raise LangSmithAPIError(f"Failed to GET /feedback: {cause!r}") from cause
    except LangSmithAPIError as exc:
        return exc


def http_date(delta: dt.timedelta) -> str:
    return email.utils.format_datetime(dt.datetime.now(dt.UTC) + delta, usegmt=True)


def test_429_waits_what_retry_after_says_or_leaves_the_wait_to_the_caller() -> None:
    assert classify(http_error(429, {"Retry-After": "7"})) == ("rate_limit", "HTTP 429", 7.0)
    assert classify(http_error(429)) == ("rate_limit", "HTTP 429", None)
    kind, detail, wait = classify(http_error(429, {"Retry-After": http_date(dt.timedelta(seconds=30))}))
    assert (kind, detail) == ("rate_limit", "HTTP 429") and wait is not None and 27 <= wait <= 30


@pytest.mark.parametrize("status", [500, 501, 505, 599])
def test_a_500_is_the_api_or_one_run_of_the_request(status: int) -> None:
    assert classify(http_error(status, {"Retry-After": "3"})) == ("server", f"HTTP {status}", None)


@pytest.mark.parametrize("status", [502, 503, 504, 408, 425])
def test_gateway_errors_and_request_timeouts_are_unavailable(status: int) -> None:
    assert classify(http_error(status)) == ("unavailable", f"HTTP {status}", None)
    assert classify(http_error(status, {"Retry-After": "2"})) == ("unavailable", f"HTTP {status}", 2.0)


@pytest.mark.parametrize(
    "exc",
    [requests.Timeout(), requests.ReadTimeout(), requests.ConnectTimeout(), wrapped(requests.ReadTimeout("read"))],
    ids=["timeout", "read", "connect", "wrapped"],
)
def test_timeouts_are_unavailable(exc: BaseException) -> None:
    # a connect timeout is a ConnectionError too: it is said as a timeout
    assert classify(exc) == ("unavailable", "timeout", None)


@pytest.mark.parametrize(
    ("exc", "detail"),
    [
        (requests.ConnectionError("refused"), "connection failed"),
        (wrapped(requests.ConnectionError("reset by peer")), "connection failed"),
        (requests.exceptions.ChunkedEncodingError("cut"), "request failed (ChunkedEncodingError)"),
        (urllib3.exceptions.ProtocolError("lost"), "request failed (ProtocolError)"),
    ],
)
def test_lost_connections_are_unavailable(exc: BaseException, detail: str) -> None:
    assert classify(exc) == ("unavailable", detail, None)


@pytest.mark.parametrize("status", [401, 403])
def test_the_key_refused_is_auth_and_the_detail_never_quotes_the_request(status: int) -> None:
    exc = wrapped(http_error(status, text=f"{status} Client Error; headers x-api-key: lsv2_secret"))
    assert classify(exc) == ("auth", f"HTTP {status}", None)


@pytest.mark.parametrize("status", [414, 431])
def test_a_url_too_long_asks_for_fewer_ids(status: int) -> None:
    assert classify(http_error(status)) == ("too_long", f"HTTP {status}", None)


@pytest.mark.parametrize("status", [400, 409, 422])
def test_other_4xx_refuse_the_request(status: int) -> None:
    assert classify(wrapped(http_error(status))) == ("refused", f"HTTP {status}", None)


@pytest.mark.parametrize("status", [404, 405])
def test_a_404_or_405_says_the_address_is_not_the_api(status: int) -> None:
    """Every request to a wrong path gets it: the endpoint's fault, never a run's (isolation must not split it)."""
    assert classify(wrapped(http_error(status))) == ("not_api", f"answered {status}", None)


def test_a_body_that_is_not_json_or_not_an_array_is_malformed() -> None:
    try:
        json.loads("[{")
    except json.JSONDecodeError as exc:
        assert classify(exc) == ("malformed", "malformed JSON answer (JSONDecodeError)", None)
    # requests' own JSONDecodeError (Response.json()) is a json.JSONDecodeError too
    assert classify(requests.exceptions.JSONDecodeError("Expecting value", "<html>", 0))[0] == "malformed"
    assert classify(NotAnArray("not a JSON array")) == ("malformed", "malformed JSON answer (NotAnArray)", None)


def test_anything_else_is_a_bug_raised_as_its_innermost_cause() -> None:
    with pytest.raises(TypeError, match="unexpected keyword"):
        classify(TypeError("unexpected keyword"))
    with pytest.raises(AttributeError, match="no attribute 'get'"):
        classify(wrapped(AttributeError("'list' object has no attribute 'get'")))


def test_a_cause_chain_that_loops_is_walked_once() -> None:
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__context__, b.__context__ = b, a
    with pytest.raises(RuntimeError):
        classify(a)
    c = requests.ConnectionError("c")
    c.__context__ = wrapped(c)
    assert classify(c) == ("unavailable", "connection failed", None)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, None), ("", None), ("0", 0.0), ("2.5", 2.5), ("-3", 0.0), ("soon", None), ("Mon, 99 Foo 2026", None)],
)
def test_retry_after_in_seconds(value: str | None, seconds: float | None) -> None:
    assert retry_after(value) == seconds


def test_retry_after_as_an_http_date() -> None:
    ahead = retry_after(http_date(dt.timedelta(minutes=2)))
    assert ahead is not None and 117 <= ahead <= 120
    assert retry_after(http_date(-dt.timedelta(minutes=2))) == 0.0  # already past: no wait
    naive = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)).strftime("%a, %d %b %Y %H:%M:%S")
    assert 57 <= (retry_after(naive) or 0) <= 60  # no zone: taken as UTC
