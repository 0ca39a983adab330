"""`backfill run` against a real PostgreSQL and the fake LangSmith over HTTP."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import psycopg
import pytest
from psycopg.types.json import Jsonb

import backfill
from backfill.archive.lease import Lease
from backfill.config import Database, LangSmith, Window
from backfill.domain.options import RunOptions
from backfill.errors import AlreadyRunning, ApiAuthError, ApiUnavailable, NotMigrated, WrongWorkspace
from backfill.sandbox import synthetic
from backfill.sandbox.fake_langsmith import FakeLangSmith

from ..helpers import TODAY, expected_records, insert, invocations, raw_rows, rows, seed, status

KEY = "lsv2_test_key_0123456789"


@pytest.fixture
def fake():
    with FakeLangSmith(api_key=KEY) as server:
        yield server


def go(dsn, fake, **opts):
    opts.setdefault("delay_ms", 0)
    opts.setdefault("backoff_s", 0.001)
    window = opts.pop("window", None) or Window.parse("14d")
    return backfill.run(
        Database(dsn),
        LangSmith(api_key=KEY, endpoint=fake.url, timeout_s=opts.pop("timeout_s", 5.0)),
        RunOptions(window=window, **opts),
    )


def test_enriches_rows_in_place_and_checkpoints(dsn, fake):
    ids = seed(dsn, 60, days=5)
    before = rows(dsn)
    summary = go(dsn, fake, batch_size=25)
    after = rows(dsn)
    st = status(dsn)
    with_feedback = [r for r in ids if synthetic.feedback_for_run(r)]
    assert 10 < len(with_feedback) < 40
    for run_id in ids:
        expected = expected_records(run_id)
        if expected:
            # only feedback_records was added; every other key is exactly as before
            assert after[run_id] == {**before[run_id], "feedback_records": expected}
            assert st[run_id] == {
                "state": "done",
                "reason": None,
                "attempts": 1,
                "records": len(expected),
                "error": None,
            }
        else:
            assert after[run_id] == before[run_id]
            assert st[run_id]["state"] == "no_feedback"
    assert summary.exit_code == 0
    assert summary.examined == 60
    assert summary.enriched == len(with_feedback)
    assert summary.records == sum(len(expected_records(r)) for r in ids)
    # the pre-flight probe, then one request per batch of 25 run ids (each answer is a short page)
    assert summary.api_requests == 1 + 3 == len(fake.feedback_requests())
    inv = invocations(dsn)
    assert [(i["outcome"], i["rows_examined"], i["rows_enriched"], i["api_requests"]) for i in inv] == [
        ("completed", 60, len(with_feedback), 1 + 3)
    ]


def compression(dsn: str) -> dict[str, str | None]:
    """run_id -> how its document is stored: 'pglz', 'lz4', or None (not compressed)."""
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT run_id, pg_column_compression(data) FROM runs").fetchall())


def test_documents_we_rewrite_are_compressed_with_lz4_and_read_back_exactly(dsn, fake):
    ids = seed(dsn, 30, size_bytes=20_000)
    before = rows(dsn)
    assert set(compression(dsn).values()) == {"pglz"}  # the server's default, as the extractor wrote them
    summary = go(dsn, fake)
    after, stored = rows(dsn), compression(dsn)
    enriched = [r for r in ids if expected_records(r)]
    assert summary.enriched == len(enriched) > 0
    for run_id in ids:
        if run_id in enriched:
            assert stored[run_id] == "lz4"
            assert after[run_id] == {**before[run_id], "feedback_records": expected_records(run_id)}
        else:
            assert stored[run_id] == "pglz" and after[run_id] == before[run_id]  # never rewritten


def test_a_compression_method_the_dba_chose_is_kept(dsn, fake):
    with psycopg.connect(dsn, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]
        conn.execute(f'ALTER DATABASE "{name}" SET default_toast_compression = pglz')
    try:
        ids = seed(dsn, 30, size_bytes=20_000)
        summary = go(dsn, fake)
        assert summary.enriched > 0
        assert {compression(dsn)[r] for r in ids} == {"pglz"}
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" RESET default_toast_compression')


def test_rows_without_feedback_are_not_rewritten(dsn, fake):
    ids = seed(dsn, 30)
    with psycopg.connect(dsn) as conn:
        xmin_before = dict(conn.execute("SELECT run_id, xmin::text FROM runs").fetchall())
    go(dsn, fake)
    with psycopg.connect(dsn) as conn:
        xmin_after = dict(conn.execute("SELECT run_id, xmin::text FROM runs").fetchall())
    for run_id in ids:
        rewritten = xmin_after[run_id] != xmin_before[run_id]
        assert rewritten == bool(synthetic.feedback_for_run(run_id))


def test_rerun_after_completion_makes_no_request(dsn, fake):
    seed(dsn, 40)
    go(dsn, fake)
    n = len(fake.feedback_requests())
    again = go(dsn, fake)
    assert len(fake.feedback_requests()) == n
    assert again.examined == 0 and again.exit_code == 0


def test_window_projects_and_null_records(dsn, fake):
    rid_null, rid_old, rid_other, rid_has = (synthetic.run_id_for(i, "w") for i in range(4))
    for rid in (rid_null, rid_old, rid_other, rid_has):
        fake.set_feedback(rid, [{"id": str(uuid.uuid4()), "run_id": rid, "key": "k", "created_at": None}])
    with psycopg.connect(dsn) as conn:
        insert(conn, {**synthetic.run_document(rid_null, rid_null, "proj-a", TODAY), "feedback_records": None})
        insert(conn, synthetic.run_document(rid_old, rid_old, "proj-a", TODAY - dt.timedelta(days=20)))
        insert(conn, synthetic.run_document(rid_other, rid_other, "proj-b", TODAY))
        insert(conn, {**synthetic.run_document(rid_has, rid_has, "proj-a", TODAY), "feedback_records": []})
    before = rows(dsn)
    go(dsn, fake, window=Window.parse("14d", projects=["proj-a"]))
    after = rows(dsn)
    assert after[rid_null]["feedback_records"][0]["run_id"] == rid_null  # null is "lacking"
    assert after[rid_old] == before[rid_old]  # outside the window
    assert after[rid_other] == before[rid_other]  # other project
    assert after[rid_has] == before[rid_has]  # already has feedback_records
    probe, *batches = (q.query["run"] for q in fake.feedback_requests())
    assert batches == [[rid_null]]
    assert not set(probe) & {rid_old, rid_other}  # the pre-flight probe keeps to the window too


def test_records_are_stored_exactly_as_the_api_returned_them(dsn, fake):
    (rid,) = seed(dsn, 1)
    odd = [
        {
            "id": "b",
            "run_id": rid,
            "key": "final_verdict",
            "created_at": "2026-01-02T00:00:00Z",
            "value": {"verdict": "FAIL", "rationale": {"criteria_a": True}},
            "brand_new_field": {"x": [1, 2.5, None]},
        },
        {"id": "a", "run_id": rid, "key": "note", "created_at": None, "modified_at": None, "score": 0.1},
        {
            "id": "c",
            "run_id": rid,
            "key": "emoji",
            "created_at": "2026-01-01T00:00:00+00:00",
            "comment": "\U0001f600 ok",
        },
    ]
    fake.set_feedback(rid, odd)
    go(dsn, fake)
    stored = rows(dsn)[rid]["feedback_records"]
    # null created_at first, then by created_at; every field kept, unknown ones included
    assert stored == [odd[1], odd[2], odd[0]]


def test_poisoned_run_is_isolated_and_retried_until_max_attempts(dsn, fake):
    ids = seed(dsn, 16, days=1)
    culprit = ids[5]
    fake.poison(culprit)
    summary = go(dsn, fake, batch_size=16, max_attempts=2)
    st = status(dsn)
    assert st[culprit]["state"] == "failed" and st[culprit]["reason"] == "api_error"
    assert st[culprit]["error"] == "API error: HTTP 500" and st[culprit]["attempts"] == 1
    assert all(st[r]["state"] in ("done", "no_feedback") for r in ids if r != culprit)
    assert summary.exit_code == 3 and summary.failed == {"api_error": 1}
    after = rows(dsn)
    assert all(after[r].get("feedback_records") == (expected_records(r) or None) for r in ids if r != culprit)
    # the next run retries only the culprit, once more; the one after leaves it alone
    go(dsn, fake, max_attempts=2)
    assert status(dsn)[culprit]["attempts"] == 2
    n = len(fake.feedback_requests())
    third = go(dsn, fake, max_attempts=2)
    assert len(fake.feedback_requests()) == n and third.examined == 0


def test_non_uuid_run_id_is_invalid_without_asking_the_api(dsn, fake):
    seed(dsn, 3)
    with psycopg.connect(dsn) as conn:
        insert(conn, {"run_id": "not-a-uuid", "trace_id": "t", "project": "proj-a", "run_date": str(TODAY)})
    summary = go(dsn, fake)
    assert status(dsn)["not-a-uuid"]["state"] == "invalid"
    assert status(dsn)["not-a-uuid"]["reason"] == "invalid_run_id"
    assert all("not-a-uuid" not in q.query["run"] for q in fake.feedback_requests())
    assert summary.failed == {"invalid_run_id": 1} and summary.exit_code == 3


def test_data_that_is_not_an_object_is_invalid_and_untouched(dsn, fake):
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO runs (run_id, trace_id, project, run_date, data) VALUES (%s, 't', 'p', %s, %s)",
            (str(uuid.uuid4()), TODAY, Jsonb([1, 2])),
        )
    before = raw_rows(dsn)
    go(dsn, fake)
    assert raw_rows(dsn) == before
    assert [s["reason"] for s in status(dsn).values()] == ["not_an_object"]


def test_fewer_records_than_feedback_stats_is_a_retryable_mismatch(dsn, fake):
    ids = seed(dsn, 30)
    short = next(r for r in ids if len(synthetic.feedback_for_run(r)) >= 1)
    fake.set_feedback(short, [])
    go(dsn, fake)
    st = status(dsn)[short]
    assert (st["state"], st["reason"]) == ("failed", "mismatch")
    assert "API returned 0 record(s), feedback_stats count" in st["error"]
    assert "feedback_records" not in rows(dsn)[short]
    fake.set_feedback(short, synthetic.feedback_for_run(short))
    go(dsn, fake)
    assert status(dsn)[short]["state"] == "done"
    assert rows(dsn)[short]["feedback_records"] == expected_records(short)


def test_an_api_answering_empty_to_everything_stops_the_run(dsn, fake):
    seed(dsn, 40)
    fake.empty_all = True
    before = raw_rows(dsn)
    # the pre-flight probe of the window's newest promising runs gets nothing: stopped before any batch
    with pytest.raises(WrongWorkspace, match=r"returned no feedback for 5 of the window's 5 newest runs .* Stopped"):
        go(dsn, fake)
    assert len(fake.feedback_requests()) == 1
    assert raw_rows(dsn) == before
    assert status(dsn) == {}
    assert invocations(dsn)[0]["outcome"] == "error"


def test_wrong_api_key_stops_at_once_marking_nothing(dsn, fake):
    seed(dsn, 10)
    with pytest.raises(ApiAuthError, match="HTTP 401"):
        backfill.run(Database(dsn), LangSmith(api_key="wrong", endpoint=fake.url), RunOptions(delay_ms=0))
    assert status(dsn) == {}
    assert len(fake.feedback_requests()) == 1


def test_transient_errors_are_retried_then_succeed(dsn, fake):
    ids = seed(dsn, 10)
    fake.fail_next(503, times=2)
    fake.fail_next(429, retry_after="0")
    summary = go(dsn, fake)
    assert summary.exit_code == 0 and summary.api_errors == 3
    assert {s["state"] for s in status(dsn).values()} <= {"done", "no_feedback"}
    assert len(status(dsn)) == len(ids)


def test_api_unreachable_stops_with_nothing_marked(dsn, fake):
    seed(dsn, 10)
    fake.fail_next(503, times=50)
    # a probe fails too: an outage, which --outage-wait 0 does not wait out
    with pytest.raises(ApiUnavailable, match=r"failed 2 times in a row \(HTTP 503\)"):
        go(dsn, fake, max_retries=3, outage_wait_s=0)
    assert status(dsn) == {}


def test_nul_bearing_record_fails_its_run_only(dsn, fake):
    ids = seed(dsn, 20)
    bad = ids[0]
    fake.set_feedback(bad, [{"id": "x", "run_id": bad, "key": "k", "comment": "a\u0000b", "created_at": None}])
    summary = go(dsn, fake)
    st = status(dsn)[bad]
    assert (st["state"], st["reason"]) == ("failed", "unstorable")
    assert "holds \\u0000, which PostgreSQL jsonb cannot store" in st["error"]
    assert summary.failed == {"unstorable": 1}
    assert all(status(dsn)[r]["state"] in ("done", "no_feedback") for r in ids[1:])


def test_limit_and_dry_run(dsn, fake):
    seed(dsn, 30)
    listed = []
    dry = backfill.run(Database(dsn), None, RunOptions(dry_run=True), listing=lambda *a: listed.append(a))
    assert dry.examined == 30 == dry.pending_at_start == len(listed)
    assert fake.requests == [] and status(dsn) == {}
    summary = go(dsn, fake, limit=7, batch_size=5)
    assert summary.examined == 7 and len(status(dsn)) == 7


def test_one_runner_at_a_time(dsn, fake):
    seed(dsn, 5)
    lease = Lease.take(Database(dsn), "revert")
    try:
        with pytest.raises(AlreadyRunning, match=r"holds the lease on this database: `backfill revert` on "):
            go(dsn, fake)
    finally:
        lease.release()
    assert go(dsn, fake).exit_code == 0


def test_not_migrated(app_dsn, fake):
    with pytest.raises(NotMigrated, match="alembic upgrade head"):
        go(app_dsn, fake)


def test_concurrent_upserts_are_not_lost(dsn, fake):
    """The extractor re-archives rows while the backfill patches them: both writes survive."""
    ids = seed(dsn, 80, days=2)
    fake.latency_s = 0.02
    done = threading.Event()
    last_write: dict[str, int] = {}

    def extractor():
        with psycopg.connect(dsn, autocommit=True) as conn:
            k = 0
            while not done.is_set():
                rid = ids[k % len(ids)]
                doc = rows_one(conn, rid)
                doc.pop("feedback_records", None)
                doc["reupserted"] = k
                conn.execute(
                    "INSERT INTO runs (run_id, trace_id, project, run_date, data) VALUES (%s,%s,%s,%s,%s)"
                    " ON CONFLICT (run_id) DO UPDATE SET data = EXCLUDED.data",
                    (rid, doc["trace_id"], doc["project"], doc["run_date"], Jsonb(doc)),
                )
                last_write[rid] = k
                k += 1

    t = threading.Thread(target=extractor)
    t.start()
    try:
        go(dsn, fake, batch_size=10)
    finally:
        done.set()
        t.join()
    # every upsert is kept; a row re-archived without feedback_records after its
    # enrichment is enriched again by the next run
    go(dsn, fake, batch_size=10)
    after = rows(dsn)
    assert len(last_write) == len(ids)  # the extractor rewrote every row at least once
    for rid in ids:
        assert after[rid].get("reupserted") == last_write[rid]
        if expected_records(rid):
            assert after[rid]["feedback_records"] == expected_records(rid)


def rows_one(conn, rid):
    return conn.execute("SELECT data FROM runs WHERE run_id = %s", (rid,)).fetchone()[0]


def test_a_mismatch_keeps_what_the_api_returned_on_its_last_attempt(dsn, fake):
    """Giving up on a mismatch never loses the records that do exist."""
    ids = seed(dsn, 30)
    rid = next(r for r in ids if len(synthetic.feedback_for_run(r)) >= 2)
    partial = expected_records(rid)[:1]
    fake.set_feedback(rid, partial)
    go(dsn, fake, max_attempts=2)
    assert "feedback_records" not in rows(dsn)[rid]  # first attempt: retryable, nothing stored
    last = go(dsn, fake, max_attempts=2)
    st = status(dsn)[rid]
    assert (st["state"], st["reason"], st["attempts"], st["records"]) == ("failed", "mismatch", 2, 1)
    assert st["error"].endswith(", stored")
    assert rows(dsn)[rid]["feedback_records"] == partial
    assert last.failed == {"mismatch": 1} and last.exit_code == 3
    # once LangSmith has them all, a refetch completes the row
    fake.set_feedback(rid, synthetic.feedback_for_run(rid))
    backfill.run(Database(dsn), LangSmith(api_key=KEY, endpoint=fake.url), RunOptions(delay_ms=0, refetch=True))
    assert status(dsn)[rid]["state"] == "done"
    assert rows(dsn)[rid]["feedback_records"] == expected_records(rid)
