"""What `backfill run` did (``runner.summary.RunSummary``): counts, exit code, outcome and lines."""

from __future__ import annotations

import signal
from collections import Counter

from backfill.domain.rows import Tally, Written
from backfill.runner.summary import RunSummary


def test_spent_and_add_sum_what_each_batch_cost_and_wrote() -> None:
    s = RunSummary()
    s.spent(Tally(requests=3, errors=1, rate_limit_wait_s=1.5, outage_wait_s=0.25, records=40, dropped=2))
    s.spent(Tally(requests=2, records=10))
    s.add(Written(examined=20, enriched=8, records=50, no_feedback=10, skipped=1, failed=Counter(api_error=1)))
    s.add(Written(examined=5, enriched=5, records=7, failed=Counter(api_error=1, mismatch=2)))
    assert (s.api_requests, s.api_errors, s.rate_limit_wait_s, s.outage_wait_s) == (5, 1, 1.5, 0.25)
    assert (s.records_fetched, s.dropped) == (50, 2)
    assert (s.examined, s.enriched, s.records, s.no_feedback, s.skipped) == (25, 13, 57, 10, 1)
    assert s.failed == Counter(api_error=2, mismatch=2)


def test_listed_adds_what_a_listing_on_the_worker_counted_and_nothing_the_apply_counts() -> None:
    s = RunSummary(examined=7, enriched=2, api_requests=4, sampled=1, fallbacks={"a": "why a"})
    part = RunSummary(sampled=50, listed_records=300, listed_outside=3, fallbacks={"b": "why b"})
    part.spent(Tally(requests=6, errors=1, rate_limit_wait_s=2.0, outage_wait_s=0.5, records=310, dropped=1))
    part.examined = 99  # a listing examines no row: not taken
    s.listed(part)
    assert (s.api_requests, s.api_errors, s.rate_limit_wait_s, s.outage_wait_s) == (10, 1, 2.0, 0.5)
    assert (s.records_fetched, s.dropped, s.sampled, s.listed_records, s.listed_outside) == (310, 1, 51, 300, 3)
    assert s.fallbacks == {"a": "why a", "b": "why b"} and (s.examined, s.enriched) == (7, 2)


def test_exit_code_and_outcome() -> None:
    assert (RunSummary().exit_code, RunSummary().outcome) == (0, "completed")
    failed = RunSummary(failed=Counter(mismatch=1))
    assert (failed.exit_code, failed.outcome) == (3, "completed_with_failures")
    assert RunSummary(failed=Counter(mismatch=0)).exit_code == 0
    # a stop wins over failures: 128 + the signal, as a shell reports it
    term = RunSummary(stopped=True, interrupted_by=signal.SIGTERM, failed=Counter(mismatch=1))
    assert (term.exit_code, term.outcome) == (143, "interrupted")
    assert RunSummary(stopped=True).exit_code == 130  # stopped through the Python API: as SIGINT


def test_the_lines_of_a_run() -> None:
    s = RunSummary(pending_at_start=500, elapsed_s=12.5, runs_fetched=240, choices=["auto chose runs: cheaper"])
    s.add(Written(examined=250, enriched=100, records=180, no_feedback=140, skipped=2, failed=Counter(mismatch=7)))
    s.add(Written(failed=Counter(api_error=1)))
    s.spent(Tally(requests=5, errors=1, rate_limit_wait_s=2.0, outage_wait_s=0.5, records=180, dropped=3))
    assert s.lines() == [
        "examined 250 row(s) of 500 pending in 12.5s (20.0 rows/s)",
        "  enriched     100 row(s), 180 feedback record(s) stored",
        "  no feedback  140 row(s)",
        "  failed       8 row(s) (api_error 1, mismatch 7)",
        "  API requests 5 (1 failed) for 240 run(s) and 180 record(s); lower bound 3",
        "  strategy     runs (auto chose runs: cheaper)",
        "  waited       2.0s on rate limits (429), 0.5s on API failures and outages",
        "  dropped      3 record(s) for runs not asked or repeated across pages",
        "  skipped      2 row(s) held or changed by another writer (next run)",
    ]


def test_the_lines_of_a_quiet_run_say_only_what_happened() -> None:
    assert RunSummary().lines() == [
        "examined 0 row(s) of 0 pending in 0.0s (0.0 rows/s)",
        "  enriched     0 row(s), 0 feedback record(s) stored",
        "  no feedback  0 row(s)",
        "  failed       0 row(s)",
        "  API requests 0 (0 failed) for 0 run(s) and 0 record(s); lower bound 0",
    ]


def test_the_lines_of_a_project_run_with_a_fallback() -> None:
    s = RunSummary(strategy="mixed", requests_saved=1234, listed_records=5000, listed_outside=12, sampled=5)
    s.fallbacks["proj-b"] = "the listing was refused; fetched run by run"
    assert s.lines()[-2:] == [
        "  strategy     mixed: 1,234 request(s) saved against run by run; 5,000 record(s) listed, 12 of runs"
        " outside the window (ignored), 5 run(s) sampled",
        "  fallback     proj-b: the listing was refused; fetched run by run",
    ]


def test_the_lines_of_a_dry_run_with_its_estimate() -> None:
    s = RunSummary(dry_run=True, examined=40, pending_at_start=40, would_be_invalid=2, elapsed_s=0.5)
    s.choices = ["proj-a: project (10 requests against 400)", "proj-b: runs"]
    s.expected_requests, s.delay_ms = 130, 1000
    assert s.lines() == [
        "dry run: would examine 40 row(s) of 40 pending in 0.5s (80.0 rows/s)",
        "  invalid      2 row(s) would be recorded invalid, without an API call",
        "  strategy     proj-a: project (10 requests against 400)",
        "    proj-b: runs",
        "  estimate     ~130 API requests, at least 2m 10s at --delay-ms 1000 (the pacing alone)",
    ]
    one = RunSummary(expected_requests=1).estimate()
    assert one == "~1 API request, at least 0s at --delay-ms 0 (the pacing alone)"
