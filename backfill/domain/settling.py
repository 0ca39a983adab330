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

Rows settled without a checkpoint row. Under a mark, a row lacking records always held a
checkpoint row: every walk checkpointed each row it read, and a mark needs every row of the
day read and written, none skipped; rows archived later have higher ids (SERIAL), and reset
and revert delete the marks. A project's apply gives the other case a meaning: a row of a
project whose listing is complete and checked, without staged records, whose feedback_stats
promise none, that lacks records and is a run the API can be asked about (its run_id in the
API's spelling, its data an object) is proven to have no feedback (created up to the
listing's end) without asking: the apply reads only the other rows (``walk_candidates``:
staged, promising, examined before and to be examined again, unprovable), never its
document, and writes no checkpoint row for it. Such a walk ``prove``s the day. Its mark then
counts, per project, the day's rows above the previous mark and at most the bound that lack
records and hold no checkpoint row (``settle_day_proven``, in the mark's transaction: a kill
before it leaves neither mark nor count, and the next run proves the day again; counted from
an index and the day's status rows, fb0009, never row by row). That count
(``feedback_backfill_settled.empty``) is what `backfill status` adds to no_feedback, as the
runs strategy's checkpoint rows would count them; it changes only when one of those rows
gets a checkpoint row after all (walked again because its feedback_stats now promise
records, a late record staged by the next listing, --refetch, an unprovable document): the
checkpoint's transaction takes it off (``settled_examined``). Records the extractor gives it
change nothing, as they change nothing of a no_feedback checkpoint row.

Only a walk under a closed horizon proves a day (an open one walks it whole): a
proof recorded by no mark (the horizon closed too late, a project archived meanwhile, a
kill) leaves the rows as they were, pending, and the next run proves them again.

What is not exact: a row that held records someone else wrote (the extractor's) when its day
was marked, and lost them since, is then below the mark, lacking records, without a
checkpoint row, as a proven row is; walked again (its feedback_stats promise records), its
checkpoint row takes one off the count although the mark never counted it (the count stops
at 0), where the runs strategy would count one pending row fewer. A row's past cannot be
told from its present without a write per row, which is what this avoids.
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
        #: days a walk settled by proof: rows left without a checkpoint row, counted by the mark
        self.proven: set[dt.date] = set()

    @property
    def marking(self) -> bool:
        return self.id_bound > 0

    def read(self, day: dt.date, rows: int) -> None:
        self.open[day] += rows

    def prove(self, day: dt.date) -> None:
        """A walk read only ``day``'s rows a proof does not cover; its mark counts the others."""
        self.proven.add(day)

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
