"""Rows proven empty are settled, not written (fb0008): a project's apply reads and checkpoints only the
rows its listing cannot answer for, and the day's mark counts the others.

Every figure is held against the runs strategy's on the same archive and history: the table
row for row (md5 over every row), and `backfill status` (text, JSON, OpenMetrics) count for
count; the checkpoint holds fewer rows, and exactly the settled ones fewer. Then what a settled
row meets afterwards: a kill -9 in the apply, a late record, feedback_stats that promise
records after all, the extractor's records, --refetch, reset, revert.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

import backfill
from backfill.config import Database, Window
from backfill.domain.records import promised
from backfill.domain.status import StatusReport, Throughput
from backfill.operations import repair
from backfill.report import openmetrics, status_json, text
from backfill.sandbox.traces import TraceRun, copy_archive, trace_archive, trace_feedback

from ..helpers import TODAY, insert, invocations, raw_rows, seed_traces, status, wait_for
from ..system.test_project_crash import kill, start
from .test_project_strategy import expected, forget, go, serve, stored

TRACES = 200  # 2,000 runs over 14 days, two projects, feedback on half the roots
WINDOW = Window.parse("14d")

#: The extractor's upsert (tests/test_extractor.py): the whole document is replaced.
UPSERT = """
    INSERT INTO runs (run_id, trace_id, project, run_date, data)
    VALUES (%(run_id)s, %(trace_id)s, %(project)s, %(run_date)s, %(data)s)
    ON CONFLICT (run_id) DO UPDATE SET run_date = EXCLUDED.run_date, data = EXCLUDED.data
"""


def table_md5(dsn: str) -> str:
    """md5 over every row of runs, in id order: the table as stored."""
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT md5(string_agg(id || ':' || data::text, ',' ORDER BY id)) FROM runs").fetchone()[0]


def checkpoint_rows(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM feedback_backfill_status").fetchone()[0]


def settled_empty(dsn: str) -> dict[str, int]:
    """project -> rows settled without a checkpoint row, over the marks of the window."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT e.key, sum(e.value::bigint) FROM feedback_backfill_settled AS m,"
            " jsonb_each_text(m.empty) AS e GROUP BY e.key"
        ).fetchall()
    return {k: int(v) for k, v in rows if v}


def seed_odd(dsn: str) -> list[str]:
    """Rows no listing can prove empty, in proj-a: data not an object, a run_id that is no UUID,
    and one that is a UUID spelled in capitals (valid; asked as any run)."""
    odd = [str(uuid.uuid4()), "not-a-uuid", str(uuid.uuid4()).upper()]
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO runs (run_id, trace_id, project, run_date, data) VALUES (%s, 't', 'proj-a', %s, %s)",
            (odd[0], TODAY, Jsonb([1, 2])),
        )
        for rid in odd[1:]:
            insert(conn, {"run_id": rid, "trace_id": rid, "project": "proj-a", "run_date": str(TODAY)})
    return odd


def report(dsn: str) -> StatusReport:
    """`backfill status` of the window, without what differs between two invocations by design
    (their timings, the lease, the strategy): the figures of the rows, their days, their alerts."""
    got = backfill.status(Database(dsn), WINDOW)
    return dataclasses.replace(
        got,
        as_of=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
        runs_count=0,
        runner_pid=None,
        last_run=None,
        throughput=Throughput(),
        lease=None,
        eta=dataclasses.replace(got.eta, rows_per_s=None),
        alerts=[a for a in got.alerts if a.name != "throughput"],
    )


def assert_same_status(got: StatusReport, want: StatusReport) -> None:
    assert got.totals == want.totals and got.days == want.days and got.failures == want.failures
    assert text.lines(got) == text.lines(want)
    assert status_json.to_json(got) == status_json.to_json(want)
    assert openmetrics.render(got) == openmetrics.render(want)


def root_without_feedback(runs: list[TraceRun], fake: Any, dsn: str) -> TraceRun:
    """A root run (it can get a review) that has none, settled without a checkpoint row."""
    held = status(dsn)
    return next(r for r in runs if r.run_id == r.trace_id and not fake.records_of(r.run_id) and r.run_id not in held)


def late_record(runs: list[TraceRun], run: TraceRun, created: dt.datetime | None = None) -> dict[str, Any]:
    """A review of ``run`` created at ``created`` (default: now, after the first listing ended),
    in the API's shape; its id is drawn from the run's, so that two histories write the same."""
    feedback = trace_feedback()
    model = next(x for r in runs for x in feedback(r.run_id))
    at = (created or dt.datetime.now(dt.UTC)).isoformat()
    rec = {**model, "id": str(uuid.uuid5(uuid.NAMESPACE_URL, run.run_id)), "run_id": run.run_id}
    return {**rec, "trace_id": run.run_id, "session_id": run.info.session_id, "created_at": at, "modified_at": at}


def test_rows_proven_empty_are_settled_not_written_and_everything_counts_as_the_runs_strategy(dsn):
    runs = seed_traces(dsn, TRACES)
    odd = seed_odd(dsn)
    before = table_md5(dsn)
    with serve(runs) as fake:
        want = expected(fake, runs)
        by_runs = go(dsn, fake, strategy="runs")
        after_runs, runs_report, runs_rows = table_md5(dsn), report(dsn), checkpoint_rows(dsn)
        runs_invocation = invocations(dsn)[-1]
        forget(dsn)
        assert table_md5(dsn) == before
        listed = go(dsn, fake, strategy="project")
        assert listed.strategy == "project" and not listed.fallbacks
        again = go(dsn, fake, strategy="project")
    assert table_md5(dsn) == after_runs  # row for row the runs strategy's table
    assert {k: v for k, v in stored(dsn).items() if v is not None} == want
    # only the rows with feedback and those no listing can prove empty hold a checkpoint row
    assert runs_rows == len(runs) + len(odd)
    assert checkpoint_rows(dsn) == len(want) + len(odd)
    assert sum(settled_empty(dsn).values()) == listed.settled == runs_rows - len(want) - len(odd)
    assert {s["reason"] for rid, s in status(dsn).items() if rid in odd[:2]} == {"not_an_object", "invalid_run_id"}
    assert status(dsn)[odd[2]]["state"] == "no_feedback"
    assert_same_status(report(dsn), runs_report)
    # the invocation counted them examined without feedback, as the runs strategy's did
    assert listed.examined == by_runs.examined and listed.no_feedback == by_runs.no_feedback
    inv = invocations(dsn)[-2]
    for figure in ("rows_examined", "rows_no_feedback", "rows_enriched", "records_stored", "rows_failed"):
        assert inv[figure] == runs_invocation[figure], figure
    # the next pass finds nothing to do: settled rows are neither pending nor visited
    assert again.pending_at_start == again.examined == again.settled == 0
    assert backfill.run(Database(dsn), None, backfill.RunOptions(window=WINDOW, dry_run=True)).examined == 0
    # revert: the table as before the first run, every mark and its count gone
    assert repair.revert(Database(dsn), WINDOW).rows == len(want)
    assert table_md5(dsn) == before and settled_empty(dsn) == {} and checkpoint_rows(dsn) == 0


def test_a_kill_9_during_the_apply_then_a_second_pass_is_exact(dsn):
    runs = seed_traces(dsn, 1000)  # 10,000 runs, ~500 reviewed roots
    before = table_md5(dsn)
    with serve(runs) as fake:
        want = expected(fake, runs)
        assert go(dsn, fake, strategy="runs").exit_code == 0
        after_runs, runs_report = table_md5(dsn), report(dsn)
        forget(dsn)
        assert table_md5(dsn) == before
        proc = start(dsn, fake, "--delay-ms", "0", "--batch-size", "2")
        wait_for(lambda: checkpoint_rows(dsn) >= 20, 60, "the apply phase to have written some batches")
        kill(proc)
        assert checkpoint_rows(dsn) < len(want), "the kill was meant to land inside the apply"
        resumed = start(dsn, fake, "--delay-ms", "0")
        out, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err
    assert table_md5(dsn) == after_runs
    assert checkpoint_rows(dsn) == len(want)
    assert all(s["attempts"] == 1 for s in status(dsn).values())  # no row examined twice
    assert sum(settled_empty(dsn).values()) == len(runs) - len(want)
    assert_same_status(report(dsn), runs_report)


def test_a_late_record_of_a_settled_row_is_found_by_the_next_pass_and_revert_is_exact(dsn):
    runs = seed_traces(dsn, TRACES)
    pristine = raw_rows(dsn)
    with serve(runs) as fake:
        go(dsn, fake, strategy="project")
        late = root_without_feedback(runs, fake, dsn)
        empty = sum(settled_empty(dsn).values())
        created = None  # now: after the first listing ended
        fake.set_feedback(late.run_id, [late_record(runs, late, created)])  # feedback_stats promise nothing yet
        # the extractor archives on: the next pass has rows pending, so it lists (a pass with
        # nothing pending lists nothing, as the runs strategy asks nothing)
        more = list(trace_archive(2, runs_per_trace=10, seed="more", reviewed=0.0))
        with psycopg.connect(dsn) as conn:
            copy_archive(conn, more)
        fake.add_runs(r.info for r in more)
        archived = {rid: v for rid, v in raw_rows(dsn).items() if rid not in pristine}
        want = expected(fake, runs + more)
        n = len(fake.feedback_requests())
        second = go(dsn, fake, strategy="project")
        asked = fake.feedback_requests()[n:]
    runs += more
    assert second.strategy == "project" and second.exit_code == 0, second.lines()
    assert second.enriched == 1 and second.settled == len(more) and second.examined == 1 + len(more)
    assert any(late.run_id in q.query.get("run", []) for q in asked)  # staged, then asked run by run
    assert {k: v for k, v in stored(dsn).items() if v is not None} == want
    assert status(dsn)[late.run_id]["state"] == "done"
    assert sum(settled_empty(dsn).values()) == empty - 1 + len(more)  # the late row counted once: its checkpoint row
    got = report(dsn)
    assert got.totals.done == len(want) and got.totals.no_feedback == len(runs) - len(want)
    assert got.totals.pending == 0
    change = repair.revert(Database(dsn), WINDOW)
    assert change.rows == len(want)
    assert raw_rows(dsn) == {**pristine, **archived}  # row for row as archived
    assert checkpoint_rows(dsn) == 0 and settled_empty(dsn) == {}
    assert report(dsn).totals.pending == len(runs)


def test_feedback_stats_that_promise_records_later_and_the_extractors_records_count_as_for_the_runs_strategy(dsn):
    """A settled row re-archived promising records is walked again (its checkpoint row takes it
    off the mark's count); one the extractor gives records to stays examined without feedback."""
    runs = seed_traces(dsn, TRACES)
    created = dt.datetime.now(dt.UTC)
    reports = []
    for strategy in ("runs", "project"):
        with serve(runs) as fake:
            assert go(dsn, fake, strategy=strategy).exit_code == 0
            held = status(dsn)
            quiet = [r for r in runs if r.run_id == r.trace_id and not fake.records_of(r.run_id)]
            if strategy == "project":
                assert not {r.run_id for r in quiet[:2]} & set(held)  # settled without a checkpoint row
            reviewed, extracted = quiet[0], quiet[1]
            rec = late_record(runs, reviewed, created)
            fake.set_feedback(reviewed.run_id, [rec])
            stats = {rec["key"]: {"n": 1, "avg": 1.0, "values": {}, "comments": [], "sources": []}}
            assert promised(stats) == 1
            mine = {**extracted.document, "feedback_records": [{**rec, "id": "x", "feedback_source_type": "api"}]}
            with psycopg.connect(dsn) as conn:
                for run, doc in ((reviewed, {**reviewed.document, "feedback_stats": stats}), (extracted, mine)):
                    conn.execute(UPSERT, {**run._asdict(), "data": Jsonb(doc)})
            second = go(dsn, fake, strategy=strategy)
            assert second.examined == 1 and second.enriched == 1, second.lines()
            assert stored(dsn)[reviewed.run_id] == [rec]
            reports.append((report(dsn), raw_rows(dsn)))
        forget(dsn)
        with psycopg.connect(dsn) as conn:
            for run in (reviewed, extracted):
                conn.execute(UPSERT, {**run._asdict(), "data": Jsonb(run.document)})
    (by_runs, runs_rows), (listed, listed_rows) = reports
    assert listed_rows == runs_rows
    assert_same_status(listed, by_runs)


@pytest.mark.parametrize("then", ["refetch", "reset"])
def test_refetch_and_reset_treat_settled_rows_as_rows_examined_without_feedback(dsn, then):
    """--refetch asks them again (a review created since is found); reset makes them pending."""
    runs = seed_traces(dsn, TRACES)
    late = next(r for r in runs if r.run_id == r.trace_id and not trace_feedback()(r.run_id))
    created = dt.datetime.now(dt.UTC)
    reports = []
    for strategy in ("runs", "project"):
        with serve(runs) as fake:
            assert go(dsn, fake, strategy=strategy).exit_code == 0
            assert (late.run_id in status(dsn)) == (strategy == "runs")  # settled without a checkpoint row
            if then == "refetch":
                fake.set_feedback(late.run_id, [late_record(runs, late, created)])
                again = go(dsn, fake, strategy="runs", refetch=True)
                assert again.exit_code == 0 and stored(dsn)[late.run_id] == fake.records_of(late.run_id)
                fake.set_feedback(late.run_id, [])
            else:
                repair.reset(Database(dsn), WINDOW)
            reports.append((report(dsn), raw_rows(dsn)))
            if strategy == "project":
                assert settled_empty(dsn) == {}  # refetched: each has its checkpoint row; reset: forgotten
        forget(dsn)
        with psycopg.connect(dsn) as conn:
            conn.execute(UPSERT, {**late._asdict(), "data": Jsonb(late.document)})
    (by_runs, runs_rows), (listed, listed_rows) = reports
    assert listed_rows == runs_rows
    assert_same_status(listed, by_runs)
