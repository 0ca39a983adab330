"""The runs strategy's requests (``runner.batches``): the walk's rows regrouped by what they promise."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from backfill.domain.packing import BUDGET
from backfill.domain.rows import Row, promise
from backfill.runner.batches import Packer, packed
from backfill.sandbox import synthetic

DAY = dt.date(2026, 11, 20)


def row(i: int, n: int, *, data_type: str = "object", run_id: str | None = None) -> Row:
    stats: Any = {"final_verdict": {"n": n}} if n else {}
    return Row(i, run_id or synthetic.run_id_for(i, "batches"), DAY, data_type, stats)


def reads(rows: list[Row], size: int, log: list[str] | None = None) -> Iterator[list[Row]]:
    """The walk: ``rows`` read ``size`` at a time (each read logged)."""
    for start in range(0, len(rows), size):
        if log is not None:
            log.append(f"read {start // size + 1}")
        yield rows[start : start + size]


def test_every_row_once_in_walk_order_within_the_budget_and_the_ids() -> None:
    rows = [row(i, [0, 0, 3, 40, 0, 7, 120, 1][i % 8]) for i in range(500)]
    out = list(packed(reads(rows, 64), Packer(lambda: 100)))
    assert [r for request in out for r in request] == rows
    for request in out:
        assert len(request) <= 100
        promised = [promise(r) for r in request]
        assert sum(promised) <= BUDGET or sum(1 for p in promised if p) == 1  # alone past the budget: paged


def test_a_request_is_sent_once_it_is_closed_not_at_the_end_of_the_walk() -> None:
    log: list[str] = []
    rows = [row(i, 30) for i in range(12)]  # three runs of 30 fit the budget, a fourth does not
    for request in packed(reads(rows, 4, log), Packer(lambda: 100)):
        log.append(f"request of {len(request)}")
    # read 1 closes the first request (the 4th run does not fit): it goes before read 2
    assert log == ["read 1", "request of 3", "read 2", "request of 3", "read 3", "request of 3", "request of 3"]


def test_rows_promising_nothing_wait_for_a_full_request_and_the_last_goes_at_the_end() -> None:
    log: list[str] = []
    for request in packed(reads([row(i, 0) for i in range(250)], 60, log), Packer(lambda: 100)):
        log.append(f"request of {len(request)}")
    assert log == [
        "read 1",
        "read 2",
        "request of 100",
        "read 3",
        "read 4",
        "request of 100",
        "read 5",
        "request of 50",
    ]


def test_invalid_rows_promise_nothing_and_ride_along() -> None:
    rows = [row(0, 60), row(1, 30, data_type="array"), row(2, 30, run_id="not-a-uuid"), row(3, 39), row(4, 1)]
    assert [len(r) for r in packed(reads(rows, 10), Packer(lambda: 100))] == [4, 1]


def test_a_lowered_max_ids_applies_from_the_next_request() -> None:
    most = [100]
    sizes = []
    for request in packed(reads([row(i, 0) for i in range(300)], 100), Packer(lambda: most[0])):
        sizes.append(len(request))
        most[0] = 30  # a 414 while the first request was fetched
    assert sizes == [100, 30, 30, 30, 30, 30, 30, 20]


def test_learn_scales_overstated_promises_once_a_page_was_promised() -> None:
    packer = Packer(lambda: 100)
    rows = [row(i, 10) for i in range(20)]  # 200 records promised ...
    answers: dict[str, Any] = {r.run_id: [{}] * 5 for r in rows}  # ... 100 returned: half
    answers[rows[0].run_id] = "API error: HTTP 500"  # a failed fetch teaches nothing
    packer.learn(rows, answers)
    assert (packer.promised, packer.received) == (190, 95)
    assert packer.sizes([row(i, 10) for i in range(40)]) == [19, 19, 2]  # 10 promised counts as 5: 19 a request
    assert Packer(lambda: 100).sizes([row(i, 10) for i in range(40)]) == [9, 9, 9, 9, 4]
