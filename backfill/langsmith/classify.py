"""What a failed request to LangSmith means: pure functions of an exception and its answer.

``classify`` sorts a failure into the kinds ``Transport`` acts on; ``retry_after`` reads
the header; the chain helpers look through the SDK's wrappers for the cause. No I/O, no state:
tested without a server (tests/unit).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json

import requests
import urllib3


class NotAnArray(ValueError):
    """The answer is JSON, but not the array GET /feedback returns."""


def classify(exc: BaseException) -> tuple[str, str, float | None]:
    """(kind, one-line detail without secrets, Retry-After seconds) for a failed request.

    kind: auth (stop everything), rate_limit (429: wait it out), too_long (414/431: fewer
    ids per request), server (500 and other 5xx: the API or one run of the request),
    unavailable (502/503/504/408/425, timeouts, lost connections: retry, then probe),
    refused (other 4xx: split), malformed (a body that is not a JSON array: retry, split).

    Only network (requests/urllib3), HTTP status and JSON failures are classified. Anything
    else is a bug (a TypeError, an AttributeError ...) and is raised again as it is, so that
    it ends as an internal error rather than as "API unavailable". (The SDK wraps whatever
    its ``session.request`` raises in a ``LangSmithError``: the cause is what counts.)
    """
    if isinstance(exc, (json.JSONDecodeError, NotAnArray)):  # requests' JSONDecodeError is one too
        return "malformed", f"malformed JSON answer ({exc.__class__.__name__})", None
    response = response_in_chain(exc)
    if response is not None:
        status = response.status_code
        detail = f"HTTP {status}"
        if status in (401, 403):
            return "auth", detail, None
        if status == 429:
            return "rate_limit", detail, retry_after(response.headers.get("Retry-After"))
        if status in (414, 431):
            return "too_long", detail, None
        if status in (408, 425, 502, 503, 504):
            return "unavailable", detail, retry_after(response.headers.get("Retry-After"))
        if status >= 500:
            return "server", detail, None
        return "refused", detail, None
    # (not urllib3's TimeoutError: its NewConnectionError, a refused connection, is one too)
    if _in_chain(exc, requests.Timeout):
        return "unavailable", "timeout", None
    if _in_chain(exc, requests.ConnectionError):
        return "unavailable", "connection failed", None
    if _in_chain(exc, requests.RequestException) or _in_chain(exc, urllib3.exceptions.HTTPError):
        return "unavailable", f"request failed ({exc.__class__.__name__})", None
    # not a network, HTTP or JSON failure: a bug here or in the SDK; the innermost cause is
    # the one to report (the SDK's wrapper text may quote request headers)
    raise _chain(exc)[-1]


def _chain(exc: BaseException | None) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _in_chain(exc: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(e, kind) for e in _chain(exc))


def response_in_chain(exc: BaseException) -> requests.Response | None:
    for e in _chain(exc):
        response = getattr(e, "response", None)
        if isinstance(response, requests.Response):
            return response
    return None


def retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
