"""Settled days: where a complete walk of a day ended, so that the next walks skip its settled rows.

A day is marked (feedback_backfill_settled, fb0006) once a walk read it to its end under a
closed horizon (``archive.settled.horizon``: every row with an id at most the bound is committed, or never
will be) and every row it read was checkpointed, none skipped. The mark is written in a
short transaction after the day's last checkpoint has committed, never before: a kill in
between leaves the checkpoint without its mark, which only costs the next run a full walk
of that day. A walk with --project, --limit or --refetch, and --dry-run, marks nothing.

A run that lists projects walks the window a project at a time (``runner.invocation``):
its walks share one Settling (``cover``), and a day is marked once every one of them has
read it to its end, and only if the projects walked are all those the window holds once the
horizon has closed (a run of a project archived meanwhile would otherwise be left out).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable

from backfill.config import Window


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
