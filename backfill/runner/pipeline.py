"""The one batch loop: read a batch, fetch it ahead on the worker, judge it, write and checkpoint it.

Every batch job of the toolkit goes through ``pipeline``: the runs strategy, a project's
apply, ``--dry-run`` and ``verify``. What differs is passed in: where the batches come from
(an iterator of lists), where their answers come from (``Answers``: ``prepare`` on the main
thread, which may read the archive, then ``fetch`` on the worker, which only makes HTTP
calls) and what is done with them (``Sink``, on the main thread). While batch N is written,
batch N+1's requests are on the wire; the archive is only ever used by the main thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

from backfill.domain.rows import Answer, Tally
from backfill.runner.prefetch import Prefetch

B = TypeVar("B")  # a batch: a list of rows (``Row``, or what verify reads)
B_in = TypeVar("B_in", contravariant=True)


@dataclass
class Fetched:
    """What a batch's fetch brought: per run id (as stored) its records or why they failed, the
    run ids asked of the API (the workspace guard judges these), and what it cost."""

    answers: dict[str, Answer] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)


class Answers(Protocol[B_in]):
    """Where a batch's answers come from."""

    def prepare(self, batch: B_in) -> Any:
        """On the main thread, before the fetch: what the fetch needs (may read the archive)."""

    def fetch(self, prepared: Any, into: Fetched) -> None:
        """On the worker: fill ``into`` (HTTP only, counting every request in ``into.tally``)."""


class Sink(Protocol[B_in]):
    """What is done with a batch and its answers, on the main thread."""

    def accept(self, batch: B_in, fetched: Fetched) -> None:
        """Before the next batch's fetch starts (so it may still use the transport itself)."""

    def write(self, batch: B_in, fetched: Fetched) -> None:
        """While the next batch is being fetched."""

    def end(self) -> None:
        """The batches ran out (the walk's end), each written."""

    def unwritten(self, tally: Tally) -> None:
        """What a batch fetched and never written cost (a stop, an error): still spent."""


class Nothing(Generic[B]):
    """Answers of a job that asks the API nothing (``--dry-run``)."""

    def prepare(self, batch: B) -> None:
        return None

    def fetch(self, prepared: None, into: Fetched) -> None:
        return None


def pipeline(
    batches: Iterator[B], answers: Answers[B], sink: Sink[B], stop: threading.Event, settle_s: float = 1.0
) -> None:
    """Run every batch through ``answers`` and ``sink`` until the batches run out or ``stop`` is set.

    After a stop, the batch fetched ahead is not written: nothing of it is marked, as nothing
    of a batch in flight ever is. ``settle_s``: how long a fetch still running is waited for
    when the loop ends early (a request's timeout).
    """
    current = next(batches, None)
    pending = _ahead(answers, current) if current is not None else None
    unwritten: list[Fetched] = []
    try:
        while current is not None and pending is not None:
            fetched = pending[0].result()
            pending = None
            unwritten.append(fetched)
            sink.accept(current, fetched)
            upcoming = None if stop.is_set() else next(batches, None)
            if upcoming is not None:
                pending = _ahead(answers, upcoming)
            sink.write(current, fetched)
            unwritten.remove(fetched)
            if stop.is_set():
                break
            current = upcoming
        if current is None:
            sink.end()
    finally:
        if pending is not None:  # stopped, or failed: let the worker end (its batch is dropped)
            pending[0].settle(settle_s)
            unwritten.append(pending[1])
        for f in unwritten:
            sink.unwritten(f.tally)


def _ahead(answers: Answers[B], batch: B) -> tuple[Prefetch[Fetched], Fetched]:
    into = Fetched()
    prepared = answers.prepare(batch)

    def fetch() -> Fetched:
        answers.fetch(prepared, into)
        return into

    return Prefetch(partial(fetch)), into
