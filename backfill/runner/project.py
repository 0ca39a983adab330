"""The project strategy for one project: list it (``runner.listing``), check a sample, apply the staged records.

The apply is the one pipeline with ``answers.Staged``: the window's rows of the project come
from the same walk (its days in order, keyset on id, the same skips), each row's outcome from
the same ``judge`` and each batch goes through the same ``Checkpoint``. Staged records of
runs that are not rows of the window are counted and never written. Once the listing is
complete and checked, the walk reads only the rows it cannot answer for (staged, promising,
examined before, unprovable): the others are proven to have no feedback and settled by the
day's mark without a checkpoint row (``domain.settling``), so that the apply's database work
follows the records, not the runs. Whatever makes the
listing fail or its check fail makes the project fall back to the runs strategy, with one
line saying why.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from backfill import logs
from backfill.archive import gateway as db
from backfill.archive import staging
from backfill.domain.listing import Listing, ListingFailed
from backfill.domain.options import RunOptions
from backfill.domain.strategy import Choice
from backfill.errors import DatabaseError
from backfill.langsmith.transport import Transport
from backfill.runner.listing import Lister
from backfill.runner.prefetch import Prefetch
from backfill.runner.summary import RunSummary


def list_and_check(
    gw: db.Gateway, lister: Lister, choice: Choice, options: RunOptions, summary: RunSummary
) -> tuple[Listing | None, str | None]:
    """List (or resume the listing of) one project and check it: the listing, and why it cannot
    be applied (the project then falls back to ``runs``), or None."""
    current: Listing | None = None
    reason: str | None = None
    try:
        sid = lister.session_id(choice.project, options.window)
        current = staging.begin(gw, choice.project, sid, options.window, summary.invocation_id, fresh=options.refetch)
        reason = current.fallback
        if reason is None and current.completed_at is None:
            lister.list_all(current, choice.records)
            lister.done(current, None)
        if reason is None:
            reason, sampled = lister.check_sample(current, options.window)
            summary.sampled += sampled
            if reason is not None:
                lister.done(current, reason)
    except ListingFailed as exc:
        reason = exc.reason
        if current is not None:
            lister.done(current, reason)
    if reason is not None:
        summary.fallbacks[choice.project] = reason
        logs.event(
            "strategy_fallback",
            f"{choice.project}: fetched run by run instead: {reason}",
            logging.WARNING,
            project=choice.project,
        )
    else:
        assert current is not None
        summary.listed_outside += staging.outside(gw, current, options.window)
        summary.listed_records += current.records
    return current, reason


#: How long a write of the listing's connection waits for a lock the apply's transaction holds.
SIDE_LOCK_TIMEOUT = "30s"


@dataclass
class Projects:
    """The listed projects of an invocation, one after the other: each listed and checked, then
    applied (``apply(options, listing)``; a None listing: run by run); a listing is marked
    applied once ``apply`` went through its project's whole window.

    While a project's apply writes (the main connection, the main thread), the next project is
    listed and checked on a worker thread, on a connection of its own (``side``): the database
    work of one hides under the other's pacing. Both write under the invocation's lease; each
    slice is staged, and each batch written, in a transaction of its own, so a kill at any
    moment resumes exactly (the listing from its last staged slice, the apply from its rows
    still lacking records). The transport takes one request at a time: the pacing is one.
    """

    gw: db.Gateway
    transport: Transport
    summary: RunSummary
    apply: Callable[[RunOptions, Listing | None], bool]
    stop: threading.Event
    settle_s: float
    #: what a second signal cancels (``Signals.cancels``): the listing's connection joins it
    cancels: list[Callable[[], None]] = field(default_factory=list)
    #: the connection the next project is listed on, opened when there is one
    side: db.Gateway | None = None
    single: bool = False  # the second connection failed: one connection, projects in turn

    def run(self, choices: list[Choice], options: RunOptions) -> None:
        ahead: _Ahead | None = None
        try:
            for i, choice in enumerate(choices):
                opts = options.only(choice.project)
                if ahead is None:
                    lister = Lister(self.gw, self.transport, self.summary.invocation_id, self.summary.spent)
                    current, reason = list_and_check(self.gw, lister, choice, opts, self.summary)
                else:
                    listed, ahead = ahead, None  # its counts are taken once, by ``result``
                    current, reason = listed.result(self.summary)
                side = self._side() if self._ahead_of(current, choices[i + 1 :], options) else None
                if side is not None:
                    ahead = _Ahead(side, self.transport, choices[i + 1], options, self.summary.invocation_id)
                finished = self.apply(opts, current if reason is None else None)
                if current is not None and finished:
                    staging.applied(self.gw, current)
                if self.stop.is_set():
                    return
        finally:
            ended = True
            if ahead is not None:  # stopped or failed: the next project's listing ends at its next slice
                ended = ahead.abandon(self.settle_s, self.summary)
            if self.side is not None:
                if self.side.cancel in self.cancels:
                    self.cancels.remove(self.side.cancel)
                if ended:  # else the worker still holds it: it is closed when the worker lets it go
                    self.side.close()

    def _ahead_of(self, current: Listing | None, rest: list[Choice], options: RunOptions) -> bool:
        """Whether the next project may be listed while this one is applied: not after a stop,
        and not when the archive does not tell its LangSmith project from this one's (a new
        listing of a project clears what was staged for its id: two names of one project)."""
        if not rest or self.stop.is_set():
            return False
        ids = staging.session_ids(self.gw, rest[0].project, options.window)
        return bool(ids) and (current is None or current.session_id not in ids)

    def _side(self) -> db.Gateway | None:
        """The listing's connection; None if it cannot be opened (the next project is then
        listed after this one's apply, on the main connection, as one connection allows)."""
        if self.side is None and not self.single:
            try:
                # its writes wait on the apply's (the lease row, the invocation row): longer than the default
                self.side = db.connect(self.gw.database, lock_timeout=SIDE_LOCK_TIMEOUT)
            except DatabaseError as exc:
                self.single = True
                logs.event(
                    "listing_in_turn",
                    f"each project is listed after the one before is applied: a second connection failed ({exc})",
                    logging.WARNING,
                )
                return None
            self.side.lease, self.side.abandon = self.gw.lease, self.gw.abandon
            self.cancels.append(self.side.cancel)  # a second signal cancels its query too
        return self.side


class _Ahead:
    """One project listed and checked on a worker thread, counting into a summary of its own
    (merged into the invocation's by the main thread once the worker has ended)."""

    def __init__(
        self, side: db.Gateway, transport: Transport, choice: Choice, options: RunOptions, invocation_id: int | None
    ) -> None:
        self.part = RunSummary()
        self.side = side
        self.cancel = threading.Event()
        lister = Lister(side, transport, invocation_id, self.part.spent, cancel=self.cancel)
        opts = options.only(choice.project)
        self.work = Prefetch(lambda: list_and_check(side, lister, choice, opts, self.part))

    def result(self, summary: RunSummary) -> tuple[Listing | None, str | None]:
        try:
            return self.work.result()
        finally:
            summary.listed(self.part)

    def abandon(self, settle_s: float, summary: RunSummary) -> bool:
        """End the listing at its next slice; whether the worker ended within ``settle_s``."""
        self.cancel.set()
        self.side.cancel()  # a statement of its own on the wire
        if not self.work.settle(settle_s):
            return False
        summary.listed(self.part)
        return True
