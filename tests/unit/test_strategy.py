"""auto's choice per project (backfill.strategy.choose): pure, no database."""

from __future__ import annotations

from backfill.domain.strategy import ProjectFigures, choose, project_requests, ruled_out, runs_requests


def trace_shaped(runs: int, records: int) -> ProjectFigures:
    return ProjectFigures("proj-a", rows=runs, pending=runs, promised=records, promised_pending=records)


def test_the_sparse_trace_archive_of_the_issue_is_listed() -> None:
    # a project's half of 20,000 runs holding 4,324 records
    f = trace_shaped(10_000, 2_162)
    c = choose(f, "auto")
    assert c.strategy == "project" and c.runs_expected == 100
    assert c.expected == project_requests(f) == 22 + 2 + 2  # pages, a partial page per slice, the check
    assert c.line().startswith("proj-a: project, ~26 requests (2,162 records promised for 10,000 pending")


def test_a_dense_archive_is_asked_run_by_run() -> None:
    f = trace_shaped(10_000, 12_000)  # 1.2 records per run
    c = choose(f, "auto")
    assert c.strategy == "runs" and c.expected == runs_requests(f) == 122


def test_a_small_project_is_asked_run_by_run_the_listing_s_own_requests_weigh_more() -> None:
    assert choose(trace_shaped(1_000, 216), "auto").strategy == "runs"


def test_what_is_asked_is_obeyed_and_nothing_pending_costs_nothing() -> None:
    f = trace_shaped(10_000, 12_000)
    assert choose(f, "project").strategy == "project"
    assert choose(trace_shaped(10_000, 2_162), "runs").strategy == "runs"
    idle = ProjectFigures("proj-a", rows=10_000, pending=0, promised=2_162, promised_pending=0)
    assert choose(idle, "project") == choose(idle, "auto") and choose(idle, "auto").expected == 0


def test_a_pass_extending_the_previous_listing_is_costed_by_the_pending_rows_promises() -> None:
    # --follow: 300 new rows promising 60 records, in a window whose rows promise 2,162
    f = ProjectFigures("proj-a", rows=10_300, pending=300, promised=2_162, promised_pending=60, extends=True)
    assert project_requests(f) == 1 + 1 + 2
    assert choose(f, "auto").strategy == "runs"  # 3 requests run by run: still cheaper
    big = ProjectFigures("proj-a", rows=40_000, pending=30_000, promised=8_000, promised_pending=600, extends=True)
    c = choose(big, "auto")
    assert c.strategy == "project" and c.records == 600


def test_stats_promising_nothing_say_nothing_so_auto_asks_run_by_run() -> None:
    c = choose(trace_shaped(10_000, 0), "auto")
    assert c.strategy == "runs" and "nothing to plan a listing by" in c.why


def test_a_listing_ruled_out_by_the_promising_rows_is_never_chosen_whatever_the_documents_hold() -> None:
    # figure 1's dense archive: 70 % of 3,000 pending rows promise records; issue 17's, 5 %
    assert ruled_out(3_000, 2_100) and not ruled_out(10_000, 500)
    for pending in (1, 99, 100, 901, 3_000, 10_000, 250_000):
        for least in sorted({0, 1, pending // 20, pending // 4, pending // 3, pending // 2, pending}):
            if not ruled_out(pending, least):
                continue
            for records in (least, least + 1, 2 * least + 7, 5 * least + 100, 40 * least + 1_000):
                for lacking in (0, least, records // 2, records):
                    for extends in (False, True):
                        # what the listing expects (promised, or promised_pending when it extends) is at least ``least``
                        f = ProjectFigures("p", pending, pending, records, lacking if not extends else records, extends)
                        assert choose(f, "auto").strategy == "runs", (pending, least, records, lacking, extends)
