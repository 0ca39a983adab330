"""The pace of requests to LangSmith: at least --delay-ms apart, wider for a while after a 429."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from backfill.errors import Interrupted

#: After a 429 the interval between requests widens (doubles from at least PACE_MIN_S, up to
#: PACE_CAP_S); this many successes in a row bring it back to --delay-ms.
PACE_MIN_S = 0.5
PACE_CAP_S = 8.0
PACE_RECOVER = 10


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
    #: called while sleeping, at least as often as it asks (its return: seconds until it wants the
    #: next call): the waiting lines (``waits.Waits.tick``)
    tick: Callable[[], float] | None = None

    def __post_init__(self) -> None:
        if self.interval_s < 0:
            self.interval_s = self.delay_s

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, in slices that end when ``tick`` asks; ``Interrupted`` once ``stop`` is set."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            step = left if self.tick is None else min(left, self.tick())
            if step > 0 and self.stop.wait(step):
                raise Interrupted()
            if self.stop.is_set():
                raise Interrupted()
            if step >= left:
                return

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
        # never below delay_s: the cap bounds the widening, not --delay-ms itself
        self.interval_s = max(self.delay_s, min(PACE_CAP_S, max(PACE_MIN_S, 2 * self.interval_s)))

    def succeeded(self) -> None:
        self._good += 1
        if self._good >= PACE_RECOVER:
            self.interval_s = self.delay_s
