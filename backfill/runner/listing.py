"""A project's listing: its id, its slices listed and staged, then a sampled check against the runs' own answers.

Trust, but check: before the staged records are relied on, the run-by-run answers for a
sample of the window's runs (``SAMPLE_RUNS`` promising records, ``SAMPLE_RUNS`` with staged
records) are compared with the listing, record by record (canonical JSON), over the records
created in the listed range. Any difference, or fewer than half of the sample answered (a
check of almost nothing), makes the project fall back to the runs strategy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from backfill.archive import gateway as db
from backfill.archive import ledger, staging
from backfill.config import Window
from backfill.domain.listing import MIN_SLICE, Listing, ListingFailed, first_width, next_width
from backfill.domain.records import canonical_run_id, created_at, diff
from backfill.domain.rows import Tally
from backfill.errors import Interrupted
from backfill.langsmith import by_project
from backfill.langsmith.by_run import fetch_isolating
from backfill.langsmith.transport import Transport

#: Runs of each kind in the sampled check: one request of at most 100 run ids, a page or two.
SAMPLE_RUNS = 50


@dataclass
class Lister:
    """Lists one project for an invocation; every request it makes is counted through ``spent``
    (the invocation row, in the transaction that stages what the requests brought)."""

    gw: db.Gateway
    transport: Transport
    invocation_id: int | None
    spent: Callable[[Tally], None]
    #: requests of the listing not yet on its row (the project's id asked, a slice refused)
    owed: int = 0
    #: set: the listing ends before its next slice (the invocation no longer wants it)
    cancel: threading.Event | None = None

    def session_id(self, project: str, window: Window) -> str:
        """The project's id in LangSmith: the session_id the extractor archived, else asked by name."""
        ids = staging.session_ids(self.gw, project, window)
        if len(ids) > 1:
            raise ListingFailed(f"the window's rows of {project} name {len(ids)} LangSmith projects (session_id)")
        if ids:
            return ids[0]
        tally = Tally()
        try:
            return by_project.session_id(self.transport, project, tally)
        finally:
            self._count(tally)
            self.owed += tally.requests

    def list_all(self, listing: Listing, expected: int) -> None:
        """List and stage every slice from ``listing.listed_until`` to ``listing.listed_to``."""
        width = first_width(listing.listed_to - listing.listed_until, expected)
        a = listing.listed_until
        while a < listing.listed_to:
            if self.cancel is not None and self.cancel.is_set():
                raise Interrupted()
            b = min(a + width, listing.listed_to)
            tally = Tally()
            try:
                records = by_project.list_slice(self.transport, listing.session_id, a, b, tally)
            except by_project.SliceRefused as refused:
                self._count(tally)
                self.owed += tally.requests
                if b - a <= MIN_SLICE:
                    raise ListingFailed(f"the listing of {listing.project} could not be paged ({refused})") from None
                width = max(MIN_SLICE, (b - a) / 2)
                continue
            except BaseException:
                self._count(tally)
                raise
            staging.stage(self.gw, listing, records, b, tally, self.invocation_id, self.owed)
            self.owed = 0
            self.spent(tally)
            a = b
            width = next_width(width, len(records))

    def done(self, listing: Listing, fallback: str | None) -> None:
        staging.done(self.gw, listing, fallback, self.owed)
        self.owed = 0

    def check_sample(self, listing: Listing, window: Window) -> tuple[str | None, int]:
        """Why the listing cannot be trusted (it differs from the run-by-run answers of a sample),
        or None; and how many sampled runs were answered."""
        ids = staging.sample(self.gw, listing, window, SAMPLE_RUNS)
        if not ids:
            return None, 0
        tally = Tally()
        try:
            got = fetch_isolating(self.transport, ids, tally)
        finally:
            self._count(tally)
        have = staging.staged(self.gw, listing, ids)
        self.gw.commit()
        missing = extra = changed = expected = answered = 0
        for rid in ids:
            answer = got[rid]
            if isinstance(answer, str):
                continue  # the run's own fetch failed: it says nothing about the listing
            answered += 1
            listed = have.get(canonical_run_id(rid) or "", [])
            due = [r for r in answer if _in_range(r, listing)]
            added, differs, _ = diff(listed, due)
            missing += len(added)
            held = {str(r.get("id")) for r in answer}
            extra += sum(1 for r in listed if str(r.get("id")) not in held)
            # the same record, listed with other content (a copy staged before a reviewer's edit)
            changed += len(differs)
            expected += len(due)
        if answered * 2 < len(ids):
            why = f"only {answered} of the {len(ids)} sampled run(s) could be fetched run by run to check the listing"
            return why, answered
        if missing or extra or changed:
            return (
                f"the project listing differs from the run-by-run answers for {answered} sampled run(s):"
                f" {missing} of their {expected} record(s) missing from it, {extra} listed that they do not hold,"
                f" {changed} listed otherwise than they hold"
            ), answered
        return None, answered

    def _count(self, tally: Tally) -> None:
        """Requests that staged nothing: on the invocation row at once."""
        if tally.requests:
            with self.gw.transaction():
                ledger.count_api(self.gw, self.invocation_id, tally)
        self.spent(tally)


def _in_range(rec: dict[str, object], listing: Listing) -> bool:
    when = created_at(rec)
    return when is not None and listing.listed_from <= when <= listing.listed_to
