"""Settled days in the archive: the horizon a walk may mark days up to, and the marks themselves.

What a mark means, and when a day may get one, is ``backfill.domain.settling``.
"""

from __future__ import annotations

import datetime as dt

from backfill.archive import gateway as db
from backfill.archive import ledger
from backfill.domain.options import RunOptions
from backfill.domain.settling import Settling


def horizon(gw: db.Gateway, options: RunOptions) -> Settling:
    """The bound this walk may mark days up to, or a Settling that marks nothing.

    The id bound is read first, the running transactions after it, in two transactions: a
    row with an id at most the bound belongs to a transaction that took its id before the
    bound was read, so it is either over or among those read second (see horizon_xid).
    """
    if not options.marks_days:
        return Settling()
    id_bound = gw.one("horizon_ids")["id_bound"]
    gw.commit()
    vxids = list(gw.one("horizon_xid")["vxids"])
    gw.commit()
    return Settling(id_bound, vxids)


def closed(gw: db.Gateway, settling: Settling) -> bool:
    """Has every transaction that may still insert a row at or below the bound ended?"""
    if not settling.marking:
        return False
    if not settling.closed:  # once closed, closed for good: an ended transaction stays ended
        settling.closed = bool(gw.one("horizon_closed", {"vxids": settling.vxids})["closed"])
        gw.commit()
        if settling.closed and settling.covering is not None:
            window, projects = settling.covering
            params = {"since": window.since, "until": window.until, "projects": None}
            held = {r["project"] for r in gw.execute("strategy_rows", params)}
            gw.commit()
            if held - projects:  # a project archived since the plan: no walk of this run reads it
                settling.id_bound = 0
    return settling.closed and settling.marking


def mark(gw: db.Gateway, settling: Settling, days: list[dt.date], invocation_id: int | None) -> int:
    """Mark ``days`` settled up to the walk's id bound, each in a short transaction of its own;
    return how many rows the marks settled without a checkpoint row (days a walk ``prove``d).

    Those rows are examined without feedback: the invocation row counts them in the mark's
    transaction, as the checkpoint counts the rows it writes.
    """
    proven = 0
    for day in days:
        params = {"day": day, "id_bound": settling.id_bound, "invocation_id": invocation_id}
        with gw.transaction():
            if day not in settling.proven:
                gw.execute("settle_day", params)
                continue
            before = gw.execute("settled_marks", {"since": day, "until": day + dt.timedelta(days=1)})
            after_id = before[0]["id_bound"] if before else 0
            n = int(gw.one("settle_day_proven", {**params, "after_id": after_id})["proven"])
            if n:
                ledger.count_settled(gw, invocation_id, n)
        proven += n
    return proven
