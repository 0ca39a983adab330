"""The project strategy against what the API holds now: edits after a listing, revert, --refetch,
the sampled check, a database not upgraded. Real PostgreSQL, the fake over HTTP."""

from __future__ import annotations

import datetime as dt

import psycopg

from backfill import listing, operations
from backfill.config import Database, Window

from .helpers import seed_traces
from .test_project_strategy import TRACES, expected, go, serve, stored


def reviewed(dsn: str) -> str:
    """A run enriched from the listing of its own project (its records carry its session_id)."""
    with psycopg.connect(dsn) as conn:
        (run_id,) = conn.execute(
            "SELECT run_id FROM runs WHERE project = 'proj-a' AND data -> 'feedback_records' <> '[]' ORDER BY id LIMIT 1"
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
        retired = conn.execute("SELECT count(*) FROM feedback_backfill_listing WHERE fallback LIKE 'retired%'").fetchone()
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
