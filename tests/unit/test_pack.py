"""pack: which runs share a request, by the records their feedback_stats promise (no DB, no API)."""

from __future__ import annotations

import random

import pytest

from backfill.domain.packing import BUDGET, lower_bound, pack, scaled


def test_runs_promising_nothing_fill_one_request_of_100_ids() -> None:
    assert pack([0] * 250) == [100, 100, 50]


def test_a_run_that_would_pass_the_budget_starts_the_next_request() -> None:
    # 60 + 39 = 99 fit one page with room to spare; 60 + 39 + 1 would not
    assert pack([60, 39, 1, 5]) == [2, 2]


def test_exactly_the_budget_fits_and_a_full_page_stays_possible_only_for_more_than_promised() -> None:
    assert BUDGET == 99
    assert pack([50, 49, 1]) == [2, 1]


def test_zeros_ride_along_in_a_request_whose_records_are_full() -> None:
    assert pack([99, 0, 0, 0, 2, 0]) == [4, 2]


def test_a_run_promising_more_than_a_page_is_asked_with_the_zeros_around_it() -> None:
    assert pack([0, 0, 250, 0, 3]) == [4, 1]
    assert pack([5, 250, 0]) == [1, 2]


def test_ids_per_request_limit_applies_before_the_records() -> None:
    assert pack([1] * 30, max_ids=10) == [10, 10, 10]
    assert pack([0] * 7, max_ids=3) == [3, 3, 1]


def test_nonsense_promises_count_as_nothing_and_empty_input_packs_to_nothing() -> None:
    assert pack([-5, 0]) == [2]
    assert pack([]) == []
    with pytest.raises(ValueError):
        pack([1], max_ids=0)


def test_order_is_kept_and_every_run_is_in_exactly_one_request() -> None:
    rng = random.Random(14)
    promises = [rng.choice([0, 0, 0, 1, 2, 3, 5, 40]) for _ in range(5000)]
    sizes = pack(promises)
    assert sum(sizes) == len(promises)
    i = 0
    for size in sizes:
        group = promises[i : i + size]
        i += size
        assert 1 <= size <= 100
        assert sum(group) <= BUDGET or (len([p for p in group if p]) == 1)


def test_accurate_stats_at_1_17_records_per_run_stay_within_1_15x_of_the_lower_bound() -> None:
    rng = random.Random(7)
    promises = [rng.choice([0, 0, 1, 1, 1, 2, 2, 3]) for _ in range(6000)]  # ~1.25 per run
    sizes = pack(promises)
    bound = lower_bound(len(promises), sum(promises))
    assert bound == -(-sum(promises) // 100)
    assert len(sizes) <= 1.15 * bound
    # the fixed batches of 100 runs it replaces needed two pages for most batches
    fixed = sum(-(-max(1, sum(promises[i : i + 100])) // 100) for i in range(0, len(promises), 100))
    assert len(sizes) < fixed


def test_lower_bound_is_the_larger_of_ids_and_pages() -> None:
    assert lower_bound(5952, 6983) == 70
    assert lower_bound(12000, 400) == 120
    assert lower_bound(0, 0) == 0
    assert lower_bound(1, 0) == 1


def test_overstated_stats_are_scaled_by_what_the_api_returned_once_a_page_was_promised() -> None:
    assert scaled(50, 0) == 1.0  # too little promised yet to judge
    assert scaled(300, 100) == pytest.approx(1 / 3)
    assert scaled(300, 600) == 1.0  # understated stats are left to paging
    assert scaled(1000, 0) == 0.01
    # x3 overstated stats, scaled, pack like accurate ones
    promises = [3.0 * (i % 3) for i in range(900)]
    assert pack([p * scaled(900, 300) for p in promises]) == pack([i % 3 for i in range(900)])
