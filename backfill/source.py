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

import os
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from langsmith import Client
from requests import Response
from urllib3.util.retry import Retry

from .classify import NotAnArray, classify, response_in_chain
from .config import LangSmith
from .errors import ApiAuthError, ApiUnavailable, Interrupted
from .feedback import canonical_run_id
from .pack import MAX_IDS

#: How often a request on the wire looks whether a second signal abandoned it.
ABANDON_POLL_S = 0.05

#: The API's maximum page size for GET /feedback.
PAGE_LIMIT = 100
#: Pages of one request before paging is given up (the request is split instead): 50,000
#: records. A batch needing more is implausible; a server that ignores ``offset`` is not.
MAX_PAGES = 500
#: 429 without Retry-After: the first wait, doubled on each 429 in a row up to the cap. The
#: SDK waits 30 s; LangSmith's windows last 10-60 s, so 10, 20, 40, 60 covers them in at
#: most 4 requests while never asking more often than every 10 s inside a window.
RATE_LIMIT_FIRST_S = 10.0
RATE_LIMIT_CAP_S = 60.0
#: Uninterrupted 429s for this long end the run: the key is shared with the extractor, and a
#: limit that never lifts is somebody else's problem to look at.
RATE_LIMIT_BUDGET_S = 15 * 60.0
#: The backoff between outage probes never exceeds this (one request per step).
OUTAGE_CAP_S = 60.0
#: After a 429 the interval between requests widens (doubles from at least PACE_MIN_S, up to
#: PACE_CAP_S); this many successes in a row bring it back to --delay-ms.
PACE_MIN_S = 0.5
PACE_CAP_S = 8.0
PACE_RECOVER = 10


class BatchFailed(Exception):
    """The API refused this request as a whole: split it to find the culprit.

    ``seq`` is the number of the request that failed (``FeedbackSource.requests_sent``).
    ``needs_proof``: the failure is of a kind an API incident also produces (a 5xx, a
    timeout): before a single run is written off for it, a request made after it must have
    succeeded (the API is healthy, so the run is the cause). A refusal that only the request's
    content explains (a 4xx, a malformed record, paging that does not advance) needs none.
    """

    def __init__(self, detail: str, seq: int = 0, *, needs_proof: bool = False) -> None:
        super().__init__(detail)
        self.detail, self.seq, self.needs_proof = detail, seq, needs_proof


class UrlTooLong(Exception):
    """414 or 431: the query string (one ``run=`` per id) is longer than a server accepts."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class _Failed(Exception):
    """One request failed, classified (see ``classify``)."""

    def __init__(self, kind: str, detail: str, retry_after: float | None) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.retry_after = kind, detail, retry_after


@dataclass
class Pacer:
    """At least ``delay_s`` between two requests as the API receives them, pages and retries included.

    The interval is counted from the end of the previous request (its answer or its failure),
    not from its start: the API may receive a request at any moment until it answers (a new
    connection's TCP/TLS handshake delays the first request and every retry after a reset),
    so counting from the start would let the next request arrive less than ``delay_s`` later.

    After a 429 the interval widens (``widen``) and ``PACE_RECOVER`` successes in a row
    (``succeeded``) bring it back to ``delay_s``: the key is shared with the extractor, so
    once the limit has been hit we leave it room for a while rather than hit it again.
    """

    delay_s: float
    stop: threading.Event
    _last: float | None = None
    interval_s: float = -1.0
    _good: int = 0

    def __post_init__(self) -> None:
        if self.interval_s < 0:
            self.interval_s = self.delay_s

    def sleep(self, seconds: float) -> None:
        if seconds > 0 and self.stop.wait(seconds):
            raise Interrupted()
        if self.stop.is_set():
            raise Interrupted()

    def wait_turn(self) -> None:
        if self._last is not None:
            self.sleep(self._last + self.interval_s - time.monotonic())
        elif self.stop.is_set():
            raise Interrupted()

    def finished(self) -> None:
        """The request just made has ended: the next one waits ``interval_s`` from now."""
        self._last = time.monotonic()

    def widen(self) -> None:
        self._good = 0
        self.interval_s = min(PACE_CAP_S, max(PACE_MIN_S, 2 * self.interval_s, self.delay_s))

    def succeeded(self) -> None:
        self._good += 1
        if self._good >= PACE_RECOVER:
            self.interval_s = self.delay_s


@dataclass
class FeedbackSource:
    """Fetches the feedback records of batches of runs from LangSmith.

    What a failed request means, and what it costs:

    * 429: the rate limit (shared with the extractor). Waited out: Retry-After when given,
      else ``rate_limit_first_s`` doubling to 60 s; the pacing widens. Never marks a row;
      ends the run (``ApiUnavailable``) only after ``rate_limit_budget_s`` of 429s in a row.
    * 500: maybe the API, maybe one run in the request (a "poisoned" run). Raised at once as
      ``BatchFailed(needs_proof=True)``: ``isolate.fetch_isolating`` halves the request and
      asks ``healthy()`` before it believes a run is the cause.
    * 502/503/504/408, timeouts, lost connections: the API or the path to it. The same
      request is retried with backoff ``max_retries`` times, then ``healthy()`` decides.
    * other 4xx, a malformed body (after ``max_retries``): this request is refused; split.
    * 414/431: ``UrlTooLong``; the caller asks fewer ids per request from then on.
    * 401/403: ``ApiAuthError``, everything stops.

    ``healthy()`` is the outage test: a probe naming only a run known to be fine (one the API
    answered in this invocation; before any, a random UUID, which names no run's data). If
    the probe is answered, the API works and the failure was the request's own. If not, this
    is an outage: probes, one per step, back off exponentially with jitter up to 60 s, for
    at most ``outage_wait_s``; then ``ApiUnavailable`` (exit 1). An outage marks no row and
    spends no attempt. Anything that is not a network, HTTP or JSON failure (a bug) is not
    classified: it propagates.
    """

    settings: LangSmith
    delay_ms: int = 1000
    max_retries: int = 5
    backoff_s: float = 0.5
    stop: threading.Event = field(default_factory=threading.Event)
    #: set by a second signal: the request on the wire is given up at once (``_get``)
    abandon: threading.Event = field(default_factory=threading.Event)
    outage_wait_s: float = 600.0
    rate_limit_first_s: float = RATE_LIMIT_FIRST_S
    rate_limit_budget_s: float | None = None  # None: RATE_LIMIT_BUDGET_S, read when needed
    requests_sent: int = 0
    requests_failed: int = 0
    stray: int = 0  # records dropped: for runs that were not asked
    duplicates: int = 0  # records dropped: an id already seen in this fetch
    rate_limit_wait: float = 0.0  # seconds waited on 429s, this invocation
    outage_wait: float = 0.0  # seconds waited on failing requests and outage probes
    max_ids: int = MAX_IDS  # run ids per request (the API's limit); lowered by a 414/431
    records_received: int = 0  # records kept from the API's answers (the lower bound counts them)
    last_success: int = 0  # ``requests_sent`` when the latest request succeeded
    answered: bool = False  # any HTTP answer at all yet (else a connection failure is a bad endpoint)
    #: (requests, errors, rate-limit wait, outage wait) already added to the invocation row
    recorded: tuple[int, int, float, float] = (0, 0, 0.0, 0.0)

    def __post_init__(self) -> None:
        s = self.settings
        self.pacer = Pacer(self.delay_ms / 1000, self.stop)
        self._known_good: str | None = None
        self._limited_s = 0.0  # waited on the current streak of 429s
        self._limited_n = 0
        self._episode_s = 0.0  # waited on the current streak of failures (reset by a success)
        self._episode_n = 0
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

    def unrecorded(self) -> tuple[int, int, float, float]:
        """Requests, errors and seconds waited (429s, outages) not yet on the invocation row."""
        now = (self.requests_sent, self.requests_failed, self.rate_limit_wait, self.outage_wait)
        return (
            now[0] - self.recorded[0],
            now[1] - self.recorded[1],
            now[2] - self.recorded[2],
            now[3] - self.recorded[3],
        )

    def record(self, delta: tuple[int, int, float, float]) -> None:
        """``delta`` (from ``unrecorded``) is now on the invocation row."""
        self.recorded = (
            self.recorded[0] + delta[0],
            self.recorded[1] + delta[1],
            self.recorded[2] + delta[2],
            self.recorded[3] + delta[3],
        )

    def fetch(self, run_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """All records of these runs (keyed by the ids given), following ``offset`` pages.

        Records for runs not asked, and repeats of a record id, are dropped and counted. A
        full page that brings no new record (a server ignoring ``offset`` serves the first
        page again), or more than ``MAX_PAGES`` pages, raise ``BatchFailed``: halves fit in
        fewer pages, and a single run that still cannot be paged is failed, never stored
        with duplicates.
        """
        # callers pass valid ids only (invalid ones are recorded without asking the API)
        wanted = {canonical_run_id(r) or r: r for r in run_ids}
        asked = list(wanted)
        out: dict[str, list[dict[str, Any]]] = {r: [] for r in run_ids}
        seen: set[Any] = set()
        offset = 0
        pages = 0
        while True:
            page = self.get_page({"run": asked, "limit": PAGE_LIMIT, "offset": offset})
            pages += 1
            new = 0
            for rec in page:
                if not isinstance(rec, dict):
                    raise BatchFailed("malformed answer: a feedback record is not a JSON object", self.requests_sent)
                owner = wanted.get(canonical_run_id(str(rec.get("run_id"))) or "")
                if owner is None:
                    self.stray += 1
                    continue
                key = rec.get("id")
                if key is not None and key in seen:
                    self.duplicates += 1
                    continue
                seen.add(key)
                new += 1
                self.records_received += 1
                out[owner].append(rec)
            if len(page) < PAGE_LIMIT:
                self._known_good = asked[0]
                return out
            if new == 0 or pages >= MAX_PAGES:
                raise BatchFailed("paging did not advance", self.requests_sent)
            offset += len(page)

    def get_page(self, params: dict[str, Any], path: str = "/feedback") -> list[Any]:
        """One page (a JSON array) of GET ``path`` with these query parameters, through every guard above."""
        failures = 0  # refused or malformed answers to this request
        unavailable = 0  # gateway errors, timeouts, lost connections of this request
        while True:
            try:
                return self._attempt(params, path)
            except _Failed as f:
                if f.kind == "rate_limit":
                    self._rate_limited(f)
                    continue
                if f.kind == "too_long":
                    raise UrlTooLong(f.detail) from None
                if f.kind == "server":
                    raise BatchFailed(f.detail, self.requests_sent, needs_proof=True) from None
                if f.kind == "unavailable":
                    unavailable += 1
                    wait = f.retry_after if f.retry_after is not None else self._backoff(unavailable)
                    # retries count against --outage-wait too: past it, the probe decides at once
                    if unavailable < self.max_retries and self._episode_s + wait <= self.outage_wait_s:
                        self._wait_outage(wait)
                        continue
                    if not self.answered:
                        # nothing has ever answered: a wrong endpoint or no route to it, which
                        # waiting will not fix; say so now (cron tries again at its next tick)
                        raise self._unavailable(f.detail, waited=False) from None
                    if self.healthy(f.detail):
                        # the API answers others: this request is the problem (say, a run whose
                        # answer always times out); the probe just proved the API healthy
                        raise BatchFailed(f.detail, self.requests_sent) from None
                    unavailable = 0  # an outage was waited out: ask again
                    continue
                failures += 1
                if f.kind == "refused" and failures >= 2:
                    raise BatchFailed(f.detail, self.requests_sent) from None
                if failures >= self.max_retries:  # malformed every time
                    raise BatchFailed(f.detail, self.requests_sent) from None
                self.pacer.sleep(self._backoff(failures))

    def proven(self, exc: BatchFailed) -> bool:
        """Is the refusal ``exc`` the request's own? Yes when it needs no proof, when a request
        made after it succeeded, or when ``healthy`` finds the API answering; False: an outage
        was waited out, and the request should be asked again."""
        return not exc.needs_proof or self.last_success > exc.seq or self.healthy(exc.detail)

    def healthy(self, detail: str) -> bool:
        """Is the API answering? True at once if a probe naming a run known to be fine is
        answered; otherwise an outage: probe again with exponential backoff (one request per
        step) until one is answered (False: ask your request again) or ``outage_wait_s`` is
        spent (``ApiUnavailable``)."""
        step = 0
        while True:
            try:
                self._attempt({"run": [self._known_good or str(uuid.uuid4())], "limit": 1, "offset": 0})
                return step == 0
            except _Failed as f:
                if f.kind == "rate_limit":
                    self._rate_limited(f)
                    continue
                detail = f.detail
            step += 1
            wait = self._backoff(self._episode_n)
            if self._episode_s + wait > self.outage_wait_s:
                raise self._unavailable(detail, waited=True)
            self._wait_outage(wait)

    def _attempt(self, params: dict[str, Any], path: str = "/feedback") -> list[Any]:
        """One paced request: the JSON array, or ``_Failed``; auth failures stop everything."""
        self.pacer.wait_turn()
        self.requests_sent += 1
        try:
            response = self._get(params, path)
            self.answered = True
            body = response.json()
            if not isinstance(body, list):
                raise NotAnArray("not a JSON array")
        except Interrupted:  # a second signal abandoned the request on the wire
            raise
        except Exception as exc:
            kind, detail, retry_after = classify(exc)  # re-raises what is not ours to classify
            self.requests_failed += 1
            self._episode_n += kind != "rate_limit"
            if response_in_chain(exc) is not None:
                self.answered = True
            if kind == "auth":
                raise ApiAuthError(
                    f"LangSmith refused the API key ({detail}): check LANGSMITH_API_KEY"
                    " and LANGSMITH_WORKSPACE_ID; no row was marked"
                ) from None
            raise _Failed(kind, detail, retry_after) from None
        self.last_success = self.requests_sent
        self._episode_s, self._episode_n = 0.0, 0
        self._limited_s, self._limited_n = 0.0, 0
        self.pacer.succeeded()
        return body

    def _get(self, params: dict[str, Any], path: str = "/feedback") -> Response:
        """One GET (of /feedback, unless told), through the client (its auth and workspace headers, its session).

        The request runs in a daemon thread while this one watches ``abandon``: a second signal
        gives the request up at once (``Interrupted``), at this known point rather than from
        inside the socket code; the thread's late answer is dropped.
        """
        box: dict[str, Any] = {}
        done = threading.Event()

        def call() -> None:
            try:
                box["response"] = self.client.request_with_retries("GET", path, params=params, stop_after_attempt=1)
            except BaseException as exc:  # handed to the caller's thread as it is
                box["error"] = exc
            finally:
                done.set()

        try:
            threading.Thread(target=call, name="backfill-request", daemon=True).start()
            while not done.wait(ABANDON_POLL_S):
                if self.abandon.is_set():
                    raise Interrupted("interrupted again: the batch in flight was abandoned")
        finally:
            self.pacer.finished()
        if "error" in box:
            raise box["error"]
        response: Response = box["response"]
        return response

    def _rate_limited(self, f: _Failed) -> None:
        """Wait out a 429: Retry-After, else a default doubling from ``rate_limit_first_s``."""
        self._limited_n += 1
        wait = f.retry_after
        if wait is None:
            wait = min(RATE_LIMIT_CAP_S, self.rate_limit_first_s * 2 ** (self._limited_n - 1))
        budget = RATE_LIMIT_BUDGET_S if self.rate_limit_budget_s is None else self.rate_limit_budget_s
        if self._limited_s + wait > budget:
            raise ApiUnavailable(
                f"LangSmith at {self.settings.endpoint} kept answering 429 (rate limited) for"
                f" {self._limited_s:.0f}s; the key is shared with the extractor: stopped, nothing of the"
                " current batch was marked"
            )
        self.pacer.widen()
        self._limited_s += wait
        self.rate_limit_wait += self._timed_sleep(wait)

    def _wait_outage(self, seconds: float) -> None:
        self._episode_s += seconds
        self.outage_wait += self._timed_sleep(seconds)

    def _timed_sleep(self, seconds: float) -> float:
        started = time.monotonic()
        try:
            self.pacer.sleep(seconds)
        finally:
            slept = time.monotonic() - started
        return slept

    def _unavailable(self, detail: str, *, waited: bool) -> ApiUnavailable:
        tail = (
            f" and was still failing after {self._episode_s:.0f}s of --outage-wait {self.outage_wait_s:.0f}s"
            if waited
            else ""
        )
        n = self._episode_n
        failed = "failed once" if n == 1 else f"failed {n} times in a row"
        return ApiUnavailable(
            f"LangSmith at {self.settings.endpoint} {failed} ({detail}){tail};"
            " stopped, nothing of the current batch was marked"
        )

    def _backoff(self, failures: int) -> float:
        """Exponential backoff with jitter: base * 2^(n-1), capped at 60 s, times a random factor in [0.5, 1)."""
        return min(OUTAGE_CAP_S, self.backoff_s * 2 ** (max(1, failures) - 1)) * random.uniform(0.5, 1.0)


__all__ = ["BatchFailed", "FeedbackSource", "Interrupted", "UrlTooLong", "canonical_run_id", "classify"]
