"""SIGINT/SIGTERM during a run: the first stops after the batch in flight, a second abandons it.

The handlers only set flags and cancel in-flight I/O; they never raise. An exception thrown
from a handler lands in whatever bytecode runs at that moment (possibly inside psycopg's
protocol or urllib3), and could leave the invocation row unfinished. Instead the second
signal sets ``abandon`` (the API request on the wire polls it, see ``Transport._get``;
the write transaction checks it before it commits) and cancels the query on the wire with
libpq's cancel request (``PQcancel``, safe in a signal handler). The runner then finishes the
invocation row (outcome interrupted) and exits 128 + the first signal's number.
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field


@dataclass
class Signals:
    """What the run has been told: ``stop`` (finish cleanly), ``abandon`` (give up the batch in flight)."""

    stop: threading.Event = field(default_factory=threading.Event)
    abandon: threading.Event = field(default_factory=threading.Event)
    #: the first signal's number (None: none arrived; the caller's ``stop`` may still be set)
    signum: int | None = None
    #: called by a second signal, in the handler: cancel what is on the wire (never raise)
    cancels: list[Callable[[], None]] = field(default_factory=list)

    def handle(self, signum: int, _frame: object = None) -> None:
        """The handler: flags only. Events are set from a new low-level thread, because
        ``Event.set`` takes a lock that the interrupted main thread may be holding."""
        if self.signum is None:
            self.signum = signum
            _thread.start_new_thread(self.stop.set, ())
            return
        _thread.start_new_thread(self.abandon.set, ())
        for cancel in self.cancels:
            with contextlib.suppress(Exception):
                cancel()


@contextlib.contextmanager
def handling(stop: threading.Event | None) -> Iterator[Signals]:
    """SIGINT/SIGTERM handled by a ``Signals`` while the block runs (main thread only).

    With a ``stop`` of the caller's (the Python API, follow's passes), the caller owns the
    signals: no handler is installed and ``stop`` is the run's.
    """
    signals = Signals(stop=stop or threading.Event())
    if stop is not None or threading.current_thread() is not threading.main_thread():
        yield signals
        return
    previous = {s: signal.signal(s, signals.handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield signals
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
