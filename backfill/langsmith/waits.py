"""What a command says while it waits for LangSmith: a line at least every ``WAIT_LINE_S``.

A wait belongs to an episode: a streak of 429s (the rate limit) or of failures (an outage),
ended by the next answered request. The first wait of an episode prints a line at once; then,
as long as the episode lasts, a line whenever ``WAIT_LINE_S`` has passed since the last one,
whatever the command is doing meanwhile: sleeping a backoff (``Pacer.sleep`` sleeps in slices
that end when a line is due), keeping its pace, or waiting for an answer on the wire. Each line
says what is waited for, since when, and until when::

    waiting for LangSmith's rate limit (HTTP 429) since 12:00:05, next try at 12:00:35
    (stops after 15m 00s of 429s)

(one line, shown here in two). The end of an episode is said too (``over``). Times are UTC,
as the lines' timestamps are.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from dataclasses import dataclass

from backfill import logs
from backfill.domain.units import duration

#: While an episode of waiting lasts, a line at least this often (read at each use: tests lower it).
WAIT_LINE_S = 30.0
#: A sleep that ends this close to a line's due time prints it (an Event's wait may end a hair early).
_EARLY_S = 0.005


@dataclass
class Episode:
    """One thing waited for, since when; the current wait's next try, and how long it may last."""

    kind: str  # rate_limit | outage
    what: str  # "LangSmith's rate limit (HTTP 429)"
    since: dt.datetime
    next_try: dt.datetime
    limit: str  # "stops after 15m 00s of 429s"


class Waits:
    """The waiting lines of one transport (one thread at a time uses it, as the transport)."""

    def __init__(self) -> None:
        self.episode: Episode | None = None
        self._due = 0.0  # time.monotonic() when the next line is due

    def begin(self, kind: str, what: str, seconds: float, limit: str) -> None:
        """A wait of ``seconds`` for ``kind`` starts now: a new episode prints its line at once."""
        now = _now()
        if self.episode is None or self.episode.kind != kind:
            self.episode = Episode(kind, what, now, now, limit)
            self._due = 0.0
        self.episode.what, self.episode.limit = what, limit
        self.episode.next_try = now + dt.timedelta(seconds=seconds)
        self.tick()

    def rate_limit(self, seconds: float, budget_s: float) -> None:
        """A wait of ``seconds`` for a 429 to lift; ``budget_s`` of them in a row end the command."""
        self.begin(
            "rate_limit", "LangSmith's rate limit (HTTP 429)", seconds, f"stops after {duration(budget_s)} of 429s"
        )

    def outage(self, endpoint: str, detail: str, failures: int, seconds: float, outage_wait_s: float) -> None:
        """A wait of ``seconds`` after ``failures`` failed requests in a row (the last: ``detail``)."""
        self.begin(
            "outage",
            f"LangSmith at {endpoint} to answer ({detail}, {failures} failed request{'s' if failures != 1 else ''}"
            " in a row)",
            seconds,
            f"stops after --outage-wait {duration(outage_wait_s)} of waiting",
        )

    def tick(self) -> float:
        """Print the line if one is due; the seconds until the next one (inf: nothing waited for)."""
        e = self.episode
        if e is None:
            return math.inf
        now = time.monotonic()
        if now >= self._due - _EARLY_S:
            self._due = now + WAIT_LINE_S
            trying = _now() >= e.next_try
            when = f"trying again since {e.next_try:%H:%M:%S}" if trying else f"next try at {e.next_try:%H:%M:%S}"
            logs.event(
                "waiting",
                f"waiting for {e.what} since {e.since:%H:%M:%S}, {when} ({e.limit})",
                logging.INFO if e.kind == "rate_limit" else logging.WARNING,
                waiting_for=e.kind,
                since=e.since.isoformat(),
                next_try=e.next_try.isoformat(),
            )
        return max(0.0, self._due - now)

    def over(self) -> None:
        """A request was answered: the episode, if any, is over (said in one line)."""
        e, self.episode = self.episode, None
        if e is not None:
            waited = (_now() - e.since).total_seconds()
            logs.event(
                "waited",
                f"done waiting for {e.what}: answered after {duration(waited)} (since {e.since:%H:%M:%S})",
                waiting_for=e.kind,
                since=e.since.isoformat(),
                waited_s=round(waited, 3),
            )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
