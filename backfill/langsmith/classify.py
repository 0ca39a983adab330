"""What a failed request to LangSmith means: pure functions of an exception and its answer.

``classify`` sorts a failure into the kinds ``Transport`` acts on; ``not_the_api`` tells an
answer that no LangSmith API gives; ``retry_after`` reads the header; the chain helpers look
through the SDK's wrappers for the cause. No I/O, no state: tested without a server (tests/unit).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
from urllib.parse import urljoin

import requests
import urllib3


class NotAnArray(ValueError):
    """The answer is JSON, but not the array GET /feedback returns."""


#: What the API never answers to the list endpoints we call (GET /feedback, GET /sessions?name=):
#: a path it does not have, a method it does not take. The address is not the API's, and every
#: request gets the same: no run is the cause.
NOT_FOUND = (404, 405)


def classify(exc: BaseException) -> tuple[str, str, float | None]:
    """(kind, one-line detail without secrets, Retry-After seconds) for a failed request.

    kind: auth (stop everything), not_api (404/405: the address is not the API; stop
    everything), rate_limit (429: wait it out), too_long (414/431: fewer ids per request),
    server (500 and other 5xx: the API or one run of the request), unavailable
    (502/503/504/408/425, timeouts, lost connections: retry, then probe), refused (other
    4xx: split), malformed (a body that is not a JSON array: retry, split).

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
        if status in NOT_FOUND:
            return "not_api", f"answered {status} {response.reason or ''}".strip(), None
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


def not_the_api(response: requests.Response) -> str | None:
    """Why an answer that is no HTTP error cannot be the API's (None: it may be).

    A redirect: the API redirects nothing, and a login page or another host must not get the
    key (the client follows no redirect). A body declared other than JSON, such as the web
    app's HTML page at the address of the UI. (A body declared JSON that does not parse may be
    a transmission's fault: that is ``classify``'s "malformed", and is retried.)
    """
    status = response.status_code
    said = f"{status} {response.reason or ''}".strip()
    if 300 <= status < 400:
        where = response.headers.get("Location")
        if not where:
            return f"answered {said}, a redirect"
        return f"answered {said}, a redirect to {urljoin(response.url or '', where)[:200]}"
    media = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        what = "an HTML page" if media in ("text/html", "application/xhtml+xml") else "a body"
        return f"answered {said} with {what} ({media}), not JSON"
    return None


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
