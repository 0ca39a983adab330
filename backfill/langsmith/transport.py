"""GET requests to LangSmith, paced and retried: the one place that makes an HTTP call.

We go through the ``langsmith`` client (its endpoint, auth headers, workspace header and
session) but not through ``Client.list_feedback``: that wraps each record in the SDK's
``Feedback`` model, which drops fields it does not know and rejects some values (a null
``created_at``). Pages come back as the JSON the API sent.

Retries happen here and only here: the client's urllib3 ``Retry`` is replaced by one that
never retries (SDK releases differ on whether they retry 429), so that ``--delay-ms``,
Retry-After and our backoff are the whole story.

Every request is counted in the ``Tally`` its caller passes: the caller carries it with the
result, so that what a batch cost is known without reading counters another thread moves.

What a failed request means, and what it costs:

* 429: the rate limit (shared with the extractor). Waited out: Retry-After when given,
  else ``rate_limit_first_s`` doubling to 60 s; the pacing widens. Never marks a row;
  ends the run (``ApiUnavailable``) only after ``rate_limit_budget_s`` of 429s in a row.
* 500: maybe the API, maybe one run in the request (a "poisoned" run). Raised at once as
  ``BatchFailed(needs_proof=True)``: ``by_run.fetch_isolating`` halves the request and
  asks ``healthy()`` before it believes a run is the cause.
* 502/503/504/408, timeouts, lost connections: the API or the path to it. The same
  request is retried with backoff ``max_retries`` times, then ``healthy()`` decides.
* other 4xx, a malformed body (after ``max_retries``): this request is refused; split.
* 414/431: ``UrlTooLong``; the caller asks fewer ids per request from then on.
* 401/403: ``ApiAuthError``, everything stops.
* 404/405, a redirect (never followed: it would take the key elsewhere), a body declared
  other than JSON (an HTML page): ``NotLangSmith``, everything stops. The address is not the
  API, every request gets the same, and no run is the cause, so none is written off for it.

``healthy()`` is the outage test: a probe naming only a run known to be fine (one the API
answered in this invocation; before any, a random UUID, which names no run's data). If
the probe is answered, the API works and the failure was the request's own. If not, this
is an outage: probes, one per step, back off exponentially with jitter up to 60 s, for
at most ``outage_wait_s``; then ``ApiUnavailable`` (exit 1). An outage marks no row and
spends no attempt. Anything that is not a network, HTTP or JSON failure (a bug) is not
classified: it propagates.

While it waits out a 429 or an outage, the transport says so at least every
``waits.WAIT_LINE_S`` (``waits.Waits``): what it waits for, since when, until when.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from langsmith import Client
from requests import Response
from urllib3.util.retry import Retry

from backfill.config import LangSmith
from backfill.domain.packing import MAX_IDS
from backfill.domain.rows import Tally
from backfill.errors import ApiAuthError, ApiUnavailable, Interrupted, NotLangSmith
from backfill.langsmith.classify import NotAnArray, classify, not_the_api, response_in_chain
from backfill.langsmith.pacing import Pacer
from backfill.langsmith.waits import Waits

#: How often a request on the wire looks whether a second signal abandoned it.
ABANDON_POLL_S = 0.05
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


class BatchFailed(Exception):
    """The API refused this request as a whole: split it to find the culprit.

    ``seq`` is the number of the request that failed (``Transport.sent``). ``needs_proof``:
    the failure is of a kind an API incident also produces (a 5xx, a timeout): before a single
    run is written off for it, a request made after it must have succeeded (the API is
    healthy, so the run is the cause). A refusal that only the request's content explains (a
    4xx, a malformed record, paging that does not advance) needs none.
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
class Transport:
    """Pages of GET requests to LangSmith, through every guard of a shared, rate-limited API
    (what each failure means and costs: this module's docstring). Threads take turns, one
    request with its retries and waits at a time: the pipeline's fetch ahead and a project's
    listing on its worker share one transport, and so one pacing."""

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
    max_ids: int = MAX_IDS  # run ids per request (the API's limit); lowered by a 414/431
    sent: int = 0  # requests sent: each request's number, which ``BatchFailed.seq`` names
    last_success: int = 0  # ``sent`` when the latest request succeeded
    answered: bool = False  # any HTTP answer at all yet (else a connection failure is a bad endpoint)
    #: a run the API answered for: the outage probe names it
    known_good: str | None = None

    def __post_init__(self) -> None:
        s = self.settings
        self._turn = threading.RLock()
        self.waits = Waits()
        self.pacer = Pacer(self.delay_ms / 1000, self.stop, tick=self.waits.tick)
        self._limited_s, self._limited_n = 0.0, 0  # waited on the current streak of 429s
        self._episode_s, self._episode_n = 0.0, 0  # ... of failures (reset by a success)
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

    def get_page(self, params: dict[str, Any], tally: Tally, path: str = "/feedback") -> list[Any]:
        """One page (a JSON array) of GET ``path`` with these query parameters, through every guard above."""
        with self._turn:  # one request cycle at a time: its pacing, retries and waits
            failures = 0  # refused or malformed answers to this request
            unavailable = 0  # gateway errors, timeouts, lost connections of this request
            while True:
                try:
                    return self._attempt(params, tally, path)
                except _Failed as f:
                    if f.kind == "rate_limit":
                        self._rate_limited(f, tally)
                        continue
                    if f.kind == "too_long":
                        raise UrlTooLong(f.detail) from None
                    if f.kind == "server":
                        raise BatchFailed(f.detail, self.sent, needs_proof=True) from None
                    if f.kind == "unavailable":
                        unavailable += 1
                        wait = f.retry_after if f.retry_after is not None else backoff(self.backoff_s, unavailable)
                        # retries count against --outage-wait too: past it, the probe decides at once
                        if unavailable < self.max_retries and self._episode_s + wait <= self.outage_wait_s:
                            self._wait_outage(wait, f.detail, tally)
                            continue
                        if not self.answered:
                            # nothing has ever answered: a wrong endpoint or no route to it, which
                            # waiting will not fix; say so now (cron tries again at its next tick)
                            raise self._unavailable(f.detail, waited=False) from None
                        if self.healthy(f.detail, tally):
                            # the API answers others: this request is the problem (say, a run whose
                            # answer always times out); the probe just proved the API healthy
                            raise BatchFailed(f.detail, self.sent) from None
                        unavailable = 0  # an outage was waited out: ask again
                        continue
                    failures += 1
                    if f.kind == "refused" and failures >= 2:
                        raise BatchFailed(f.detail, self.sent) from None
                    if failures >= self.max_retries:  # malformed every time
                        raise BatchFailed(f.detail, self.sent) from None
                    self.pacer.sleep(backoff(self.backoff_s, failures))

    def proven(self, exc: BatchFailed, tally: Tally) -> bool:
        """Is the refusal ``exc`` the request's own? Yes when it needs no proof, when a request
        made after it succeeded, or when ``healthy`` finds the API answering; False: an outage
        was waited out, and the request should be asked again."""
        return not exc.needs_proof or self.last_success > exc.seq or self.healthy(exc.detail, tally)

    def healthy(self, detail: str, tally: Tally) -> bool:
        """Is the API answering? True at once if a probe naming a run known to be fine is
        answered; otherwise an outage: probe again with exponential backoff (one request per
        step) until one is answered (False: ask your request again) or ``outage_wait_s`` is
        spent (``ApiUnavailable``)."""
        with self._turn:
            step = 0
            while True:
                try:
                    self._attempt({"run": [self.known_good or str(uuid.uuid4())], "limit": 1, "offset": 0}, tally)
                    return step == 0
                except _Failed as f:
                    if f.kind == "rate_limit":
                        self._rate_limited(f, tally)
                        continue
                    detail = f.detail
                step += 1
                wait = backoff(self.backoff_s, self._episode_n)
                if self._episode_s + wait > self.outage_wait_s:
                    raise self._unavailable(detail, waited=True)
                self._wait_outage(wait, detail, tally)

    def _attempt(self, params: dict[str, Any], tally: Tally, path: str = "/feedback") -> list[Any]:
        """One paced request: the JSON array, or ``_Failed``; auth failures stop everything."""
        self.pacer.wait_turn()
        self.sent += 1
        tally.requests += 1
        try:
            try:
                response = abandonable_get(self.client, params, path, self.abandon, self.waits.tick)
            finally:
                self.pacer.finished()
            self.answered = True
            why = not_the_api(response)
            if why is not None:
                tally.errors += 1
                raise self.not_the_api(path, why)
            body = response.json()
            if not isinstance(body, list):
                raise NotAnArray("not a JSON array")
        except (Interrupted, NotLangSmith):  # a second signal abandoned the request on the wire; not the API
            raise
        except Exception as exc:
            kind, detail, retry_after = classify(exc)  # re-raises what is not ours to classify
            tally.errors += 1
            self._episode_n += kind != "rate_limit"
            if response_in_chain(exc) is not None:
                self.answered = True
            if kind == "auth":
                raise ApiAuthError(
                    f"LangSmith refused the API key ({detail}): check LANGSMITH_API_KEY"
                    " and LANGSMITH_WORKSPACE_ID; no row was marked"
                ) from None
            if kind == "not_api":
                raise self.not_the_api(path, detail) from None
            raise _Failed(kind, detail, retry_after) from None
        self.last_success = self.sent
        self._episode_s, self._episode_n = 0.0, 0
        self._limited_s, self._limited_n = 0.0, 0
        self.pacer.succeeded()
        self.waits.over()
        return body

    def not_the_api(self, path: str, why: str) -> NotLangSmith:
        """The error that stops everything: the endpoint answered ``why`` to GET ``path``."""
        return not_langsmith(self.settings.endpoint, path, why, marked_before=self.last_success > 0)

    def _rate_limited(self, f: _Failed, tally: Tally) -> None:
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
        self.waits.rate_limit(wait, budget)
        self._limited_s += wait
        tally.rate_limit_wait_s += self._timed_sleep(wait)

    def _wait_outage(self, seconds: float, detail: str, tally: Tally) -> None:
        self.waits.outage(self.settings.endpoint, detail, self._episode_n, seconds, self.outage_wait_s)
        self._episode_s += seconds
        tally.outage_wait_s += self._timed_sleep(seconds)

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
        return ApiUnavailable(
            f"LangSmith at {self.settings.endpoint} failed {n} time{'s' if n != 1 else ''} in a row ({detail}){tail};"
            " stopped, nothing of the current batch was marked"
        )


def not_langsmith(endpoint: str, path: str, why: str, *, marked_before: bool) -> NotLangSmith:
    """``NotLangSmith`` in one line: the URL, what it answered, what to do, what was marked."""
    tail = "stopped, nothing of the current batch was marked" if marked_before else "no row was marked"
    return NotLangSmith(
        f"LANGSMITH_ENDPOINT {endpoint} is not the LangSmith API: GET {path} {why}; set it to the API's URL"
        f" (such as https://api.smith.langchain.com), not the web app's; {tail}"
    )


def backoff(base_s: float, failures: int) -> float:
    """Exponential backoff with jitter: base * 2^(n-1), capped at 60 s, times a random factor in [0.5, 1)."""
    return min(OUTAGE_CAP_S, base_s * 2 ** (max(1, failures) - 1)) * random.uniform(0.5, 1.0)


def abandonable_get(
    client: Client,
    params: dict[str, Any],
    path: str,
    abandon: threading.Event,
    tick: Callable[[], float] | None = None,
) -> Response:
    """One GET through the client (its auth and workspace headers, its session), redirects not
    followed (a redirect would send the key elsewhere; ``not_the_api`` judges it).

    The request runs in a daemon thread while this one watches ``abandon``: a second signal
    gives the request up at once (``Interrupted``), at this known point rather than from
    inside the socket code; the thread's late answer is dropped. ``tick`` is called meanwhile
    (the waiting lines go on while a request of an outage is on the wire).
    """
    box: dict[str, Any] = {}
    done = threading.Event()

    def call() -> None:
        try:
            box["response"] = client.request_with_retries(
                "GET", path, params=params, stop_after_attempt=1, allow_redirects=False
            )
        except BaseException as exc:  # handed to the caller's thread as it is
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=call, name="backfill-request", daemon=True).start()
    while not done.wait(ABANDON_POLL_S):
        if abandon.is_set():
            raise Interrupted("interrupted again: the batch in flight was abandoned")
        if tick is not None:
            tick()
    if "error" in box:
        raise box["error"]
    response: Response = box["response"]
    return response
