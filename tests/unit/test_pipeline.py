"""The one batch loop (``runner.pipeline``) with batches in memory and scripted answers and sink.

No database, no HTTP: what is proven here is the loop's threading and accounting. A stand-in
that waits for another thread waits on an ``Event`` with a deadline and fails when it passes,
so a loop that lost its fetch-ahead fails the test instead of hanging it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from backfill.domain.rows import Tally
from backfill.runner.pipeline import Fetched, Nothing, pipeline

#: How long a stand-in waits for the other thread: far more than the loop ever needs.
DEADLINE_S = 5.0

pytestmark = pytest.mark.timeout(30)


def wait(event: threading.Event, what: str) -> None:
    if not event.wait(DEADLINE_S):
        raise AssertionError(f"waited {DEADLINE_S:g}s for {what}")


@dataclass
class Steps:
    """One event per (step, batch): ``steps.set("write", 1)``, ``steps.wait("fetched", 2)``."""

    events: dict[tuple[str, int], threading.Event] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _event(self, step: str, n: int) -> threading.Event:
        with self.lock:
            return self.events.setdefault((step, n), threading.Event())

    def set(self, step: str, n: int) -> None:
        self._event(step, n).set()

    def is_set(self, step: str, n: int) -> bool:
        return self._event(step, n).is_set()

    def wait(self, step: str, n: int) -> None:
        wait(self._event(step, n), f"{step} of batch {n}")


@dataclass
class Scripted:
    """Answers whose fetch of batch ``n`` (a batch is ``[n]``) counts ``requests[n]`` requests and
    runs ``during_fetch(n, into)`` on the worker; every call is logged with its thread."""

    requests: dict[int, int]
    steps: Steps
    during_fetch: Callable[[int, Fetched], None] = lambda n, into: None
    log: list[tuple[str, int, str]] = field(default_factory=list)

    def prepare(self, batch: list[int]) -> int:
        self.log.append(("prepare", batch[0], threading.current_thread().name))
        return batch[0]

    def fetch(self, n: int, into: Fetched) -> None:
        self.log.append(("fetch", n, threading.current_thread().name))
        into.tally.requests += 1  # the first request of this batch ...
        self.steps.set("counting", n)
        self.during_fetch(n, into)
        into.tally.requests += self.requests[n] - 1  # ... and the rest
        into.answers = {f"run-{n}": []}
        into.asked = [f"run-{n}"]
        self.steps.set("fetched", n)


@dataclass
class Recorder:
    """A sink that logs each call with its thread and what the batch's tally said at the time,
    spending each tally as ``RunSummary.spent`` does; ``during_write`` runs inside ``write``."""

    steps: Steps
    during_write: Callable[[int, Fetched], None] = lambda n, fetched: None
    log: list[tuple[str, int, str]] = field(default_factory=list)
    charged: dict[int, int] = field(default_factory=dict)  # batch -> requests its write was charged
    spent: Tally = field(default_factory=Tally)
    lost: list[int] = field(default_factory=list)  # requests of the tallies handed to ``unwritten``
    ended: bool = False

    def accept(self, batch: list[int], fetched: Fetched) -> None:
        self.log.append(("accept", batch[0], threading.current_thread().name))

    def write(self, batch: list[int], fetched: Fetched) -> None:
        n = batch[0]
        self.log.append(("write", n, threading.current_thread().name))
        self.steps.set("writing", n)
        self.during_write(n, fetched)
        self.charged[n] = fetched.tally.requests
        self.spent += fetched.tally
        self.steps.set("written", n)

    def end(self) -> None:
        self.ended = True

    def unwritten(self, tally: Tally) -> None:
        self.lost.append(tally.requests)
        self.spent += tally


def batches(n: int) -> list[list[int]]:
    return [[i] for i in range(1, n + 1)]


def test_the_next_batch_is_fetched_while_the_batch_before_it_is_written() -> None:
    steps = Steps()

    def fetch_after_the_previous_write_began(n: int, into: Fetched) -> None:
        if n > 1:
            steps.wait("writing", n - 1)  # still in flight when batch n-1's write begins

    def write_until_the_next_fetch_ends(n: int, fetched: Fetched) -> None:
        if n < 4:
            # batch n+1's fetch ends while batch n is being written: a loop that fetched only
            # after writing never gets past this (it fails after DEADLINE_S)
            steps.wait("fetched", n + 1)

    answers = Scripted({n: 1 for n in range(1, 5)}, steps, fetch_after_the_previous_write_began)
    sink = Recorder(steps, write_until_the_next_fetch_ends)
    pipeline(iter(batches(4)), answers, sink, threading.Event())

    assert sink.ended and sink.charged == {1: 1, 2: 1, 3: 1, 4: 1} and sink.lost == []
    main = threading.current_thread().name
    # the archive's side on the main thread, the API's on the worker
    assert {t for step, _, t in answers.log + sink.log if step != "fetch"} == {main}
    assert all(t != main for step, _, t in answers.log if step == "fetch")


def test_a_batch_is_accepted_before_the_next_fetch_begins() -> None:
    steps = Steps()
    accepted: list[int] = []

    class Accepting(Recorder):
        def accept(self, batch: list[int], fetched: Fetched) -> None:
            accepted.append(batch[0])

    def fetch(n: int, into: Fetched) -> None:
        assert accepted == list(range(1, n)), f"batch {n} fetched before batch {n - 1} was accepted"

    pipeline(iter(batches(3)), Scripted({1: 1, 2: 1, 3: 1}, steps, fetch), Accepting(steps), threading.Event())
    assert accepted == [1, 2, 3]


def test_each_batch_is_charged_exactly_the_requests_its_own_fetch_made() -> None:
    """Batch N+1 counts requests while batch N is written: batch N's write is charged N's only.

    A loop that read shared counters of the transport (or handed one Tally to every fetch)
    charges batch N with what N+1 has sent so far: 3 + 1 for batch 1 here, and fails.
    """
    requests = {1: 3, 2: 5, 3: 7}
    steps = Steps()

    def write_once_the_next_fetch_is_counting(n: int, fetched: Fetched) -> None:
        if n < 3:
            steps.wait("counting", n + 1)  # batch n+1 has counted its first request, not its last

    def fetch_holds_its_last_requests_until_the_previous_write_is_charged(n: int, into: Fetched) -> None:
        if n > 1:
            steps.wait("written", n - 1)

    answers = Scripted(requests, steps, fetch_holds_its_last_requests_until_the_previous_write_is_charged)
    sink = Recorder(steps, write_once_the_next_fetch_is_counting)
    pipeline(iter(batches(3)), answers, sink, threading.Event())

    assert sink.charged == requests
    assert sink.spent.requests == sum(requests.values()) and sink.lost == []


def test_a_stop_hands_the_batch_fetched_ahead_to_unwritten_with_its_own_requests() -> None:
    requests = {1: 3, 2: 5, 3: 7}
    steps = Steps()
    stop = threading.Event()

    def stop_once_batch_2_is_fetched(n: int, fetched: Fetched) -> None:
        steps.wait("fetched", n + 1)
        stop.set()  # as a signal does while batch 1 is written

    answers = Scripted(requests, steps)
    sink = Recorder(steps, stop_once_batch_2_is_fetched)
    pipeline(iter(batches(3)), answers, sink, stop)

    assert sink.charged == {1: 3}  # batch 1 written; batch 2 fetched, never written
    assert sink.lost == [5]  # ... but what it cost is spent
    assert sink.spent.requests == 8 and not sink.ended
    assert [n for step, n, _ in answers.log if step == "prepare"] == [1, 2]  # batch 3 never read ahead


def test_a_failing_write_hands_its_batch_and_the_one_fetched_ahead_to_unwritten() -> None:
    steps = Steps()

    def fail_once_batch_2_is_fetched(n: int, fetched: Fetched) -> None:
        steps.wait("fetched", 2)
        raise RuntimeError("the archive went away")

    sink = Recorder(steps, fail_once_batch_2_is_fetched)
    with pytest.raises(RuntimeError, match="went away"):
        pipeline(iter(batches(3)), Scripted({1: 2, 2: 4, 3: 8}, steps), sink, threading.Event())
    assert sorted(sink.lost) == [2, 4] and sink.charged == {} and not sink.ended


def test_a_failing_fetch_raises_on_the_main_thread_and_its_requests_are_spent() -> None:
    steps = Steps()

    def fail_batch_2(n: int, into: Fetched) -> None:
        if n == 2:
            into.tally.errors += 1
            raise ConnectionError("the API went away")

    sink = Recorder(steps)
    with pytest.raises(ConnectionError, match="went away"):
        pipeline(iter(batches(3)), Scripted({1: 2, 2: 4, 3: 8}, steps, fail_batch_2), sink, threading.Event())
    # batch 2's one request before the failure, and its error, are still spent
    assert sink.charged == {1: 2} and sink.lost == [1] and sink.spent.errors == 1 and not sink.ended


def test_no_batches_ends_at_once_and_a_job_without_answers_still_writes_each_batch() -> None:
    sink = Recorder(Steps())
    pipeline(iter([]), Scripted({}, Steps()), sink, threading.Event())
    assert sink.ended and sink.log == []

    sink = Recorder(Steps())
    pipeline(iter(batches(3)), Nothing[Any](), sink, threading.Event())
    assert sink.ended and sink.charged == {1: 0, 2: 0, 3: 0}
    assert [step for step, _, _ in sink.log] == ["accept", "write"] * 3
