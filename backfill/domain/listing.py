"""A project listing's rules: what a listing row holds, where a listing starts, when it is resumed or extended."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from backfill.config import Window

#: Listed from this long before the window's first day began: run_date is the date the
#: extractor gave the run (its time zone is not known here, up to 14 h from UTC) and a run's
#: start time is the clock of the client that traced it. One more day of records to list.
SKEW = dt.timedelta(days=1)
#: Records per slice, as planned from what feedback_stats promise (offsets stay below it).
SLICE_RECORDS = 2000
#: Slices grow or shrink at most this fold from one to the next.
GROWTH = 2.0
#: A pass that extends the previous listing of a project lists again from this long before
#: the previous one ended: a record committed late (created just before that moment, visible
#: just after) is not lost; the records listed twice are staged once.
OVERLAP = dt.timedelta(minutes=10)
#: An unfinished listing that ended longer ago than this is not resumed: a new one lists afresh.
RESUME_AGE = dt.timedelta(hours=1)
#: A slice this short that still cannot be listed makes the project fall back to ``runs``.
MIN_SLICE = dt.timedelta(seconds=1)
#: The first slice when nothing is promised (the range is then mostly empty: slices grow).
FIRST_SLICE = dt.timedelta(hours=6)


class ListingFailed(Exception):
    """The project cannot be listed (``reason``): it is fetched run by run instead."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Listing:
    """A row of feedback_backfill_listing: a project's records created in [listed_from, listed_to]."""

    id: int
    project: str
    session_id: str
    listed_from: dt.datetime
    listed_to: dt.datetime
    listed_until: dt.datetime
    records: int
    requests: int
    completed_at: dt.datetime | None
    applied_at: dt.datetime | None
    fallback: str | None
    invocation_id: int | None


def window_start(window: Window) -> dt.datetime:
    """The earliest creation time a record of the window's runs can have."""
    return dt.datetime.combine(window.since, dt.time(), tzinfo=dt.UTC) - SKEW


def resumable(last: Listing, window: Window, now: dt.datetime, *, fresh: bool) -> bool:
    """Whether an unfinished listing is resumed rather than replaced: not under --refetch (it
    wants records as they are now), not when it ends more than ``RESUME_AGE`` ago (records
    edited since would be staged as they were), not when the window holds days after its end."""
    ends_on = last.listed_to.astimezone(dt.UTC).date()
    return not fresh and now - last.listed_to <= RESUME_AGE and window.until <= ends_on + dt.timedelta(days=1)


def extends(latest: dict[str, Any] | None, window: Window, *, fresh: bool) -> bool:
    """Whether a new listing after ``latest`` (a listing_latest row) lists only what was created since it."""
    return (
        not fresh
        and latest is not None
        and latest["applied_at"] is not None
        and latest["fallback"] is None
        and latest["listed_from"] <= window_start(window)
    )


def next_width(width: dt.timedelta, records: int) -> dt.timedelta:
    """The next slice, sized by what this one held: SLICE_RECORDS each, growing at most GROWTH-fold."""
    return max(MIN_SLICE, width * min(GROWTH, max(1 / GROWTH, SLICE_RECORDS / max(records, 1))))


def first_width(span: dt.timedelta, expected: int) -> dt.timedelta:
    """The first slice of a listing over ``span`` that expects ``expected`` records."""
    return max(span * min(1.0, SLICE_RECORDS / expected) if expected > 0 else FIRST_SLICE, MIN_SLICE)
