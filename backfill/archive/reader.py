"""The read side: the rows of the window still to examine, a day at a time, in batches.

Each read is its own short transaction, committed at once: no transaction stays open
while a batch is fetched from the API. Also here: how many rows a walk will visit, and
where a --refetch pass starts.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from backfill.archive import gateway as db
from backfill.archive.settled import closed
from backfill.config import Window
from backfill.domain.listing import Listing
from backfill.domain.options import RunOptions
from backfill.domain.rows import Row
from backfill.domain.settling import Settling

#: Runs a named query with its parameters and returns its rows (``committing``, check's read-only ``_read``).
Read = Callable[[str, dict[str, Any]], list[dict[str, Any]]]


def window_params(window: Window) -> dict[str, Any]:
    """The window as the named queries take it: since, until, and projects (None: all)."""
    return {"since": window.since, "until": window.until, "projects": list(window.projects) or None}


def query_params(options: RunOptions, refetch_since: dt.datetime | None = None) -> dict[str, Any]:
    """The parameters the walk's queries share (count_pending, walk_batch and their refetch twins)."""
    return {
        **window_params(options.window),
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


def marks(read: Read, window: Window) -> dict[dt.date, int]:
    """The window's settled marks: day -> the id up to which a complete walk checkpointed it."""
    rows = read("settled_marks", {"since": window.since, "until": window.until})
    return {r["run_date"]: r["id_bound"] for r in rows}


def committing(gw: db.Gateway) -> Read:
    """Run a named query in a transaction of its own (committed at once); return its rows."""

    def read(name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        rows = gw.execute(name, params)
        gw.commit()
        return rows

    return read


def count_pending(
    gw: db.Gateway, options: RunOptions, refetch_since: dt.datetime | None = None, read: Read | None = None
) -> int:
    """How many rows the walk will visit (the progress bar's total): ``pending_by_project``'s sum."""
    return sum(pending_by_project(gw, options, refetch_since, read).values())


def pending_by_project(
    gw: db.Gateway, options: RunOptions, refetch_since: dt.datetime | None = None, read: Read | None = None
) -> Counter[str]:
    """How many rows the walk will visit, per project (projects without any left out), counted a
    day at a time: one pass serves the progress bar's total and ``auto``'s choice per project.

    ``read`` runs each query (default: its own committed transaction; `backfill check`
    passes a read-only one). The same marks and queries as the walk: exactly its rows.
    """
    read = read or committing(gw)
    params = query_params(options, refetch_since)
    pending: Counter[str] = Counter()

    def add(rows: list[dict[str, Any]]) -> None:
        pending.update({r["project"]: r["pending"] for r in rows})

    settled = marks(read, options.window)
    if options.refetch:
        for day in days(options.window):
            add(read("count_refetch", {**params, "day": day, "mark": settled.get(day, 0)}))
        return pending
    for day in days(options.window):
        mark = settled.get(day, 0)
        if mark:
            add(read("count_settled", {**params, "day": day, "mark": mark}))
        add(read("count_pending", {**params, "day": day, "mark": mark}))
    return pending


def walk(
    gw: db.Gateway,
    options: RunOptions,
    refetch_since: dt.datetime | None = None,
    settling: Settling | None = None,
    listing: Listing | None = None,
) -> Iterator[list[Row]]:
    """Batches of rows to examine: the window's days in order, keyset on id within a day.

    A batch may span days, so that small days still fill API requests. Each read commits at
    once: no transaction stays open while the batch is fetched. On a settled day the rows at
    or below its mark come from walk_settled, the rest from walk_batch. ``settling`` hears
    of each row read and of each day read to its end (``domain.settling``).

    With ``listing`` (a project's, complete and checked) a day whose horizon has closed is
    walked by proof: only walk_candidates' rows are read (``domain.settling``), and the day is
    ``prove``d; under an open horizon the day is walked whole, its staged rows below the mark
    included.
    """
    params = query_params(options, refetch_since)
    settling = settling or Settling()
    read = committing(gw)
    settled = marks(read, options.window)
    staged = {} if listing is None or options.refetch else staged_rows(read, options, listing)
    phases = ["walk_refetch"] if options.refetch else ["walk_settled", "walk_batch"]
    left = options.limit if options.limit is not None else -1  # -1: no limit
    batch: list[Row] = []
    for day in days(options.window):
        complete = closed(gw, settling)  # before the day's first read
        mark = settled.get(day, 0)
        ids = staged.get(day, [])
        if listing is not None and not options.refetch and complete and left < 0:
            candidates = [r["id"] for r in read("walk_candidates", {**params, "day": day, "staged": ids})]
            at = 0
            while at < len(candidates):
                chunk = candidates[at : at + options.batch_size - len(batch)]
                at += len(chunk)
                rows = read("walk_rows", {**params, "ids": chunk})
                settling.read(day, len(rows))
                batch += [Row(**r, settled=r["id"] <= mark) for r in rows]
                if len(batch) == options.batch_size:
                    yield batch
                    batch = []
            settling.prove(day)
            settling.end(day, complete)
            continue
        after_id = 0
        for query in phases:
            if query == "walk_settled" and not mark:
                continue
            if query == "walk_batch":
                after_id = max(after_id, mark)
            while left != 0:
                want = options.batch_size - len(batch) if left < 0 else min(options.batch_size - len(batch), left)
                cursor = {"day": day, "after_id": after_id, "mark": mark, "batch_size": want, "staged": ids}
                rows = read(query, {**params, **cursor})
                settling.read(day, len(rows))
                batch += [Row(**r, settled=r["id"] <= mark) for r in rows]
                if rows:
                    after_id = rows[-1]["id"]
                    left = left - len(rows) if left > 0 else left
                if len(batch) == options.batch_size or left == 0:
                    yield batch
                    batch = []
                if len(rows) < want:
                    break  # this phase of the day is done
        if left == 0:
            break
        settling.end(day, complete)
    if batch:
        yield batch


def staged_rows(read: Read, options: RunOptions, listing: Listing) -> dict[dt.date, list[int]]:
    """The window's rows (of ``options``' projects) whose runs have records ``listing``'s session staged: day -> ids."""
    out: dict[dt.date, list[int]] = {}
    for r in read("staged_rows", {**window_params(options.window), "session_id": listing.session_id}):
        out.setdefault(r["run_date"], []).append(r["id"])
    return out


def refetch_since(gw: db.Gateway) -> dt.datetime:
    """Where a --refetch pass starts: an unfinished pass resumes with its own start time."""
    last = gw.execute("last_refetch")
    gw.commit()
    if last and last[0]["outcome"] not in ("completed", "completed_with_failures") and last[0]["since"]:
        return dt.datetime.fromisoformat(last[0]["since"])
    now: dt.datetime = gw.one("now")["now"]
    gw.commit()
    return now
