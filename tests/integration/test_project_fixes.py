"""The project strategy against what the API holds now: edits after a listing, revert, --refetch,
the sampled check, a database not upgraded. Real PostgreSQL, the fake over HTTP."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from typing import Any

import psycopg

from backfill.config import Database, Window
from backfill.domain import listing
from backfill.operations import migrate
from backfill.operations import repair as operations
from backfill.sandbox.fake_langsmith import FakeLangSmith
from backfill.sandbox.fake_langsmith.listing import Filters
from backfill.sandbox.fake_langsmith.plumbing import Answer
from backfill.sandbox.traces import trace_feedback

from ..helpers import seed_traces
from .test_project_strategy import KEY, TRACES, expected, go, serve, stored


def reviewed(dsn: str) -> str:
    """A run enriched from the listing of its own project (its records carry its session_id)."""
    with psycopg.connect(dsn) as conn:
        (run_id,) = conn.execute(
            "SELECT run_id FROM runs WHERE project = 'proj-a' AND data -> 'feedback_records' <> '[]'"
            " ORDER BY id LIMIT 1"
        ).fetchone()
    return str(run_id)


def edit(fake, run_id: str) -> None:  # type: ignore[no-untyped-def]
    """A reviewer changes the score of the run's first record (same id, same created_at)."""
    recs = fake.records_of(run_id)
    fake.set_feedback(run_id, [{**recs[0], "score": 0.123}, *recs[1:]])


def re_archive(dsn: str, run_id: str) -> None:
    """The extractor replaces the row's document whole: feedback_records gone (stats unchanged)."""
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE runs SET data = data - 'feedback_records' WHERE run_id = %s", (run_id,))


def test_a_record_edited_then_re_archived_is_stored_as_the_api_holds_it_on_the_next_pass(dsn):
    runs = seed_traces(dsn, TRACES)
    with serve(runs) as fake:
        go(dsn, fake, strategy="project")
        x = reviewed(dsn)
        edit(fake, x)
        re_archive(dsn, x)
        want = expected(fake, runs)
        summary = go(dsn, fake, strategy="project")  # extends the applied listing: lists only what is new
    assert summary.exit_code == 0 and summary.examined == 1
    assert stored(dsn)[x] == want[x] and want[x][0]["score"] == 0.123
    assert {k: v for k, v in stored(dsn).items() if v is not None} == want


def test_after_a_revert_the_next_pass_lists_afresh_and_stores_the_api_s_current_records(dsn):
    runs = seed_traces(dsn, TRACES)
    with serve(runs) as fake:
        go(dsn, fake, strategy="project")
        operations.revert(Database(dsn), Window.parse("14d"))
        x = next(r.run_id for r in runs if r.project == "proj-a" and fake.records_of(r.run_id))
        edit(fake, x)
        want = expected(fake, runs)
        n = len(fake.feedback_requests())
        summary = go(dsn, fake, strategy="project")
        listed = [r for r in fake.feedback_requests()[n:] if "session" in r.query]
    assert summary.exit_code == 0 and summary.strategy == "project" and not summary.fallbacks
    # the retired listings are not extended: each project is listed again from the window's start
    start = listing.window_start(Window.parse("14d"))
    assert {dt.datetime.fromisoformat(r.query["min_created_at"][0]) for r in listed} >= {start}
    assert stored(dsn)[x] == want[x] and want[x][0]["score"] == 0.123
    assert {k: v for k, v in stored(dsn).items() if v is not None} == want
    with psycopg.connect(dsn) as conn:
        retired = conn.execute(
            "SELECT count(*) FROM feedback_backfill_listing WHERE fallback LIKE 'retired%'"
        ).fetchone()
    assert retired == (2,)


def unfinish(dsn: str, project: str, ago: str = "0 minutes") -> int:
    """The project's listing as a kill -9 inside it leaves it (listed but for its last minute),
    its end moved ``ago`` into the past; its id."""
    with psycopg.connect(dsn) as conn:
        (lid,) = conn.execute(
            "UPDATE feedback_backfill_listing SET completed_at = NULL, applied_at = NULL,"
            " listed_to = listed_to - %s::interval, listed_until = listed_to - %s::interval - interval '1 minute'"
            " WHERE project = %s RETURNING id",
            (ago, ago, project),
        ).fetchone()
    return int(lid)


def projects_listings(dsn: str, project: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        return [i for (i,) in conn.execute("SELECT id FROM feedback_backfill_listing WHERE project = %s", (project,))]


def test_refetch_after_a_killed_listing_lists_afresh_and_stores_the_api_s_current_records(dsn):
    runs = seed_traces(dsn, TRACES)
    with serve(runs) as fake:
        go(dsn, fake, strategy="project")
        killed = unfinish(dsn, "proj-a")
        x = next(r.run_id for r in runs if r.project == "proj-a" and fake.records_of(r.run_id))
        edit(fake, x)
        want = expected(fake, runs)
        summary = go(dsn, fake, strategy="project", refetch=True)
    assert summary.exit_code == 0 and not summary.fallbacks
    (new,) = [i for i in projects_listings(dsn, "proj-a") if i != killed]  # not the killed one resumed
    assert {k: v for k, v in stored(dsn).items() if v is not None} == want and want[x][0]["score"] == 0.123


def test_an_unfinished_listing_that_ended_over_an_hour_ago_is_not_resumed(dsn):
    runs = seed_traces(dsn, TRACES)
    with serve(runs) as fake:
        go(dsn, fake, strategy="project")
        killed = unfinish(dsn, "proj-a", ago="2 hours")
        with psycopg.connect(dsn) as conn:  # the rows of proj-a to enrich again
            conn.execute("UPDATE runs SET data = data - 'feedback_records' WHERE project = 'proj-a'")
            conn.execute("DELETE FROM feedback_backfill_status")
        want = expected(fake, runs)
        go(dsn, fake, strategy="project")
    assert [i for i in projects_listings(dsn, "proj-a") if i != killed]
    assert {k: v for k, v in stored(dsn).items() if v is not None} == want


class ListsOtherScores(FakeLangSmith):
    """Its project listing serves every record with another score than its per-run answer."""

    def _matching(self, filters: Filters) -> list[dict[str, Any]]:
        found = super()._matching(filters)
        return [{**r, "score": 0.5} for r in found] if filters.listing else found


class PoisonsTheSample(FakeLangSmith):
    """The first request naming runs after the run's pre-flight probe (proj-a's sampled check)
    fixes the sample; every request naming one of two thirds of it fails with a 500: the check
    answers for fewer than half. The probe's runs, answered before, stay answered when asked
    alone (as the outage probe asks one of them): a run the API answered is not poisoned."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failing: set[str] = set()
        self.probed: set[str] | None = None

    def _matching(self, filters: Filters) -> list[dict[str, Any]]:
        if not filters.listing and self.probed is None:
            self.probed = set(filters.runs)  # the pre-flight probe (runner.preflight)
        elif not filters.listing and not self.failing:
            self.failing = set(filters.runs[: 2 * len(filters.runs) // 3 + 1])
        if self.failing & set(filters.runs) and not (len(filters.runs) == 1 and set(filters.runs) <= self.probed):
            raise Answer(500, "Internal Server Error")
        return super()._matching(filters)


def test_the_sampled_check_compares_the_records_content_and_falls_back_when_the_listing_differs(dsn):
    runs = seed_traces(dsn, TRACES)
    fake = ListsOtherScores(api_key=KEY, feedback=trace_feedback())
    fake.add_runs(r.info for r in runs)
    with fake:
        want = expected(fake, runs)
        summary = go(dsn, fake, strategy="project")
    assert set(summary.fallbacks) == {"proj-a", "proj-b"}
    assert all("listed otherwise than they hold" in why for why in summary.fallbacks.values()), summary.fallbacks
    assert {k: v for k, v in stored(dsn).items() if v is not None} == want


def test_the_sampled_check_falls_back_when_fewer_than_half_of_its_sample_answered(dsn):
    runs = seed_traces(dsn, TRACES)
    fake = PoisonsTheSample(api_key=KEY, feedback=trace_feedback())
    fake.add_runs(r.info for r in runs)
    with fake:
        summary = go(dsn, fake, strategy="project")
    why = summary.fallbacks.get("proj-a", "")
    assert why.startswith("only ") and "sampled run(s) could be fetched run by run" in why, summary.fallbacks


def test_run_on_a_database_at_fb0006_says_to_upgrade_in_one_line_and_records_nothing(dsn):
    seed_traces(dsn, 10)
    migrate.downgrade(Database(dsn), "fb0006")
    with serve([]) as fake:
        env = {**os.environ, "DATABASE_URL": dsn, "LANGSMITH_API_KEY": KEY, "LANGSMITH_ENDPOINT": fake.url}
        env["LANGSMITH_CONFIG_FILE"] = os.devnull
        done = subprocess.run(
            [sys.executable, "-m", "backfill", "run", "--no-progress"], env=env, capture_output=True, text=True
        )
    assert done.returncode == 1, done
    (line,) = [x for x in done.stderr.splitlines() if " error: " in x]
    assert "run `backfill db upgrade`" in line and "Traceback" not in done.stderr
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM feedback_backfill_invocations").fetchone() == (0,)


class SessionsWithoutId(FakeLangSmith):
    """GET /sessions?name= answers its projects without their id."""

    def _sessions_answer(self, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> str:
        found = json.loads(super()._sessions_answer(path, query, headers))
        return json.dumps([{k: v for k, v in s.items() if k != "id"} for s in found])


def test_a_project_named_without_an_id_falls_back_to_runs_in_one_line(dsn):
    runs = seed_traces(dsn, TRACES, projects=("proj-a",))
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE runs SET data = data - 'session_id'")
    fake = SessionsWithoutId(api_key=KEY, feedback=trace_feedback())
    fake.add_runs(r.info for r in runs)
    with fake:
        want = expected(fake, runs)
        summary = go(dsn, fake, strategy="project")
    assert summary.fallbacks == {"proj-a": "LangSmith named project 'proj-a' without a valid id (GET /sessions?name=)"}
    assert {k: v for k, v in stored(dsn).items() if v is not None} == want


def test_auto_counts_each_projects_pending_rows_as_the_walk_does(dsn):
    """A project whose rows lacking records were nearly all examined (no feedback) still has
    its one pending row counted: sharing the pending count out by rows lacking records gave it
    to the other project and called this one "nothing pending"."""
    runs = seed_traces(dsn, TRACES)
    with serve(runs) as fake:
        assert go(dsn, fake, strategy="runs").exit_code == 0
        with psycopg.connect(dsn) as conn:
            (run_id,) = conn.execute(
                "SELECT s.run_id FROM feedback_backfill_status AS s JOIN runs AS r USING (run_id)"
                " WHERE r.project = 'proj-b' AND s.state = 'no_feedback' ORDER BY r.id LIMIT 1"
            ).fetchone()
            conn.execute("DELETE FROM feedback_backfill_status WHERE run_id = %s", (run_id,))
            conn.execute("DELETE FROM feedback_backfill_settled")
        summary = go(dsn, fake, strategy="auto", dry_run=True)
    assert summary.pending_at_start == 1
    lines = [c for c in summary.choices if c.startswith(("proj-a:", "proj-b:"))]
    assert any(c.startswith("proj-a:") and "nothing pending" in c for c in lines), summary.choices
    assert any(c.startswith("proj-b:") and "nothing pending" not in c for c in lines), summary.choices
