"""Living beside the extractor: its own upsert, replayed while `backfill run` works and between runs.

The extractor (Hivekind/langsmith-extractor, lse/data_storage.py) re-archives a run with
INSERT ... ON CONFLICT (run_id) DO UPDATE SET trace_id, project, run_date, data =
EXCLUDED.data: the whole document is replaced. Its older path writes "feedback_records":
null; its newer path (lse/client.py) writes reduced records {id, run_id, key, score, value,
comment, correction, feedback_source_type, created_at, modified_at} and omits the key when
the run has no feedback. Real PostgreSQL, the real runner over HTTP to the fake LangSmith.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import time
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

import backfill
from backfill.cli import app
from backfill.config import ALL_TIME, Database, LangSmith, Window
from backfill.domain.options import RunOptions
from backfill.operations import repair as operations
from backfill.report import status_json
from backfill.sandbox import synthetic
from backfill.sandbox.fake_langsmith import FakeLangSmith

from ..helpers import TODAY, expected_records, seed

KEY = "lsv2_extractor_key"

#: The extractor's statement, as lse/data_storage.py runs it (named parameters in psycopg's style).
EXTRACTOR_UPSERT = """
    INSERT INTO runs (run_id, trace_id, project, run_date, data)
    VALUES (%(run_id)s, %(trace_id)s, %(project)s, %(run_date)s, %(data)s)
    ON CONFLICT (run_id) DO UPDATE SET
        trace_id = EXCLUDED.trace_id,
        project = EXCLUDED.project,
        run_date = EXCLUDED.run_date,
        data = EXCLUDED.data
"""


@pytest.fixture
def fake():
    with FakeLangSmith(api_key=KEY) as server:
        yield server


def go(dsn: str, fake: FakeLangSmith, **opts: Any) -> backfill.RunSummary:
    options = RunOptions(delay_ms=opts.pop("delay_ms", 0), backoff_s=0.001, **opts)
    return backfill.run(Database(dsn), LangSmith(api_key=KEY, endpoint=fake.url), options)


def _sdk_iso(value: str | None) -> str | None:
    # the SDK parses timestamps into datetimes; the extractor stores .isoformat() of them
    return None if value is None else dt.datetime.fromisoformat(value.replace("Z", "+00:00")).isoformat()


def reduced(record: dict[str, Any]) -> dict[str, Any]:
    """One API record as the extractor's newer path stores it (lse/client.py)."""
    return {
        "id": record["id"],
        "run_id": record["run_id"],
        "key": record["key"],
        "score": record.get("score"),
        "value": record.get("value"),
        "comment": record.get("comment"),
        "correction": record.get("correction"),
        "feedback_source_type": (record.get("feedback_source") or {}).get("type"),
        "created_at": _sdk_iso(record.get("created_at")),
        "modified_at": _sdk_iso(record.get("modified_at")),
    }


class Extractor:
    """Replays the extractor's upsert; remembers the last document it wrote to each run."""

    def __init__(self, dsn: str, ids: list[str]) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.base = {r: d for r, d in self.conn.execute("SELECT run_id, data FROM runs WHERE run_id = ANY(%s)", (ids,))}
        self.last: dict[str, dict[str, Any]] = {}

    def archive(self, run_id: str, shape: str) -> None:
        """shape: null (older path), newer (reduced records, or no key without feedback)."""
        doc = {k: v for k, v in self.base[run_id].items() if k != "feedback_records"}
        if shape == "null":
            doc["feedback_records"] = None
        elif synthetic.feedback_for_run(run_id):
            doc["feedback_records"] = [reduced(r) for r in synthetic.feedback_for_run(run_id)]
        self.conn.execute(
            EXTRACTOR_UPSERT,
            {
                "run_id": run_id,
                "trace_id": doc["trace_id"],
                "project": doc["project"],
                "run_date": doc["run_date"],
                "data": json.dumps(doc),  # the extractor sends json.dumps text
            },
        )
        self.last[run_id] = doc

    def written(self, run_id: str) -> dict[str, Any]:
        """The document the extractor (or the seed) last wrote to the run."""
        return self.last.get(run_id, self.base[run_id])

    def close(self) -> None:
        self.conn.close()


def holds_reduced(doc: dict[str, Any]) -> bool:
    recs = doc.get("feedback_records")
    return isinstance(recs, list) and any("feedback_source_type" in r for r in recs)


def table(dsn: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT run_id, data FROM runs").fetchall())


def canonical_text(dsn: str, docs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """jsonb's own text of each document (for byte-for-byte comparisons)."""
    with psycopg.connect(dsn) as conn:
        return {r: conn.execute("SELECT %s::jsonb::text", (json.dumps(d),)).fetchone()[0] for r, d in docs.items()}


def raw(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT run_id, data::text FROM runs").fetchall())


TRUTH = """
SELECT count(*) FILTER (WHERE t.lacking) AS lacking,
       count(*) FILTER (WHERE t.lacking AND t.ledger) AS lacking_now,
       count(*) FILTER (WHERE t.promised) AS promised,
       count(*) FILTER (WHERE t.promised AND t.lacking) AS promised_lacking,
       count(*) FILTER (WHERE t.extractor) AS extractor_records,
       count(*) FILTER (WHERE t.ours AND NOT t.extractor) AS our_records
FROM (
    SELECT COALESCE(jsonb_typeof(r.data -> 'feedback_records'), 'null') = 'null' AS lacking,
           s.records_md5 IS NOT NULL AS ledger,
           COALESCE(md5((r.data -> 'feedback_records')::text) = s.records_md5, false) AS ours,
           EXISTS (SELECT 1 FROM jsonb_each(r.data -> 'feedback_stats') AS e WHERE (e.value ->> 'n')::int > 0)
               AS promised,
           jsonb_typeof(r.data -> 'feedback_records') = 'array'
               AND EXISTS (SELECT 1 FROM jsonb_array_elements(r.data -> 'feedback_records') AS f
                           WHERE f ? 'feedback_source_type') AS extractor
    FROM runs AS r LEFT JOIN feedback_backfill_status AS s ON s.run_id = r.run_id
) AS t
"""


def check_status(dsn: str) -> dict[str, Any]:
    """`backfill status` agrees with what the documents hold (read here, the slow way)."""
    with psycopg.connect(dsn, row_factory=psycopg.rows.dict_row) as conn:
        truth = conn.execute(TRUTH).fetchone()
    data = status_json.to_json(backfill.status(Database(dsn), Window.parse("14d")))["data"]
    assert {k: data[k] for k in truth} == truth
    return data


def expect_enriched(dsn: str, ex: Extractor, ids: list[str]) -> None:
    """After a complete run with the extractor quiet: the exact table."""
    now = table(dsn)
    for rid in ids:
        last = ex.written(rid)
        if holds_reduced(last) or not synthetic.feedback_for_run(rid):
            assert now[rid] == last, rid  # the extractor's records, its null or its missing key: as written
        else:
            assert now[rid] == {**last, "feedback_records": expected_records(rid)}, rid  # the API's JSON


def test_the_extractor_upserts_while_and_between_runs(dsn, fake):
    ids = seed(dsn, 150, days=5)
    with_fb = [r for r in ids if synthetic.feedback_for_run(r)]
    ex = Extractor(dsn, ids)
    rng = random.Random(12)
    try:
        # before any run: the newer path already archived some runs with its reduced records
        for rid in with_fb[:6]:
            ex.archive(rid, "newer")
        for rid in ids[-5:]:
            ex.archive(rid, "null")
        check_status(dsn)

        # 1. the extractor keeps upserting while `backfill run` works (batches of 10, paced)
        result: dict[str, Any] = {}
        runner = threading.Thread(target=lambda: result.update(s=go(dsn, fake, batch_size=10, delay_ms=15)))
        runner.start()
        during = 0
        deadline = time.monotonic() + 60
        while runner.is_alive():
            assert time.monotonic() < deadline, "backfill run did not finish"
            ex.archive(rng.choice(ids), rng.choice(["null", "newer"]))
            during += 1
            time.sleep(0.003)
        runner.join()
        assert during > 20 and result["s"].exit_code == 0
        check_status(dsn)

        # 2. between runs: the next run enriches whatever the upserts left lacking, and only that
        go(dsn, fake)
        expect_enriched(dsn, ex, ids)
        data = check_status(dsn)
        assert data["lacking_now"] == 0 and data["extractor_records"] == sum(holds_reduced(ex.written(r)) for r in ids)

        # 3. a simulated re-archive of enriched rows with null: status sees it at once
        ours = [r for r in with_fb if not holds_reduced(ex.written(r))]
        rearchived = ours[:7]
        for rid in rearchived:
            ex.archive(rid, "null")
        data = check_status(dsn)
        assert data["lacking_now"] == 7

        # 4. the ledger describes the row just before our latest write: a --refetch re-enriches
        # the re-archived rows over their null, and revert gives the null back (not "absent")
        go(dsn, fake, refetch=True)
        expect_enriched(dsn, ex, ids)
        assert check_status(dsn)["lacking_now"] == 0

        # 5. revert: every row back to what it held just before our last write, byte for byte
        before_ours = canonical_text(dsn, {r: ex.written(r) for r in ids})
        operations.revert(Database(dsn), ALL_TIME)
        assert raw(dsn) == before_ours
        assert all(table(dsn)[r]["feedback_records"] is None for r in rearchived)
        check_status(dsn)
    finally:
        ex.close()


def test_replacing_the_extractors_records_on_request_and_reverting_them(dsn, fake):
    ids = seed(dsn, 60, days=3)
    with_fb = [r for r in ids if synthetic.feedback_for_run(r)]
    ex = Extractor(dsn, ids)
    try:
        for rid in with_fb[:5]:
            ex.archive(rid, "newer")
        go(dsn, fake)
        go(dsn, fake, refetch=True)  # by default the extractor's records are never touched
        expect_enriched(dsn, ex, ids)
        assert check_status(dsn)["extractor_records"] == 5
        before = raw(dsn)

        summary = go(dsn, fake, refetch=True, replace_extractor_records=True)
        assert summary.exit_code == 0
        now = table(dsn)
        for rid in ids:
            if synthetic.feedback_for_run(rid):
                assert now[rid]["feedback_records"] == expected_records(rid), rid  # the API's full records
        data = check_status(dsn)
        assert data["extractor_records"] == 0 and data["our_records"] == len(with_fb)

        # the analyst view now says who wrote each record
        with psycopg.connect(dsn) as conn:
            by = dict(conn.execute("SELECT written_by, count(*) FROM feedback_records_v GROUP BY 1").fetchall())
        assert set(by) == {"backfill"}

        # revert restores the extractor's reduced records byte for byte, and removes ours
        operations.revert(Database(dsn), ALL_TIME)
        assert raw(dsn) == canonical_text(dsn, {r: ex.written(r) for r in ids})
        for rid in with_fb[:5]:
            assert raw(dsn)[rid] == before[rid]
    finally:
        ex.close()


def test_the_view_reads_both_shapes(dsn, fake):
    ids = seed(dsn, 30, days=1)
    with_fb = [r for r in ids if synthetic.feedback_for_run(r)]
    ex = Extractor(dsn, ids)
    try:
        ex.archive(with_fb[0], "newer")
        go(dsn, fake)
        with psycopg.connect(dsn) as conn:
            got = conn.execute(
                "SELECT run_id, feedback_id, source_type, written_by FROM feedback_records_v ORDER BY 1, 2"
            ).fetchall()
    finally:
        ex.close()
    expected = sorted(
        (rid, rec["id"], "api", "extractor" if rid == with_fb[0] else "backfill")
        for rid in with_fb
        for rec in synthetic.feedback_for_run(rid)
    )
    assert got == expected


def test_replace_option_needs_refetch(dsn):
    result = CliRunner().invoke(
        app, ["run", "--replace-extractor-records", "--database-url", dsn, "--dry-run"], catch_exceptions=False
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == "backfill: error: --replace-extractor-records needs --refetch"


def test_rows_lacking_records_for_days_raise_the_alert(dsn):
    ids = seed(dsn, 30, days=14)
    assert ids
    report = backfill.status(Database(dsn), Window.parse("14d"))
    promised_old = sum(d.promised_lacking for d in report.days if (TODAY - d.run_date).days >= 12)
    assert promised_old > 0
    assert report.status == "CRITICAL" and report.exit_code == 2
    assert ("CRITICAL", "missing_records", promised_old) in [(a.level, a.name, a.value) for a in report.alerts]
