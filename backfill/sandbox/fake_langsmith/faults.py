"""The fake's fault-injection API: what the next requests answer, incidents, data quirks.

``Faults`` holds the state under one lock; ``FakeLangSmith`` (server.py) consults it for each
GET /feedback (``_take``, ``_infrastructure``, ``_next_failure``).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from backfill.sandbox.fake_langsmith.plumbing import canonical


@dataclass(frozen=True)
class Failure:
    status: int
    retry_after: str | None
    body: str | None


@dataclass
class Window:
    """Every /feedback request answers ``status`` for ``seconds`` (or ``requests`` requests),
    from the request that arrives after the first ``after`` ones."""

    status: int
    seconds: float | None
    requests: int | None
    after: int
    retry_after: str | None
    started_at: float | None = None
    served: int = 0

    def strikes(self, seen: int, now: float) -> bool:
        if self.started_at is None:
            if seen <= self.after:
                return False
            self.started_at = now
        if self.requests is not None:
            if self.served >= self.requests:
                return False
            self.served += 1
            return True
        return self.seconds is not None and now < self.started_at + self.seconds


class Faults:
    """The faults to inject, set by the methods below, read by the serving code."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._overrides: dict[str, list[dict[str, Any]]] = {}
        self._poisoned: set[str] = set()
        self._failures: deque[Failure] = deque()
        self._stalls: deque[float] = deque()
        self._truncate = 0
        self._reset = 0
        self._stray: list[dict[str, Any]] = []
        self._duplicate = False
        self._ignore_offset = False
        self._max_ids: tuple[int, int] | None = None
        self._windows: list[Window] = []
        self._listing_misses: int | None = None
        self._seen = 0  # /feedback requests received

    def set_feedback(self, run_id: str, records: list[dict[str, Any]]) -> None:
        """Serve exactly ``records`` for ``run_id`` instead of the generated ones."""
        with self._lock:
            self._overrides[canonical(run_id)] = list(records)

    def fail_next(
        self, status: int, *, times: int = 1, retry_after: str | None = None, body: str | None = None
    ) -> None:
        """The next ``times`` /feedback requests answer ``status`` (with Retry-After if given)."""
        with self._lock:
            self._failures.extend(Failure(status, retry_after, body) for _ in range(times))

    def poison(self, run_id: str) -> None:
        """Any /feedback request asking for ``run_id`` answers 500."""
        with self._lock:
            self._poisoned.add(canonical(run_id))

    def truncate_next(self, times: int = 1) -> None:
        """The next ``times`` /feedback answers are 200 with half of the JSON body."""
        with self._lock:
            self._truncate += times

    def reset_next(self, times: int = 1) -> None:
        """The next ``times`` /feedback requests get their connection reset, no answer."""
        with self._lock:
            self._reset += times

    def stall_next(self, seconds: float, times: int = 1) -> None:
        """The next ``times`` /feedback requests wait ``seconds`` before being handled."""
        with self._lock:
            self._stalls.extend([seconds] * times)

    def stray_records(self, records: list[dict[str, Any]]) -> None:
        """Append ``records`` (of runs not asked) to every answer's first page."""
        with self._lock:
            self._stray = list(records)

    def duplicate_across_pages(self, on: bool = True) -> None:
        """Repeat the last record of page k as the first of page k+1 (for every k)."""
        with self._lock:
            self._duplicate = on

    def outage(
        self,
        seconds: float | None = None,
        *,
        requests: int | None = None,
        status: int = 500,
        after: int = 0,
    ) -> None:
        """An incident: every /feedback request answers ``status`` for ``seconds`` (or for
        ``requests`` requests), starting with the request after the next ``after`` ones."""
        if (seconds is None) == (requests is None):
            raise ValueError("give seconds or requests")
        with self._lock:
            self._windows.append(Window(status, seconds, requests, self._seen + after, None))

    def rate_limit_window(self, seconds: float, *, retry_after: str | None = None, after: int = 0) -> None:
        """A load balancer's rate-limit window: 429 (without Retry-After unless given) to every
        /feedback request for ``seconds``, from the request after the next ``after`` ones."""
        with self._lock:
            self._windows.append(Window(429, seconds, None, self._seen + after, retry_after))

    def end_windows(self) -> None:
        """End every outage and rate-limit window now (the incident is over)."""
        with self._lock:
            self._windows.clear()

    def window_started_at(self, index: int = 0) -> float | None:
        """When (``time.monotonic()``) the ``index``-th outage or rate-limit window began."""
        with self._lock:
            return self._windows[index].started_at

    def ignore_offset(self, on: bool = True) -> None:
        """Serve the first page whatever ``offset`` says (a proxy that drops the parameter)."""
        with self._lock:
            self._ignore_offset = on

    def max_ids(self, n: int | None, status: int = 414) -> None:
        """Answer ``status`` (414 URI Too Long, or 431) to a request naming more than ``n`` runs."""
        with self._lock:
            self._max_ids = None if n is None else (n, status)

    def listing_misses(self, every: int | None = 7) -> None:
        """A project listing (``session=`` without ``run=``) silently omits every ``every``-th
        record of its result set (before paging); per-run answers stay complete. None: off."""
        if every is not None and every < 1:
            raise ValueError("every must be at least 1")
        with self._lock:
            self._listing_misses = every

    def _take(self) -> tuple[float, bool]:
        with self._lock:
            stall = self._stalls.popleft() if self._stalls else 0.0
            reset = self._reset > 0
            self._reset -= reset
        return stall, reset

    def _next_failure(self) -> Failure | None:
        with self._lock:
            return self._failures.popleft() if self._failures else None

    def _infrastructure(self, query: dict[str, list[str]], now: float) -> Failure | None:
        """A 414 for too many ids, or the answer of an outage or rate-limit window at ``now``
        (the request's arrival, as logged: a window starts at its first request's ``at``)."""
        with self._lock:
            self._seen += 1
            if self._max_ids is not None and len(query.get("run", [])) > self._max_ids[0]:
                return Failure(self._max_ids[1], None, None)
            for window in self._windows:
                if window.strikes(self._seen, now):
                    return Failure(window.status, window.retry_after, None)
        return None
