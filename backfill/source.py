"""Feedback in from LangSmith: raw records for a batch of run ids, paced and retried.

We go through the ``langsmith`` client (its endpoint, auth headers, workspace header and
session) but not through ``Client.list_feedback``: that wraps each record in the SDK's
``Feedback`` model, which drops fields it does not know and rejects some values (a null
``created_at``). We page ``GET /feedback`` ourselves with ``request_with_retries`` and keep
the JSON objects exactly as the API returned them.

Retries happen here and only here: the client's urllib3 ``Retry`` is replaced by one that
never retries (SDK releases differ on whether they retry 429), so that ``--delay-ms``,
Retry-After and our backoff are the whole story.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import requests
from langsmith import Client
from requests import Response
from urllib3.util.retry import Retry

from .config import LangSmith
from .errors import ApiAuthError, ApiUnavailable, BackfillError

#: The API's maximum page size for GET /feedback.
PAGE_LIMIT = 100


class Interrupted(BackfillError):
    """Interrupted by a signal; the current batch was abandoned, nothing of it was written."""

    exit_code = 130


class BatchFailed(Exception):
    """The API refused this request as a whole (500 or a 4xx): split it to find the culprit."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def canonical_run_id(run_id: str) -> str | None:
    """The run id as the API writes it (lower-case UUID), or None when it is not a UUID."""
    try:
        return str(uuid.UUID(run_id.strip()))
    except (ValueError, AttributeError):
        return None


@dataclass
class Pacer:
    """At least ``delay_s`` between two requests as the API receives them, pages and retries included.

    The interval is counted from the end of the previous request (its answer or its failure),
    not from its start: the API may receive a request at any moment until it answers (a new
    connection's TCP/TLS handshake delays the first request and every retry after a reset),
    so counting from the start would let the next request arrive less than ``delay_s`` later.
    """

    delay_s: float
    stop: threading.Event
    _last: float | None = None

    def sleep(self, seconds: float) -> None:
        if seconds > 0 and self.stop.wait(seconds):
            raise Interrupted()
        if self.stop.is_set():
            raise Interrupted()

    def wait_turn(self) -> None:
        if self._last is not None:
            self.sleep(self._last + self.delay_s - time.monotonic())
        elif self.stop.is_set():
            raise Interrupted()

    def finished(self) -> None:
        """The request just made has ended: the next one waits ``delay_s`` from now."""
        self._last = time.monotonic()


@dataclass
class FeedbackSource:
    """Fetches the feedback records of batches of runs from LangSmith."""

    settings: LangSmith
    delay_ms: int = 1000
    max_retries: int = 5
    backoff_s: float = 0.5
    stop: threading.Event = field(default_factory=threading.Event)
    requests: int = 0
    errors: int = 0
    stray: int = 0  # records dropped: for runs that were not asked
    duplicates: int = 0  # records dropped: an id already seen in this fetch

    def __post_init__(self) -> None:
        s = self.settings
        self.pacer = Pacer(self.delay_ms / 1000, self.stop)
        self.client = Client(
            api_url=s.endpoint,
            api_key=s.api_key,
            workspace_id=s.workspace_id,
            auto_batch_tracing=False,  # no background thread, no tracing calls
            retry_config=Retry(total=0, redirect=0, raise_on_status=False, respect_retry_after_header=False),
            timeout_ms=int(s.timeout_s * 1000),
            profile_config_path=os.devnull,  # never read ~/.langsmith/config.json
        )

    def close(self) -> None:
        self.client.session.close()

    def fetch(self, run_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """All records of these runs (keyed by the ids given), following ``offset`` pages.

        Records for runs not asked, and repeats of a record id, are dropped and counted.
        """
        # callers pass valid ids only (invalid ones are recorded without asking the API)
        wanted = {canonical_run_id(r) or r: r for r in run_ids}
        asked = list(wanted)
        out: dict[str, list[dict[str, Any]]] = {r: [] for r in run_ids}
        seen: set[Any] = set()
        offset = 0
        while True:
            page = self._page(asked, offset)
            for rec in page:
                if not isinstance(rec, dict):
                    raise BatchFailed("malformed answer: a feedback record is not a JSON object")
                owner = wanted.get(canonical_run_id(str(rec.get("run_id"))) or "")
                if owner is None:
                    self.stray += 1
                    continue
                key = rec.get("id")
                if key is not None and key in seen:
                    self.duplicates += 1
                    continue
                seen.add(key)
                out[owner].append(rec)
            if len(page) < PAGE_LIMIT:
                return out
            offset += len(page)

    def _page(self, run_ids: list[str], offset: int) -> list[Any]:
        failures = 0
        while True:
            self.pacer.wait_turn()
            self.requests += 1
            try:
                body = self._get(run_ids, offset).json()
                if not isinstance(body, list):
                    raise ValueError("not a JSON array")
                return body
            except Interrupted:  # a second signal, raised from inside the request
                raise
            except Exception as exc:  # classified below; the SDK's own text may hold key fragments
                self.errors += 1
                kind, detail, retry_after = classify(exc)
                failures += 1
                if kind == "auth":
                    raise ApiAuthError(
                        f"LangSmith refused the API key ({detail}): check LANGSMITH_API_KEY"
                        " and LANGSMITH_WORKSPACE_ID; no row was marked"
                    ) from None
                if kind == "batch" and failures >= 2:
                    raise BatchFailed(detail) from None
                if failures >= self.max_retries:
                    if kind == "malformed":
                        raise BatchFailed(detail) from None
                    raise ApiUnavailable(
                        f"LangSmith at {self.settings.endpoint} failed {failures} times in a row ({detail});"
                        " stopped, nothing of the current batch was marked"
                    ) from None
                self.pacer.sleep(retry_after if retry_after is not None else self._backoff(failures))

    def _get(self, run_ids: list[str], offset: int) -> Response:
        """One GET /feedback, through the client (its auth and workspace headers, its session)."""
        try:
            return self.client.request_with_retries(
                "GET",
                "/feedback",
                params={"run": run_ids, "limit": PAGE_LIMIT, "offset": offset},
                stop_after_attempt=1,
            )
        finally:
            self.pacer.finished()

    def _backoff(self, failures: int) -> float:
        """Exponential backoff with jitter: base * 2^(n-1), times a random factor in [0.5, 1)."""
        return min(60.0, self.backoff_s * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)


def classify(exc: BaseException) -> tuple[str, str, float | None]:
    """(kind, one-line detail without secrets, Retry-After seconds) for a failed request.

    kind: auth (stop everything), batch (this request is refused: split it),
    malformed (bad body), transient (wait and retry).
    """
    if isinstance(exc, ValueError):  # json.JSONDecodeError, requests' JSONDecodeError, ours
        return "malformed", f"malformed JSON answer ({exc.__class__.__name__})", None
    response = _response_in_chain(exc)
    if response is not None:
        status = response.status_code
        detail = f"HTTP {status}"
        if status in (401, 403):
            return "auth", detail, None
        if status in (408, 425, 429) or status in (502, 503, 504):
            return "transient", detail, _retry_after(response.headers.get("Retry-After"))
        return "batch", detail, None
    if _in_chain(exc, requests.Timeout):
        return "transient", "timeout", None
    if _in_chain(exc, requests.ConnectionError):
        return "transient", "connection failed", None
    return "transient", f"request failed ({exc.__class__.__name__})", None


def _chain(exc: BaseException | None) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _in_chain(exc: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(e, kind) for e in _chain(exc))


def _response_in_chain(exc: BaseException) -> requests.Response | None:
    for e in _chain(exc):
        response = getattr(e, "response", None)
        if isinstance(response, requests.Response):
            return response
    return None


def _retry_after(value: str | None) -> float | None:
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
