"""`backfill run --strategy project|auto` on a trace-shaped archive, real PostgreSQL, the fake over HTTP."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

import psycopg
import pytest

import backfill
from backfill import logs
from backfill.config import Database, LangSmith, Window
from backfill.domain import listing
from backfill.domain.options import RunOptions
from backfill.errors import WrongWorkspace
from backfill.report import status_json, text
from backfill.runner.follow import follow
from backfill.sandbox.fake_langsmith import FakeLangSmith
from backfill.sandbox.fake_langsmith.listing import Filters
from backfill.sandbox.traces import TraceRun, copy_archive, trace_archive, trace_feedback

from ..helpers import apply_grants, canonical, invocations, raw_rows, seed_traces, status, wait_for

KEY = "lsv2_project_key_0123"
TRACES = 200  # 2,000 runs over 14 days, two projects, feedback on half the roots


def go(dsn: str, fake: FakeLangSmith, **opts: Any) -> backfill.RunSummary:
    opts.setdefault("delay_ms", 0)
    opts.setdefault("backoff_s", 0.001)
    window = opts.pop("window", None) or Window.parse("14d")
    return backfill.run(
        Database(dsn), LangSmith(api_key=KEY, endpoint=fake.url, timeout_s=5.0), RunOptions(window=window, **opts)
    )


#: Records are created no later than this (the fake's default is now, at each ``add_runs``):
#: two fakes serving one archive place its records at the same times, whatever the hour.
SERVED_AT = dt.datetime.now(dt.UTC)


def serve(runs: list[TraceRun], **kwargs: Any) -> FakeLangSmith:
    fake = FakeLangSmith(api_key=KEY, feedback=trace_feedback(**kwargs))
    latest = max((r.info.start_time for r in runs), default=SERVED_AT)
    fake.add_runs((r.info for r in runs), horizon=min(latest + dt.timedelta(hours=1), SERVED_AT))
    return fake


def expected(fake: FakeLangSmith, runs: list[TraceRun]) -> dict[str, list[dict[str, Any]]]:
    """run_id -> the records the backfill must store (sorted by created_at, id), runs with feedback only."""
    out = {}
    for r in runs:
        recs = fake.records_of(r.run_id)
        if recs:
            out[r.run_id] = canonical(sorted(recs, key=lambda x: (x["created_at"], x["id"])))
    return out


def stored(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT run_id, data -> 'feedback_records' FROM runs ORDER BY id").fetchall())


def states(dsn: str) -> dict[str, tuple[str, int]]:
    return {k: (v["state"], v["records"]) for k, v in status(dsn).items()}


def listings(dsn: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute("SELECT * FROM feedback_backfill_listing ORDER BY id").fetchall()


def forget(dsn: str) -> None:
    """Back to the archive as the extractor left it (no feedback_records, nothing of ours)."""
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE runs SET data = data - 'feedback_records'")
        conn.execute("DELETE FROM feedback_backfill_status")
        conn.execute("DELETE FROM feedback_backfill_staged")
        conn.execute("DELETE FROM feedback_backfill_listing")
        conn.execute("DELETE FROM feedback_backfill_settled")  # the runs strategy marks the days it walked whole


def test_project_strategy_enriches_exactly_and_row_for_row_as_the_runs_strategy(dsn):
    runs = seed_traces(dsn, TRACES)
    before = raw_rows(dsn)
    with serve(runs) as fake:
        want = expected(fake, runs)
        assert 60 < len(want) < 140  # half the 200 roots; no child run has feedback
        by_runs = go(dsn, fake, strategy="runs")
        runs_rows, runs_states = raw_rows(dsn), states(dsn)
        forget(dsn)
        assert raw_rows(dsn) == before
        listed = go(dsn, fake, strategy="project")
        assert raw_rows(dsn) == runs_rows  # byte for byte, every row
        checkpointed = states(dsn)  # the others settled by the day's mark: tests/test_settled_empty.py
        assert checkpointed == {k: v for k, v in runs_states.items() if k in checkpointed}
        assert {v for k, v in runs_states.items() if k not in checkpointed} == {("no_feedback", 0)}
    got = stored(dsn)
    assert {k: v for k, v in got.items() if v is not None} == want
    assert listed.exit_code == 0 and listed.examined == by_runs.examined == len(runs)
    assert listed.enriched == len(want) and listed.records == sum(len(v) for v in want.values())
    assert listed.strategy == "project" and not listed.fallbacks
    # ~1 request per 100 records (plus a partial page per slice and the check), not 1 per 100 runs
    assert listed.api_requests < by_runs.api_requests / 2, (listed.api_requests, by_runs.api_requests)
    inv = invocations(dsn)[-1]
    assert inv["strategy"] == "project" and inv["requests_saved"] == listed.requests_saved > 0
    assert inv["api_requests"] == listed.api_requests
    assert inv["params"]["strategy_choice"] == {"proj-a": "project", "proj-b": "project"}


def test_rows_outside_the_window_stay_untouched_although_their_late_feedback_is_listed(dsn):
    runs = seed_traces(dsn, TRACES)
    before = raw_rows(dsn)
    with serve(runs) as fake:
        want = expected(fake, runs)
        # the window: the last 7 days; the 7 days before it hold roots whose feedback was
        # created days after they started, inside the window's listing range
        window = Window.parse("7d")
        late = [
            r
            for r in runs
            if r.run_date < window.since
            and any(
                dt.datetime.fromisoformat(x["created_at"]) >= dt.datetime.combine(window.since, dt.time(), dt.UTC)
                for x in fake.records_of(r.run_id)
            )
        ]
        assert late, "the archive should hold late feedback of runs before the window"
        summary = go(dsn, fake, strategy="project", window=window)
    after = raw_rows(dsn)
    got = stored(dsn)
    for r in runs:
        if r.run_date < window.since:
            assert after[r.run_id] == before[r.run_id]  # never written
        else:
            assert got[r.run_id] == want.get(r.run_id), r.run_id
    assert summary.listed_outside >= len(late)
    assert not (set(status(dsn)) & {r.run_id for r in runs if r.run_date < window.since})


def test_auto_picks_project_on_the_sparse_archive_and_says_so_in_the_dry_run(dsn):
    # 10,000 runs: at 5,000 runs a project, listing saves more than two requests in three (on a
    # small archive the listing's own few requests weigh more: auto keeps asking run by run)
    runs = seed_traces(dsn, 1000)
    with serve(runs) as fake:
        dry = go(dsn, fake, dry_run=True)
        assert dry.choices[0].startswith("project listing for 2 of 2 project(s)")
        assert any(line.startswith("proj-a: project, ~") for line in dry.choices)
        assert any("strategy     project listing for 2 of 2" in line for line in dry.lines())
        summary = go(dsn, fake)
    assert summary.strategy == "project" and summary.exit_code == 0


def test_auto_picks_runs_on_a_dense_archive(dsn):
    # one run per trace, every one reviewed: 1-3 records per run
    runs = seed_traces(dsn, 600, runs_per_trace=1, reviewed=1.0)
    with serve(runs, reviewed=1.0) as fake:
        want = expected(fake, runs)
        summary = go(dsn, fake)
    assert summary.strategy == "runs" and summary.requests_saved == 0
    assert summary.choices[0].startswith("project listing for 0 of 2 project(s)")
    assert all(": runs, ~" in line for line in summary.choices[1:])
    # each reviewed run promises one record at least: that rules a listing out, no document read
    assert all("(at least 300 records promised for 300 pending rows; listing ~" in c for c in summary.choices[1:])
    got = stored(dsn)
    assert {k: v for k, v in got.items() if v is not None} == want
    assert invocations(dsn)[-1]["strategy"] == "runs"


@pytest.mark.parametrize("strategy", ["project", "auto"])
def test_a_second_pass_lists_only_what_was_created_since_and_stays_exact(dsn, strategy):
    runs = seed_traces(dsn, TRACES)
    with serve(runs) as fake:
        want = expected(fake, runs)
        first = go(dsn, fake, strategy=strategy)
        n = len(fake.feedback_requests())
        again = go(dsn, fake, strategy=strategy)
        second = fake.feedback_requests()[n:]
    assert first.enriched == len(want) and again.examined == 0
    # nothing pending: the second pass asks nothing at all
    assert second == [] and again.api_requests == 0
    assert {k: v for k, v in stored(dsn).items() if v is not None} == want


def test_the_sampled_check_catches_a_listing_that_misses_records_and_falls_back_to_runs(dsn):
    runs = seed_traces(dsn, TRACES)
    with serve(runs) as fake:
        want = expected(fake, runs)
        fake.listing_misses(7)  # every 7th record of a listing is silently left out
        summary = go(dsn, fake, strategy="project")
    assert set(summary.fallbacks) == {"proj-a", "proj-b"}
    assert all("missing from it" in why for why in summary.fallbacks.values()), summary.fallbacks
    assert summary.strategy == "runs" and summary.requests_saved == 0
    assert {k: v for k, v in stored(dsn).items() if v is not None} == want  # exact all the same
    said = [line for line in summary.lines() if line.startswith("  fallback     proj-a: the project listing differs")]
    assert len(said) == 1 and "\n" not in summary.fallbacks["proj-a"]
    with psycopg.connect(dsn) as conn:
        fallbacks = conn.execute("SELECT project, fallback FROM feedback_backfill_listing ORDER BY id").fetchall()
    assert [p for p, why in fallbacks if why] == ["proj-a", "proj-b"]
    assert invocations(dsn)[-1]["strategy"] == "runs"


def test_the_project_id_is_asked_by_name_when_the_rows_do_not_carry_it(dsn):
    runs = seed_traces(dsn, TRACES)
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE runs SET data = data - 'session_id'")
    with serve(runs) as fake:
        want = expected(fake, runs)
        summary = go(dsn, fake, strategy="project")
        asked = [r for r in fake.requests if r.path == "/sessions"]
    assert sorted(q.query["name"][0] for q in asked) == ["proj-a", "proj-b"]
    assert summary.strategy == "project" and not summary.fallbacks
    assert {k: v for k, v in stored(dsn).items() if v is not None} == want


def test_an_unknown_project_falls_back_to_runs_saying_why(dsn):
    runs = seed_traces(dsn, TRACES, projects=("proj-a",))
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE runs SET data = data - 'session_id'")
    with FakeLangSmith(api_key=KEY, feedback=trace_feedback()) as fake:  # no catalog: no project known
        want = expected(fake, runs)
        summary = go(dsn, fake, strategy="project")
    assert summary.fallbacks == {"proj-a": "LangSmith knows no project named 'proj-a' (GET /sessions?name=)"}
    assert {k: v for k, v in stored(dsn).items() if v is not None} == want


def test_an_outage_and_a_rate_limit_during_the_listing_are_waited_out_and_the_result_is_exact(dsn):
    runs = seed_traces(dsn, TRACES)
    with serve(runs) as fake:
        want = expected(fake, runs)
        fake.outage(requests=3, status=503, after=1)
        fake.rate_limit_window(1.0, retry_after="1", after=5)
        summary = go(dsn, fake, strategy="project", outage_wait_s=60)
    assert summary.exit_code == 0 and summary.strategy == "project", summary.lines()
    assert summary.outage_wait_s > 0 and summary.rate_limit_wait_s > 0
    assert {k: v for k, v in stored(dsn).items() if v is not None} == want


def test_a_later_pass_lists_only_what_was_created_since_the_previous_one(dsn):
    """What each --follow pass does: the rows archived since are applied from the records staged
    before (listed then as runs outside the window) and from those created since."""
    everything = list(trace_archive(TRACES + 50))
    first, later = everything[:-500], everything[-500:]
    with psycopg.connect(dsn) as conn:
        copy_archive(conn, first)
    with serve(everything) as fake:
        want = expected(fake, everything)
        go(dsn, fake, strategy="project")
        (done,) = [r for r in listings(dsn) if r["project"] == "proj-a"]
        with psycopg.connect(dsn) as conn:
            copy_archive(conn, later)  # the extractor archived 500 more rows meanwhile
        n = len(fake.feedback_requests())
        summary = go(dsn, fake, strategy="project")
        second = [r for r in fake.feedback_requests()[n:] if r.query.get("session") == [done["session_id"]]]
    assert summary.examined == 500 and summary.strategy == "project"
    assert second and all(
        dt.datetime.fromisoformat(r.query["min_created_at"][0]) >= done["listed_to"] - listing.OVERLAP for r in second
    )
    assert {k: v for k, v in stored(dsn).items() if v is not None} == want


def test_refetch_lists_afresh_and_replaces_the_records_that_changed(dsn):
    runs = seed_traces(dsn, TRACES)
    with serve(runs) as fake:
        go(dsn, fake, strategy="project")
        changed = next(r.run_id for r in runs if fake.records_of(r.run_id))
        recs = [{**x, "comment": "revised", "modified_at": x["created_at"]} for x in fake.records_of(changed)]
        fake.set_feedback(changed, recs)
        want = expected(fake, runs)
        summary = go(dsn, fake, strategy="project", refetch=True)
    assert summary.strategy == "project" and not summary.fallbacks
    assert stored(dsn)[changed] == want[changed] and want[changed][0]["comment"] == "revised"
    assert {k: v for k, v in stored(dsn).items() if v is not None} == want


def test_status_says_the_strategy_and_the_requests_saved(dsn):
    runs = seed_traces(dsn, TRACES)
    with serve(runs) as fake:
        summary = go(dsn, fake, strategy="project")
    report = backfill.status(Database(dsn), Window.parse("14d"))
    shown = "\n".join(text.lines(report))
    assert f"strategy project: {summary.requests_saved:,} requests saved against run by run" in shown
    as_json = status_json.to_json(report)
    assert as_json["runs"]["last"]["strategy"] == "project"
    assert as_json["runs"]["last"]["requests_saved"] == summary.requests_saved
    assert any(line.startswith("  strategy     project: ") for line in summary.lines())


def test_the_least_privilege_role_of_grants_sql_runs_the_project_strategy(dsn):
    """sql/grants.sql covers the listing's tables: staging, its progress, and the DELETE of a fresh listing."""
    runs = seed_traces(dsn, TRACES)
    dbname = dsn.rsplit("/", 1)[1]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS backfill_lister")
        conn.execute("CREATE ROLE backfill_lister LOGIN")
        conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        conn.execute(f"GRANT CONNECT ON DATABASE {dbname} TO backfill_lister")
    apply_grants(dsn, "backfill_lister")
    lister = dsn.replace("postgresql://postgres@", "postgresql://backfill_lister@")
    try:
        with serve(runs) as fake:
            want = expected(fake, runs)
            first = go(lister, fake, strategy="project")
            again = go(lister, fake, strategy="project", refetch=True)  # a fresh listing: DELETE of the staged
        assert first.strategy == again.strategy == "project" and first.exit_code == again.exit_code == 0
        assert {k: v for k, v in stored(dsn).items() if v is not None} == want
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP OWNED BY backfill_lister")
            conn.execute("DROP ROLE backfill_lister")


def test_a_key_of_another_workspace_stops_the_run_as_in_the_runs_strategy(dsn):
    runs = seed_traces(dsn, TRACES)
    before = raw_rows(dsn)
    with serve(runs) as fake:
        fake.empty_all = True  # another workspace: [] for every request, listings included
        with pytest.raises(WrongWorkspace):
            go(dsn, fake, strategy="project")
    assert raw_rows(dsn) == before and status(dsn) == {}  # nobody written off


def test_a_server_ignoring_offset_makes_the_listing_halve_its_slices_and_the_result_stays_exact(dsn):
    runs = seed_traces(dsn, TRACES)
    with serve(runs) as fake:
        want = expected(fake, runs)
        fake.ignore_offset()  # every page is the first: a full page brings nothing new
        summary = go(dsn, fake, strategy="project")
    assert summary.exit_code == 0 and summary.strategy == "project" and not summary.fallbacks
    assert {k: v for k, v in stored(dsn).items() if v is not None} == want


def test_follow_with_the_project_strategy_lists_each_pass_only_what_was_created_since(dsn):
    everything = list(trace_archive(TRACES + 50))
    first, later = everything[:-500], everything[-500:]
    with psycopg.connect(dsn) as conn:
        copy_archive(conn, first)

    def finished() -> list[dict[str, Any]]:
        return [i for i in invocations(dsn) if i["finished_at"] is not None]

    with serve(everything) as fake:
        want = expected(fake, everything)
        stop = threading.Event()
        options = RunOptions(window=Window.parse("14d"), delay_ms=0, strategy="project")
        lang = LangSmith(api_key=KEY, endpoint=fake.url, timeout_s=5.0)
        args = (Database(dsn), lang, options, "14d", None, 0.2)
        loop = threading.Thread(target=follow, args=args, kwargs={"stop": stop})
        loop.start()
        try:
            wait_for(finished, 60, "the first pass")
            n = len(fake.feedback_requests())
            with psycopg.connect(dsn) as conn:
                copy_archive(conn, later)
            wait_for(lambda: any(i["rows_examined"] == 500 for i in finished()), 60, "a pass over the 500 new rows")
        finally:
            stop.set()
            loop.join(30)
        (done, *_) = [r for r in listings(dsn) if r["project"] == "proj-a"]
        since = [r for r in fake.feedback_requests()[n:] if r.query.get("session") == [done["session_id"]]]
    assert since and all(
        dt.datetime.fromisoformat(r.query["min_created_at"][0]) >= done["listed_to"] - listing.OVERLAP for r in since
    )
    assert {k: v for k, v in stored(dsn).items() if v is not None} == want


def marks(dsn: str) -> dict[dt.date, int]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT run_date, id_bound FROM feedback_backfill_settled").fetchall())


def test_a_run_that_lists_its_projects_marks_the_days_as_the_runs_strategy_does(dsn):
    runs = seed_traces(dsn, TRACES)
    window = Window.parse("14d")
    with serve(runs) as fake:
        first = go(dsn, fake, strategy="project")
        assert first.exit_code == 0 and first.strategy == "project"
        listed = marks(dsn)
        n = len(fake.feedback_requests())
        again = go(dsn, fake, strategy="project")  # its project walks read below the marks only
        assert again.examined == 0 and again.exit_code == 0 and marks(dsn) == listed
        assert len(fake.feedback_requests()) - n <= 4  # the listings of what was created since, and their checks
        forget(dsn)
        assert go(dsn, fake, strategy="runs").exit_code == 0
    assert listed == marks(dsn) and len(listed) == window.days


def test_a_project_the_walks_do_not_cover_leaves_every_day_unmarked(dsn):
    """Once the horizon closes, the window's projects are read again: one that no walk of the
    run covers (archived by a transaction still running when the run started) unmarks it."""
    from backfill.archive import gateway as db
    from backfill.archive.settled import closed
    from backfill.domain.settling import Settling

    seed_traces(dsn, 20)  # proj-a and proj-b
    gw = db.connect(Database(dsn))
    try:
        both, one = Settling(10**6, []), Settling(10**6, [])
        both.cover(2, Window.parse("14d"), ("proj-a", "proj-b"))
        one.cover(1, Window.parse("14d"), ("proj-a",))
        assert closed(gw, both) and both.marking
        assert not closed(gw, one) and not one.marking
    finally:
        gw.close()


class StopAtListing(FakeLangSmith):
    """Sets ``stop`` (the run's, ``stop_run``) when the listing of ``session`` is first asked for."""

    def __init__(self, *args: Any, session: str, stop: threading.Event, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session, self.stop_run = session, stop

    def _matching(self, filters: Filters) -> list[dict[str, Any]]:
        if filters.listing and self.session in filters.sessions:
            self.stop_run.set()
        return super()._matching(filters)


def test_a_stop_while_one_project_is_applied_and_the_next_listed_ends_both_and_the_next_run_is_exact(dsn):
    """The stop ends proj-a's apply after its batch and proj-b's listing before its next
    request; the next run resumes both, and the table is exact."""
    runs = seed_traces(dsn, 1000, runs_per_trace=1, reviewed=1.0)
    stop = threading.Event()
    session_b = next(r.info.session_id for r in runs if r.project == "proj-b")
    fake = StopAtListing(api_key=KEY, feedback=trace_feedback(reviewed=1.0), session=session_b, stop=stop)
    fake.add_runs(r.info for r in runs)
    with fake:
        want = expected(fake, runs)
        opts = {"delay_ms": 0, "backoff_s": 0.001, "strategy": "project", "batch_size": 5}
        stopped = backfill.run(
            Database(dsn),
            LangSmith(api_key=KEY, endpoint=fake.url, timeout_s=5.0),
            RunOptions(window=Window.parse("14d"), **opts),
            stop=stop,
        )
        a, b = listings(dsn)
        written = len(status(dsn))
        assert stopped.stopped and stopped.exit_code != 0, stopped.lines()
        assert a["completed_at"] is not None and a["applied_at"] is None and b["completed_at"] is None
        assert 0 < written < len([r for r in runs if r.project == "proj-a"])
        assert invocations(dsn)[-1]["api_requests"] == stopped.api_requests == len(fake.feedback_requests())
        second = go(dsn, fake, strategy="project")
    assert second.exit_code == 0 and second.examined == len(runs) - written, second.lines()
    assert [x["applied_at"] is not None for x in listings(dsn)] == [True, True]
    assert {k: v for k, v in stored(dsn).items() if v is not None} == want
    assert all(s["attempts"] == 1 for s in status(dsn).values())


def test_without_a_second_connection_each_project_is_listed_after_the_one_before_is_applied(dsn, caplog):
    """A role allowed two connections (the work's and the lease's): the next project cannot be
    listed beside the apply; it is listed after it, on the one connection, saying so; exact."""
    runs = seed_traces(dsn, TRACES)
    dbname = dsn.rsplit("/", 1)[1]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS backfill_two")
        conn.execute("CREATE ROLE backfill_two LOGIN CONNECTION LIMIT 2")
        conn.execute(f"GRANT CONNECT ON DATABASE {dbname} TO backfill_two")
    apply_grants(dsn, "backfill_two")
    two = dsn.replace("postgresql://postgres@", "postgresql://backfill_two@")
    ours = logging.getLogger(logs.LOGGER)  # it does not propagate once a CLI test has configured it
    ours.addHandler(caplog.handler)
    try:
        with serve(runs) as fake:
            want = expected(fake, runs)
            got = go(two, fake, strategy="project")
        assert got.exit_code == 0 and got.strategy == "project" and not got.fallbacks, got.lines()
        assert {k: v for k, v in stored(dsn).items() if v is not None} == want
        assert [x["applied_at"] is not None for x in listings(dsn)] == [True, True]
        said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert any(
            m.startswith("each project is listed after the one before is applied: a second connection failed")
            and "too many connections for role" in m
            for m in said
        ), said
    finally:
        ours.removeHandler(caplog.handler)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP OWNED BY backfill_two")
            conn.execute("DROP ROLE backfill_two")
