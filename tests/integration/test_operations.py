"""After the first run: refetch, verify, retry, reset, revert, follow, the analyst view."""

from __future__ import annotations

import signal
import threading

import psycopg
import pytest
from psycopg.types.json import Jsonb
from typer.testing import CliRunner

import backfill
from backfill.cli import app
from backfill.config import ALL_TIME, Database, LangSmith, Window
from backfill.domain.options import RunOptions
from backfill.operations import repair as operations
from backfill.operations.verify import verify as verify_
from backfill.runner.follow import follow
from backfill.sandbox import synthetic
from backfill.sandbox.fake_langsmith import FakeLangSmith

from ..helpers import TODAY, expected_records, insert, raw_rows, rows, seed, status, wait_for

KEY = "lsv2_ops_key"


@pytest.fixture
def fake():
    with FakeLangSmith(api_key=KEY) as server:
        yield server


def ls(fake):
    return LangSmith(api_key=KEY, endpoint=fake.url)


def go(dsn, fake, **opts):
    return backfill.run(Database(dsn), ls(fake), RunOptions(delay_ms=0, backoff_s=0.001, **opts))


def with_feedback(ids):
    return [r for r in ids if synthetic.feedback_for_run(r)]


def test_revert_restores_every_row_byte_for_byte(dsn, fake):
    ids = seed(dsn, 40)
    with psycopg.connect(dsn) as conn:  # an older extractor's explicit null
        rid = synthetic.run_id_for(999, "t")
        doc = synthetic.run_document(rid, rid, "proj-a", TODAY)
        insert(conn, {**doc, "feedback_stats": {}, "feedback_records": None})
    fake.set_feedback(rid, [{"id": "n1", "run_id": rid, "key": "k", "created_at": None}])
    before = raw_rows(dsn)
    go(dsn, fake)
    assert raw_rows(dsn) != before
    assert operations.revert(Database(dsn), ALL_TIME, dry_run=True).rows == len(with_feedback(ids)) + 1
    assert raw_rows(dsn) != before  # a dry run changes nothing
    change = operations.revert(Database(dsn), ALL_TIME)
    assert change.rows == len(with_feedback(ids)) + 1
    assert raw_rows(dsn) == before
    assert rows(dsn)[rid]["feedback_records"] is None  # null restored as null, not removed
    assert status(dsn) == {}


def test_revert_never_removes_records_someone_else_wrote(dsn, fake):
    ids = seed(dsn, 40)
    go(dsn, fake)
    theirs = with_feedback(ids)[0]
    with psycopg.connect(dsn) as conn:  # the extractor re-archives with records of its own
        conn.execute(
            "UPDATE runs SET data = data || %s WHERE run_id = %s",
            (Jsonb({"feedback_records": [{"id": "extractor-own"}]}), theirs),
        )
    operations.revert(Database(dsn), ALL_TIME)
    after = rows(dsn)
    assert after[theirs]["feedback_records"] == [{"id": "extractor-own"}]
    assert all("feedback_records" not in after[r] for r in ids if r != theirs)


def test_refetch_replaces_our_records_and_resumes(dsn, fake):
    ids = seed(dsn, 30)
    go(dsn, fake)
    target = with_feedback(ids)[0]
    newer = [{**r, "modified_at": "2026-11-28T00:00:00Z", "comment": "revised"} for r in expected_records(target)]
    fake.set_feedback(target, newer)
    n = len(fake.feedback_requests())
    summary = go(dsn, fake, refetch=True, batch_size=10)
    assert summary.examined == 30 and len(fake.feedback_requests()) == n + 1 + 3  # the pre-flight probe, 3 batches
    assert rows(dsn)[target]["feedback_records"] == newer
    # the pass is complete: a second --refetch starts a new pass, an interrupted one resumes
    again = go(dsn, fake, refetch=True, limit=10, batch_size=10)
    assert again.examined == 10
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "UPDATE feedback_backfill_invocations SET outcome = 'interrupted'"
            " WHERE id = (SELECT max(id) FROM feedback_backfill_invocations)"
        )
    resumed = go(dsn, fake, refetch=True, batch_size=10)
    assert resumed.examined == 20  # only what the interrupted pass had not done
    # and revert still knows the refetched records are ours
    operations.revert(Database(dsn), ALL_TIME)
    assert all("feedback_records" not in d for d in rows(dsn).values())


def test_verify_reports_drift_and_fix_repatches(dsn, fake):
    ids = seed(dsn, 60)
    go(dsn, fake)
    enriched = with_feedback(ids)
    a, b = enriched[0], enriched[1]
    recs_a = expected_records(a)
    fake.set_feedback(a, [*recs_a, {"id": "new-one", "run_id": a, "key": "late", "created_at": "2027-01-01T00:00:00Z"}])
    fake.set_feedback(b, [{**expected_records(b)[0], "comment": "edited"}, *expected_records(b)[1:]])
    report = verify_(Database(dsn), ls(fake), Window.parse("14d"), sample=None, delay_ms=0)
    assert report.checked == len(enriched)
    assert {d.run_id: (d.added, len(d.changed), d.deleted) for d in report.drifts} == {
        a: (["new-one"], 0, []),
        b: ([], 1, []),
    }
    assert report.exit_code == 3
    fixed = verify_(Database(dsn), ls(fake), Window.parse("14d"), sample=None, fix=True, delay_ms=0)
    assert fixed.fixed == 2 and fixed.exit_code == 0
    assert [r["id"] for r in rows(dsn)[a]["feedback_records"]][-1] == "new-one"
    clean = verify_(Database(dsn), ls(fake), Window.parse("14d"), sample=5, delay_ms=0)
    assert clean.checked == 5 and clean.drifts == [] and clean.exit_code == 0


def test_retry_gives_attempts_back(dsn, fake):
    ids = seed(dsn, 10, days=1)
    fake.poison(ids[3])
    go(dsn, fake, max_attempts=1)
    assert status(dsn)[ids[3]]["attempts"] == 1
    assert go(dsn, fake, max_attempts=1).examined == 0  # exhausted
    assert operations.retry(Database(dsn), Window.parse("14d"), "mismatch").rows == 0
    assert operations.retry(Database(dsn), Window.parse("14d"), "api_error").rows == 1
    assert go(dsn, fake, max_attempts=1).examined == 1


def test_reset_forgets_all_but_the_ledger(dsn, fake):
    ids = seed(dsn, 30)
    go(dsn, fake)
    change = operations.reset(Database(dsn), Window.parse("14d"))
    assert change.rows == 30 - len(with_feedback(ids))
    assert set(status(dsn)) == set(with_feedback(ids))
    assert go(dsn, fake).examined == 30 - len(with_feedback(ids))


def test_revert_and_reset_cli_ask_for_confirmation(dsn, fake):
    seed(dsn, 10)
    go(dsn, fake)
    cli = CliRunner()
    refused = cli.invoke(app, ["revert", "--all", "--database-url", dsn])
    assert refused.exit_code == 2
    assert refused.stderr.strip() == "backfill: error: refusing to change the database without confirmation: add --yes"
    dry = cli.invoke(app, ["revert", "--all", "--dry-run", "--database-url", dsn])
    assert dry.exit_code == 0 and "would restore" in dry.stderr
    done = cli.invoke(app, ["revert", "--all", "--yes", "--database-url", dsn])
    assert done.exit_code == 0 and done.stderr.startswith("restored ")
    assert cli.invoke(app, ["reset", "--database-url", dsn, "--yes"]).exit_code == 2  # no window said


def test_follow_enriches_new_rows_until_sigterm(dsn, fake):
    seed(dsn, 10)
    stop = threading.Event()
    t = threading.Thread(
        target=follow,
        args=(Database(dsn), ls(fake), RunOptions(delay_ms=0), "14d", None, 0.2),
        kwargs={"stop": stop},
    )
    t.start()
    try:
        wait_for(lambda: len(status(dsn)) == 10, 20, "the first pass to examine the 10 rows")
        seed(dsn, 5, start=100)  # the extractor archives more
        wait_for(lambda: len(status(dsn)) == 15, 20, "a later pass to examine the 5 new rows")
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive() and len(status(dsn)) == 15


def test_follow_process_stops_cleanly_on_sigterm(dsn, fake):
    import os
    import subprocess
    import sys

    seed(dsn, 5)
    proc = subprocess.Popen(
        [sys.executable, "-m", "backfill", "run", "--follow", "--interval", "1s", "--delay-ms", "0"],
        env={**os.environ, "DATABASE_URL": dsn, "LANGSMITH_API_KEY": KEY, "LANGSMITH_ENDPOINT": fake.url},
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: len(status(dsn)) == 5, 20, "the first pass to examine the 5 rows")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "pass: examined 5 row(s)" in err and err.rstrip().endswith("follow: stopped cleanly")


def test_analyst_view_one_row_per_record(dsn, fake):
    ids = seed(dsn, 40)
    go(dsn, fake)
    with psycopg.connect(dsn) as conn:
        got = conn.execute(
            "SELECT run_id, key, score, verdict, created_at IS NOT NULL FROM feedback_records_v"
            " ORDER BY run_id, position"
        ).fetchall()
    want = sorted(
        (r, rec["key"], rec["score"], rec["value"]["verdict"], True) for r in ids for rec in expected_records(r)
    )
    assert sorted((a, b, float(c), d, e) for a, b, c, d, e in got) == want


def test_no_feedback_is_examined_again_when_feedback_stats_later_promise_some(dsn, fake):
    """--follow examines a run before its verdict exists; the extractor's next upsert
    brings feedback_stats with n=1, and the next run fetches the new record."""
    (rid,) = [r for r in seed(dsn, 30) if synthetic.feedback_for_run(r)][:1]
    fake.set_feedback(rid, [])
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE runs SET data = jsonb_set(data, '{feedback_stats}', '{}') WHERE run_id = %s", (rid,))
    go(dsn, fake)
    assert status(dsn)[rid]["state"] == "no_feedback"
    assert go(dsn, fake).examined == 0  # written off while feedback_stats promise nothing
    fake.set_feedback(rid, synthetic.feedback_for_run(rid))
    with psycopg.connect(dsn) as conn:  # the extractor re-archives with the new aggregate
        stats = Jsonb(synthetic.feedback_stats_for(synthetic.feedback_for_run(rid)))
        conn.execute("UPDATE runs SET data = jsonb_set(data, '{feedback_stats}', %s) WHERE run_id = %s", (stats, rid))
    again = go(dsn, fake)
    assert again.examined == 1 and status(dsn)[rid]["state"] == "done"
    assert rows(dsn)[rid]["feedback_records"] == expected_records(rid)


def test_refetch_that_fails_keeps_the_row_done_with_its_records(dsn, fake):
    ids = seed(dsn, 30)
    go(dsn, fake)
    rid = with_feedback(ids)[0]
    stored = rows(dsn)[rid]["feedback_records"]
    fake.set_feedback(rid, [])  # deleted in LangSmith: fewer than feedback_stats count
    go(dsn, fake, refetch=True)
    st = status(dsn)[rid]
    assert (st["state"], st["records"]) == ("done", len(stored))
    assert "API returned 0 record(s)" in st["error"]
    assert rows(dsn)[rid]["feedback_records"] == stored


def test_refetch_dry_run_counts_and_unchanged_rows_are_not_rewritten(dsn, fake):
    ids = seed(dsn, 20)
    go(dsn, fake)
    dry = backfill.run(Database(dsn), None, RunOptions(dry_run=True, refetch=True))
    assert dry.pending_at_start == dry.examined == 20
    with psycopg.connect(dsn) as conn:
        xmin = dict(conn.execute("SELECT run_id, xmin::text FROM runs").fetchall())
    changed = with_feedback(ids)[0]
    fake.set_feedback(changed, [{**r, "comment": "edited"} for r in expected_records(changed)])
    assert go(dsn, fake, refetch=True).examined == 20
    with psycopg.connect(dsn) as conn:
        after = dict(conn.execute("SELECT run_id, xmin::text FROM runs").fetchall())
    assert [r for r in ids if after[r] != xmin[r]] == [changed]


def test_verify_reports_runs_it_could_not_fetch_apart_from_drift(dsn, fake):
    ids = seed(dsn, 30)
    go(dsn, fake)
    fake.poison(with_feedback(ids)[0])
    report = verify_(Database(dsn), ls(fake), Window.parse("14d"), sample=None, delay_ms=0)
    assert report.drifts == [] and len(report.unverified) == 1 and report.exit_code == 1


def test_verify_reports_local_changes_apart_from_drift_and_fix_reenriches_them(dsn, fake):
    ids = seed(dsn, 60)
    go(dsn, fake)
    enriched = with_feedback(ids)
    gone, edited, theirs = enriched[:3]
    hand_edit = [{**expected_records(edited)[0], "comment": "edited by hand"}, *expected_records(edited)[1:]]
    reduced = [{"id": "x1", "run_id": theirs, "key": "final_verdict", "feedback_source_type": "api"}]
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE runs SET data = data || '{\"feedback_records\": null}' WHERE run_id = %s", (gone,))
        for rid, recs in ((edited, hand_edit), (theirs, reduced)):
            conn.execute(
                "UPDATE runs SET data = data || jsonb_build_object('feedback_records', %s::jsonb) WHERE run_id = %s",
                (Jsonb(recs), rid),
            )
    before_fix = raw_rows(dsn)
    report = verify_(Database(dsn), ls(fake), Window.parse("14d"), sample=None, delay_ms=0)
    assert report.checked == len(enriched)  # none silently skipped
    assert report.drifts == [] and report.unverified == []
    assert {c.run_id: c.kind for c in report.local} == {gone: "vanished", edited: "changed", theirs: "extractor"}
    assert report.exit_code == 3
    assert report.lines()[-1] == (
        "local changes: 3 run(s) no longer hold the records we wrote (1 vanished, 1 changed, 1 the extractor's);"
        " 0 re-enriched"
    )
    assert f"{gone}  local change: records vanished since we wrote them (re-archived?)" in report.lines()
    fixed = verify_(Database(dsn), ls(fake), Window.parse("14d"), sample=None, fix=True, delay_ms=0)
    assert fixed.local_fixed == 2 and fixed.exit_code == 3  # the extractor's records are left
    after = rows(dsn)
    assert after[gone]["feedback_records"] == expected_records(gone)
    assert after[edited]["feedback_records"] == expected_records(edited)
    assert after[theirs]["feedback_records"] == reduced
    # revert gives each row what it held just before our latest write: the null, the hand edit
    operations.revert(Database(dsn), ALL_TIME)
    restored = raw_rows(dsn)
    assert restored[gone] == before_fix[gone] and restored[edited] == before_fix[edited]
    assert rows(dsn)[gone]["feedback_records"] is None
    assert restored[theirs] == before_fix[theirs]


def test_refetch_progress_is_its_own_marker_not_updated_at(dsn, fake):
    seed(dsn, 30)
    go(dsn, fake)
    first = go(dsn, fake, refetch=True, limit=10, batch_size=10)
    assert first.examined == 10
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "UPDATE feedback_backfill_invocations SET outcome = 'interrupted'"
            " WHERE id = (SELECT max(id) FROM feedback_backfill_invocations)"
        )
        # what `backfill retry` and every checkpoint do: updated_at moves on every row
        conn.execute("UPDATE feedback_backfill_status SET updated_at = now() + interval '1 minute'")
    resumed = go(dsn, fake, refetch=True, batch_size=10)
    assert resumed.examined == 20  # the 20 rows the interrupted pass had not refetched, none skipped
