"""The read side: the rows of the window still to examine, a day at a time, in batches.

Each read is its own short transaction, committed at once: no transaction stays open
while a batch is fetched from the API. Also here: which rows are invalid before any API
call, and where a --refetch pass starts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import db
from .config import Window
from .feedback import INVALID, Outcome
from .options import RunOptions
from .source import canonical_run_id


@dataclass
class Row:
    """A row of the window as the walk returns it (never the whole document)."""

    id: int
    run_id: str
    run_date: dt.date
    data_type: str | None
    feedback_stats: Any
    attempts: int = 0


def query_params(options: RunOptions, refetch_since: dt.datetime | None = None) -> dict[str, Any]:
    """The parameters the walk's queries share (count_pending, walk_batch and their refetch twins)."""
    return {
        "projects": list(options.window.projects) or None,
        "max_attempts": options.max_attempts,
        "refetch_since": refetch_since,
        "replace_extractor": options.replace_extractor_records,
    }


def days(window: Window) -> Iterator[dt.date]:
    """The window's run_dates, oldest first: the walk and its counts go a day at a time."""
    day = window.since
    while day < window.until:
        yield day
        day += dt.timedelta(days=1)


def count_pending(gw: db.Gateway, options: RunOptions, refetch_since: dt.datetime | None = None) -> int:
    """How many rows the walk will visit (the progress bar's total), counted a day at a time."""
    query = "count_refetch" if options.refetch else "count_pending"
    params = query_params(options, refetch_since)
    pending = 0
    for day in days(options.window):
        pending += gw.one(query, {**params, "day": day})["pending"]
        gw.commit()
    return pending


def walk(gw: db.Gateway, options: RunOptions, refetch_since: dt.datetime | None = None) -> Iterator[list[Row]]:
    """Batches of rows to examine: the window's days in order, keyset on id within a day.

    A batch may span days, so that small days still fill API requests. Each read commits at
    once: no transaction stays open while the batch is fetched.
    """
    params = query_params(options, refetch_since)
    query = "walk_refetch" if options.refetch else "walk_batch"
    left = options.limit if options.limit is not None else -1  # -1: no limit
    batch: list[Row] = []
    for day in days(options.window):
        after_id = 0
        while left != 0:
            want = options.batch_size - len(batch) if left < 0 else min(options.batch_size - len(batch), left)
            rows = gw.execute(query, {**params, "day": day, "after_id": after_id, "batch_size": want})
            gw.commit()
            batch += [Row(**r) for r in rows]
            if rows:
                after_id = rows[-1]["id"]
                left = left - len(rows) if left > 0 else left
            if len(batch) == options.batch_size or left == 0:
                yield batch
                batch = []
            if len(rows) < want:
                break  # this day is done
        if left == 0:
            break
    if batch:
        yield batch


def invalid(row: Row) -> Outcome | None:
    if canonical_run_id(row.run_id) is None:
        return Outcome(INVALID, "invalid_run_id", error=f"run_id {row.run_id[:80]!r} is not a UUID")
    if row.data_type != "object":
        return Outcome(INVALID, "not_an_object", error=f"data is a JSON {row.data_type}, not an object")
    return None


def refetch_since(gw: db.Gateway) -> dt.datetime:
    """Where a --refetch pass starts: an unfinished pass resumes with its own start time."""
    last = gw.execute("last_refetch")
    gw.commit()
    if last and last[0]["outcome"] not in ("completed", "completed_with_failures") and last[0]["since"]:
        return dt.datetime.fromisoformat(last[0]["since"])
    now: dt.datetime = gw.one("now")["now"]
    gw.commit()
    return now
