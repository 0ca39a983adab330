"""One call on a worker thread: the next batch's requests are on the wire while this one is written.

One batch ahead only (bounded memory), one request at a time (the transport takes turns),
and the worker never touches the main thread's connection (``runner.project`` lists the next
project on a worker with a connection of its own). A fetched
batch is handed back as data: nothing of it is marked until the main thread writes it, so a
kill loses at most the batch in flight. A stop or a second signal ends the worker through
the transport's own events (``Transport.stop``/``abandon``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Prefetch(Generic[T]):
    """One call running in a daemon worker thread; ``result()`` waits for it and re-raises its error."""

    def __init__(self, call: Callable[[], T]) -> None:
        self._box: dict[str, Any] = {}
        self._done = threading.Event()

        def work() -> None:
            try:
                self._box["value"] = call()
            except BaseException as exc:  # handed to the main thread as it is
                self._box["error"] = exc
            finally:
                self._done.set()

        # a daemon: a worker still waiting for an answer never holds up the exit of a
        # process that was told to stop (its batch is simply not written)
        self._thread = threading.Thread(target=work, name="backfill-fetch-ahead", daemon=True)
        self._thread.start()

    def result(self) -> T:
        self._done.wait()
        if "error" in self._box:
            raise self._box["error"]
        value: T = self._box["value"]
        return value

    def settle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the worker to end, ignoring its outcome (a batch not to be
        written); whether it ended."""
        return self._done.wait(timeout)
