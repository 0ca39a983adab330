"""The pace of requests (``langsmith.pacing.Pacer``) on a clock of the test's own: no sleeping."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from backfill.errors import Interrupted
from backfill.langsmith import pacing
from backfill.langsmith.pacing import PACE_CAP_S, PACE_MIN_S, PACE_RECOVER, Pacer


@dataclass
class Clock:
    """``time`` for the pacer (``monotonic``) and its stop event (``wait``, ``is_set``): a wait
    advances the clock by what was asked, and is recorded."""

    now: float = 100.0
    waits: list[float] = field(default_factory=list)
    stopped: bool = False

    def monotonic(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(round(seconds, 6))
        self.now += seconds
        return self.stopped

    def is_set(self) -> bool:
        return self.stopped


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(pacing, "time", c)
    return c


def pacer(clock: Clock, delay_s: float) -> Pacer:
    return Pacer(delay_s, clock)  # type: ignore[arg-type]  # the clock stands in for the stop event


def request(p: Pacer, clock: Clock, takes_s: float) -> None:
    """One request as Transport makes it: wait its turn, be on the wire ``takes_s``, end."""
    p.wait_turn()
    clock.now += takes_s
    p.finished()


def test_the_first_request_goes_at_once(clock: Clock) -> None:
    p = pacer(clock, 1.0)
    p.wait_turn()
    assert clock.waits == []


def test_the_interval_is_counted_from_the_end_of_the_previous_request(clock: Clock) -> None:
    p = pacer(clock, 1.0)
    request(p, clock, takes_s=2.5)  # a slow request (a handshake, a big page) ...
    request(p, clock, takes_s=0.1)  # ... is still followed by a full second of quiet
    assert clock.waits == [1.0]
    clock.now += 0.4  # time spent between requests (writing a batch) counts towards the interval
    p.wait_turn()
    assert clock.waits == [1.0, 0.6]
    clock.now += 5.0
    p.finished()
    clock.now += 3.0  # more than the interval already passed: no wait
    p.wait_turn()
    assert clock.waits == [1.0, 0.6]


def test_after_a_429_the_interval_doubles_from_the_minimum_up_to_the_cap(clock: Clock) -> None:
    p = pacer(clock, 0.0)
    widths = []
    for _ in range(6):
        p.widen()
        widths.append(p.interval_s)
    assert widths == [PACE_MIN_S, 1.0, 2.0, 4.0, PACE_CAP_S, PACE_CAP_S] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    request(p, clock, takes_s=0.0)
    request(p, clock, takes_s=0.0)
    assert clock.waits == [8.0]


def test_a_delay_above_the_minimum_doubles_from_itself(clock: Clock) -> None:
    p = pacer(clock, 1.5)
    p.widen()
    assert p.interval_s == 3.0
    assert pacer(clock, 20.0).interval_s == 20.0
    wide = pacer(clock, 20.0)
    wide.widen()
    assert wide.interval_s == 20.0  # never below --delay-ms, even past the cap


def test_pace_recover_successes_in_a_row_restore_the_delay(clock: Clock) -> None:
    p = pacer(clock, 0.2)
    p.widen()
    p.widen()
    assert p.interval_s == 1.0
    for _ in range(PACE_RECOVER - 1):
        p.succeeded()
    assert p.interval_s == 1.0  # not yet
    p.widen()  # another 429 starts the count again
    for _ in range(PACE_RECOVER - 1):
        p.succeeded()
    assert p.interval_s == 2.0
    p.succeeded()
    assert p.interval_s == 0.2


def test_a_stop_interrupts_a_wait_and_the_next_turn(clock: Clock) -> None:
    p = pacer(clock, 1.0)
    request(p, clock, takes_s=0.0)
    clock.stopped = True
    with pytest.raises(Interrupted):
        p.wait_turn()  # the wait is cut short by the stop
    with pytest.raises(Interrupted):
        pacer(clock, 1.0).wait_turn()  # a first request is not sent after a stop either
    with pytest.raises(Interrupted):
        p.sleep(0)
