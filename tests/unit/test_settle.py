"""settle.Settling: which days of a walk may be marked settled, and when (no DB)."""

from __future__ import annotations

import datetime as dt

from backfill.domain.settling import Settling

D1, D2, D3 = (dt.date(2026, 11, d) for d in (1, 2, 3))


def test_a_day_is_ready_once_read_to_its_end_and_every_row_of_it_written() -> None:
    s = Settling(id_bound=500, vxids=["3/900"])
    s.read(D1, 3)
    s.end(D1, complete=True)
    s.read(D2, 2)
    assert s.written([D1, D1], skipped=False) == []  # one row of D1 still in flight
    assert s.written([D1, D2], skipped=False) == [D1]
    s.end(D2, complete=True)
    assert s.written([D2], skipped=False) == [D2]
    assert s.written([], skipped=False) == []  # each day is handed out once


def test_a_day_with_no_row_is_ready_at_the_next_write_or_the_walks_end() -> None:
    s = Settling(id_bound=500, vxids=["3/900"])
    s.end(D1, complete=True)
    s.end(D2, complete=True)
    assert s.written([], skipped=False) == [D1, D2]


def test_a_skipped_row_or_an_open_horizon_keeps_its_day_unmarked() -> None:
    s = Settling(id_bound=500, vxids=["3/900"])
    for day in (D1, D2, D3):
        s.read(day, 1)
    s.end(D1, complete=True)
    s.end(D2, complete=False)  # the horizon had not closed when D2 was first read
    s.end(D3, complete=True)
    assert s.written([D1, D3], skipped=True) == []  # a row of this batch was skipped: D1 and D3
    assert s.written([D2], skipped=False) == []


def test_a_walk_that_marks_nothing_never_hands_out_a_day() -> None:
    s = Settling()  # --project, --limit, --refetch, --dry-run
    assert not s.marking
    s.read(D1, 1)
    s.end(D1, complete=True)
    assert s.written([D1], skipped=False) == []
