"""Settled days: where a complete walk of a day ended, so that the next walks skip its settled rows.

A day is marked (feedback_backfill_settled, fb0006) once a walk read it to its end under a
closed horizon (``horizon``: every row with an id at most the bound is committed, or never
will be) and every row it read was checkpointed, none skipped. The mark is written in a
short transaction after the day's last checkpoint has committed, never before: a kill in
between leaves the checkpoint without its mark, which only costs the next run a full walk
of that day. A walk with --project, --limit or --refetch, and --dry-run, marks nothing.

A run that lists projects walks the window a project at a time (``Runner._strategies``):
its walks share one Settling (``cover``), and a day is marked once every one of them has
read it to its end, and only if the projects walked are all those the window holds once the
horizon has closed (a run of a project archived meanwhile would otherwise be left out).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable

from . import db
from .config import Window
from .options import RunOptions


class Settling:
    """Days of one walk on their way to a mark: rows read and not yet written, days read to their end."""

    def __init__(self, id_bound: int = 0, vxids: list[str] | None = None) -> None:
        self.id_bound, self.vxids = id_bound, vxids or []  # id_bound 0: this walk marks nothing
        self.closed = False  # every transaction of vxids has ended (``closed``)
        self.open: Counter[dt.date] = Counter()  # rows read, not yet checkpointed, by day
        self.ended: dict[dt.date, bool] = {}  # day read to its end by every walk -> whether it may be marked
        self.spoiled: set[dt.date] = set()  # a row of the day was skipped (another writer held it)
        self.walks = 1  # the walks that share this Settling, a project each (``cover``)
        self.ends: Counter[dt.date] = Counter()  # walks that have read the day to its end
        self.complete: dict[dt.date, bool] = {}  # ... each of them under a closed horizon
        #: the window and the projects its walks cover: checked once the horizon has closed
        self.covering: tuple[Window, frozenset[str]] | None = None

    @property
    def marking(self) -> bool:
        return self.id_bound > 0

    def read(self, day: dt.date, rows: int) -> None:
        self.open[day] += rows

    def cover(self, walks: int, window: Window, projects: Iterable[str]) -> None:
        """``walks`` walks, one project (or a set of them) each, together cover ``projects`` of ``window``."""
        self.walks, self.covering = walks, (window, frozenset(projects))

    def end(self, day: dt.date, complete: bool) -> None:
        """A walk has read ``day`` to its end; ``complete``: under a closed horizon, nothing left out."""
        self.ends[day] += 1
        self.complete[day] = self.complete.get(day, True) and complete
        if self.ends[day] == self.walks:
            self.ended[day] = self.complete[day] and self.marking

    def written(self, days: Iterable[dt.date], skipped: bool) -> list[dt.date]:
        """Count a written batch's rows (their run_dates); return the days now ready to mark."""
        for day in days:
            self.open[day] -= 1
            if skipped:
                self.spoiled.add(day)
        ready = {d: ok for d, ok in self.ended.items() if self.open[d] <= 0}
        for day in ready:
            del self.ended[day]
        return [d for d, ok in ready.items() if ok and d not in self.spoiled]

    def mark(self, gw: db.Gateway, days: list[dt.date], invocation_id: int | None) -> None:
        for day in days:
            with gw.transaction():
                gw.execute("settle_day", {"day": day, "id_bound": self.id_bound, "invocation_id": invocation_id})


def horizon(gw: db.Gateway, options: RunOptions) -> Settling:
    """The bound this walk may mark days up to, or a Settling that marks nothing.

    The id bound is read first, the running transactions after it, in two transactions: a
    row with an id at most the bound belongs to a transaction that took its id before the
    bound was read, so it is either over or among those read second (see horizon_xid).
    """
    if options.refetch or options.dry_run or options.limit is not None or options.window.projects:
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
