"""What `backfill check` found (``domain.checks.CheckReport``): levels, exit code, lines, JSON."""

from __future__ import annotations

import datetime as dt

import pytest

from backfill.config import Window
from backfill.domain.checks import FAIL, FAIL_WITHOUT, NEEDS, OK, WARN, CheckReport

WINDOW = Window(dt.date(2026, 11, 17), dt.date(2026, 12, 1))


def report(*levels: str, window: Window = WINDOW) -> CheckReport:
    r = CheckReport(window)
    for i, level in enumerate(levels):
        r.add(f"item {i}", level, f"said {level}")
    return r


@pytest.mark.parametrize(
    ("levels", "status", "code"),
    [
        ((), OK, 0),
        ((OK, OK), OK, 0),
        ((OK, WARN), WARN, 0),  # a warning is said, and the check still passes
        ((WARN, FAIL, OK), FAIL, 1),
        ((FAIL,), FAIL, 1),
    ],
)
def test_the_worst_item_is_the_status_and_only_a_failure_exits_1(levels, status, code) -> None:
    r = report(*levels)
    assert (r.status, r.exit_code) == (status, code)


def test_lines_one_per_item_then_the_verdict() -> None:
    projects = Window(dt.date(2026, 11, 17), dt.date(2026, 12, 1), ("proj-a", "proj-b"))
    r = CheckReport(projects)
    r.add("database", OK, "PostgreSQL 16.4 at db:5432, role backfill_runner")
    r.add("can revert", WARN, "role backfill_runner lacks DELETE on feedback_backfill_status (the owner's)")
    r.add("api", FAIL, "LangSmith refused the API key (HTTP 401)", status=401)
    assert r.lines() == [
        f"backfill check: {projects.describe()}",  # run_date 2026-11-17 .. 2026-11-30 in proj-a, proj-b
        "OK    database     PostgreSQL 16.4 at db:5432, role backfill_runner",
        "WARN  can revert   role backfill_runner lacks DELETE on feedback_backfill_status (the owner's)",
        "FAIL  api          LangSmith refused the API key (HTTP 401)",
        "check: FAIL (1 failed, 1 warning(s), 1 ok)",
    ]
    assert report(window=WINDOW).lines() == [
        f"backfill check: {WINDOW.describe()} (all projects)",
        "check: OK (0 failed, 0 warning(s), 0 ok)",
    ]


def test_the_json_document_carries_each_items_detail() -> None:
    r = report(OK)
    r.add("estimate", WARN, "about 3 h", requests=1200, strategy="runs")
    r.estimates = {"runs": 1200}
    assert r.to_json() == {
        "window": {"since": "2026-11-17", "until": "2026-12-01", "projects": []},
        "checks": [
            {"name": "item 0", "level": OK, "text": "said OK"},
            {"name": "estimate", "level": WARN, "text": "about 3 h", "requests": 1200, "strategy": "runs"},
        ],
        "estimates": {"runs": 1200},
        "status": WARN,
        "exit_code": 0,
    }


def test_every_command_that_must_not_fail_has_its_needs() -> None:
    assert set(FAIL_WITHOUT) <= set(NEEDS)
    for needs in NEEDS.values():
        columns = [column for column, _ in needs]
        assert len(columns) == len(set(columns))  # each privilege asked once per command
