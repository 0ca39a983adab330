"""`backfill status` on known checkpoints: exact figures, the lines a DBA reads, --check codes."""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from typer.testing import CliRunner

import backfill
from backfill.archive.status import StatusReport
from backfill.cli import app
from backfill.config import Database, Window
from backfill.report import status_json
from backfill.sandbox import synthetic

from .helpers import TODAY, insert, wait_for

NOW = dt.datetime.now(dt.UTC)
DEFAULT_PARAMS = {"batch_size": 100, "delay_ms": 1000, "max_attempts": 3}


def day(n: int) -> dt.date:
    return TODAY - dt.timedelta(days=n)


def native(run_id: str, n: int) -> list[dict[str, Any]]:
    """``n`` records in the API's shape (feedback_source object), as the backfill stores them."""
    return [
        {"id": f"{run_id[:30]}{i:06d}", "run_id": run_id, "key": "final_verdict", "score": 1.0,
         "feedback_source": {"type": "api", "metadata": {}, "user_id": None}}
        for i in range(n)
    ]  # fmt: skip


class Archive:
    """Runs, checkpoint rows and invocations inserted by hand, to know every figure.

    Rows promise nothing until marked: ``mark`` writes the row's feedback_stats (``stats``
    records) and, for a done row, the records and the ledger, as `backfill run` leaves them.
    """

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.n = 0

    def runs(self, days_ago: int, count: int, project: str = "proj-a") -> list[str]:
        ids = []
        for _ in range(count):
            rid = synthetic.run_id_for(self.n, "status")
            self.n += 1
            insert(self.conn, synthetic.run_document(rid, rid, project, day(days_ago)) | {"feedback_stats": {}})
            ids.append(rid)
        return ids

    def mark(
        self,
        run_id: str,
        days_ago: int,
        state: str,
        reason: str | None = None,
        *,
        attempts: int = 1,
        records: int = 0,
        stats: int = 0,
    ) -> None:
        self.conn.execute(
            "INSERT INTO feedback_backfill_status (run_id, run_date, state, reason, attempts, records, stats_count)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (run_id, day(days_ago), state, reason, attempts, records, stats),
        )
        promise = {"final_verdict": {"n": stats}} if stats else {}
        self.conn.execute(
            "UPDATE runs SET data = jsonb_set(data, '{feedback_stats}', %s) WHERE run_id = %s", (Jsonb(promise), run_id)
        )
        if state == "done" and records:
            self.conn.execute(
                "UPDATE runs SET data = data || jsonb_build_object('feedback_records', %s::jsonb) WHERE run_id = %s",
                (Jsonb(native(run_id, records)), run_id),
            )
            self.conn.execute(
                "UPDATE feedback_backfill_status AS s SET prior = 'absent', row_id = r.id,"
                " records_md5 = md5((r.data -> 'feedback_records')::text)"
                " FROM runs AS r WHERE r.run_id = s.run_id AND s.run_id = %s",
                (run_id,),
            )

    def invocation(
        self,
        *,
        ago_s: int,
        elapsed_s: int,
        examined: int,
        finished: bool = True,
        outcome: str = "completed",
        params: dict[str, Any] | None = None,
        api_requests: int = 0,
        api_errors: int = 0,
        records: int = 0,
    ) -> int:
        started = NOW - dt.timedelta(seconds=ago_s)
        end = started + dt.timedelta(seconds=elapsed_s)
        return self.conn.execute(
            "INSERT INTO feedback_backfill_invocations (started_at, heartbeat_at, finished_at, outcome, params,"
            " rows_examined, records_stored, api_requests, api_errors)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (
                started,
                end,
                end if finished else None,
                outcome if finished else None,
                Jsonb(params or DEFAULT_PARAMS),
                examined,
                records,
                api_requests,
                api_errors,
            ),
        ).fetchone()[0]

    def close(self) -> None:
        self.conn.close()


@pytest.fixture(autouse=True)
def missing_after_midnight(monkeypatch):
    """Records missing "6h after their day" depends on the clock: count from midnight UTC instead,
    so that every day before today is past the threshold whatever the hour the tests run."""
    monkeypatch.setattr(sys.modules["backfill.archive.status"], "MISSING_WARNING_HOURS", 0)


@pytest.fixture
def archive(dsn):
    a = Archive(dsn)
    yield a
    a.close()


def scenario(a: Archive) -> None:
    """27 rows in the 14-day window, every state and reason, an at-risk day, a killed run."""
    a0, a1, a2, a3, a4, a5, a6, _a7, _a8, _a9 = a.runs(0, 10)
    a.mark(a0, 0, "done", records=2, stats=2)
    a.mark(a1, 0, "done", records=1, stats=1)
    a.mark(a2, 0, "done", records=3, stats=0)  # more records than feedback_stats counted
    a.mark(a3, 0, "no_feedback")
    a.mark(a4, 0, "no_feedback")
    a.mark(a5, 0, "failed", "api_error", attempts=3, stats=1)
    a.mark(a6, 0, "failed", "mismatch", attempts=1, stats=2)
    b0, _b1, _b2 = a.runs(0, 3, project="proj-b")
    a.mark(b0, 0, "done", records=1, stats=1)
    c0, c1, c2, c3, c4, c5, _c6, _c7 = a.runs(1, 8)
    a.mark(c0, 1, "done", records=1, stats=1)
    a.mark(c1, 1, "no_feedback")
    a.mark(c2, 1, "failed", "unstorable", attempts=2, stats=1)
    a.mark(c3, 1, "invalid", "invalid_run_id")
    a.mark(c4, 1, "invalid", "not_an_object")
    a.mark(c5, 1, "failed", "api_error", attempts=1, stats=1)
    e0, e1, _e2, _e3 = a.runs(12, 4)  # old enough to be at risk
    a.mark(e0, 12, "done", records=1, stats=1)
    a.mark(e1, 12, "failed", "api_error", attempts=2, stats=1)
    for f in a.runs(13, 2):  # old, but nothing left to do
        a.mark(f, 13, "done", records=1, stats=1)
    g0, g1 = a.runs(20, 2)  # outside the window
    a.mark(g0, 20, "done", records=5, stats=5)
    a.mark(g1, 20, "failed", "api_error", attempts=3, stats=1)
    a.invocation(ago_s=3 * 3600, elapsed_s=100, examined=200)  # 2 rows/s
    a.invocation(ago_s=2 * 3600, elapsed_s=100, examined=300)  # 3 rows/s
    a.invocation(  # killed: no finished_at, nobody holds the lock; 1 row/s
        ago_s=3600,
        elapsed_s=50,
        examined=50,
        finished=False,
        params={"batch_size": 50, "delay_ms": 500, "max_attempts": 3, "since": "x", "until": "y", "projects": []},
        api_requests=4,
        api_errors=1,
        records=9,
    )


def cli(dsn: str, *args: str):
    return CliRunner().invoke(app, ["status", "--database-url", dsn, *args])


def as_json(dsn: str, *args: str) -> dict[str, Any]:
    result = cli(dsn, "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def reasons(*rows: tuple[int, int, int]) -> dict[str, dict[str, int]]:
    names = ("api_error", "mismatch", "unstorable", "invalid_run_id", "not_an_object")
    return {n: {"rows": r, "attempts": at, "at_max_attempts": m} for n, (r, at, m) in zip(names, rows, strict=True)}


def test_json_figures(dsn, archive):
    scenario(archive)
    out = as_json(dsn)
    assert out["window"] == {"since": day(13).isoformat(), "until": day(-1).isoformat(), "projects": []}
    assert out["totals"] == {
        "rows": 27,
        "examined": 18,
        "done": 8,
        "no_feedback": 3,
        "invalid": 2,
        "failed": 5,
        "pending": 9,
        "records": 11,
        "promised": 12,
        "delivered": 7,
        "coverage": 13 / 27,
        "feedback_coverage_rate": 7 / 12,
        "failure_rate": 7 / 18,
    }
    assert out["failures"] == {
        "max_attempts": 3,
        "reasons": reasons((3, 6, 1), (1, 1, 0), (1, 2, 0), (1, 1, 0), (1, 1, 0)),
    }
    assert out["days"] == [
        {
            "run_date": day(13).isoformat(),
            "total": 2,
            "done": 2,
            "no_feedback": 0,
            "invalid": 0,
            "failed": 0,
            "pending": 0,
            "at_risk": False,
            "lacking": 0,
            "lacking_now": 0,
            "promised": 2,
            "promised_lacking": 0,
            "extractor_records": 0,
            "our_records": 2,
        },
        {
            "run_date": day(12).isoformat(),
            "total": 4,
            "done": 1,
            "no_feedback": 0,
            "invalid": 0,
            "failed": 1,
            "pending": 2,
            "at_risk": True,
            "lacking": 3,
            "lacking_now": 0,
            "promised": 2,
            "promised_lacking": 1,
            "extractor_records": 0,
            "our_records": 1,
        },
        {
            "run_date": day(1).isoformat(),
            "total": 8,
            "done": 1,
            "no_feedback": 1,
            "invalid": 2,
            "failed": 2,
            "pending": 2,
            "at_risk": False,
            "lacking": 7,
            "lacking_now": 0,
            "promised": 3,
            "promised_lacking": 2,
            "extractor_records": 0,
            "our_records": 1,
        },
        {
            "run_date": day(0).isoformat(),
            "total": 13,
            "done": 4,
            "no_feedback": 2,
            "invalid": 0,
            "failed": 2,
            "pending": 5,
            "at_risk": False,
            "lacking": 9,
            "lacking_now": 0,
            "promised": 5,
            "promised_lacking": 2,
            "extractor_records": 0,
            "our_records": 4,
        },
    ]
    runs = out["runs"]
    assert (runs["count"], runs["runner_pid"]) == (3, None)
    last = runs["last"]
    assert (last["id"], last["state"], last["outcome"], last["finished_at"]) == (3, "unfinished", None, None)
    assert (last["elapsed_ms"], last["rows_examined"], last["rows_per_s"]) == (50_000, 50, 1.0)
    assert (last["api_requests"], last["api_errors"], last["api_error_rate"], last["records_stored"]) == (4, 1, 0.25, 9)
    assert last["params"] == {
        "since": "x",
        "until": "y",
        "projects": [],
        "batch_size": 50,
        "delay_ms": 500,
        "max_attempts": 3,
    }
    # 9 pending rows at 1 row/s; the pacing floor: one request of 50 ids per 500 ms
    assert runs["eta"] == {
        "pending": 9,
        "rows_per_s": 1.0,
        "seconds": 9,
        "floor_seconds": 1,
        "batch_size": 50,
        "delay_ms": 500,
    }
    assert runs["throughput"] == {
        "last_finished_id": 2,
        "rows_per_s": 3.0,
        "baseline_rows_per_s": 2.0,
        "baseline_runs": 1,
    }
    # what the rows hold, from the data: promised = rows whose feedback_stats count records
    assert out["data"] == {
        "rows": 27,
        "lacking": 19,
        "lacking_now": 0,
        "promised": 12,
        "promised_lacking": 5,
        "extractor_records": 0,
        "our_records": 8,
        "other_records": 0,
        "feedback_coverage_rate": 7 / 12,
    }
    assert out["alerts"] == [
        {"level": "CRITICAL", "name": "failure_rate", "value": 7 / 18, "threshold": 0.05},
        # e1 (12 days old) promised a record and lacks it; c2 and c5 (yesterday) too
        {"level": "CRITICAL", "name": "missing_records", "value": 1, "threshold": 12},
        {"level": "WARNING", "name": "missing_records", "value": 2, "threshold": 0},
    ]
    assert (out["status"], out["exit_code"]) == ("CRITICAL", 2)
    assert sorted(out) == [
        "alerts", "as_of", "data", "days", "exit_code", "failures", "runs", "status", "totals", "window"
    ]  # fmt: skip


def test_python_api_returns_the_same_report(dsn, archive):
    scenario(archive)
    report = backfill.status(Database(dsn), Window.parse("14d"))
    assert isinstance(report, StatusReport)
    assert status_json.to_json(report) == as_json(dsn) | {"as_of": report.as_of.isoformat()}
    assert (report.totals.pending, report.last_run.state, report.exit_code) == (9, "unfinished", 2)


def test_human_report(dsn, archive):
    scenario(archive)
    result = cli(dsn)
    assert result.exit_code == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert lines[:3] == [
        f"feedback-backfill: run_date {day(13)} to {day(0)} inclusive, all projects",
        "progress   48.1%  13 of 27 rows done: enriched, no feedback or invalid",
        "coverage   58.3%  7 of 12 rows hold the records their feedback_stats count",
    ]
    for expected in (
        "run_date        rows  enriched   no fb invalid  failed pending missing",
        f"{day(13)}         2         2       0       0       0       0       0",
        f"{day(12)}         4         1       0       0       1       2       1  at risk",
        "total             27         8       3       2       5       9       5",
        "failures  api_error 3 (1 at max attempts), mismatch 1, unstorable 1,",
        "          invalid_run_id 1, not_an_object 1",
        "last run  #3 stopped without finishing (killed?) after 50s",
        "          50 rows (1.00/s), 9 records, 4 requests (1 failed)",
        "ETA       9 pending rows: 9s at 1.00 rows/s (at best 1s at --delay-ms 500)",
        "CRITICAL  failure rate 38.9% > 5%",
    ):
        assert expected in lines, expected
    assert sum("LangSmith keeps base traces 14 days" in line for line in lines) == 1
    # -v: what the rows hold, the failures by reason, the runs and the throughput, the pacing floor
    verbose = cli(dsn, "-v").stdout.splitlines()
    assert all(len(line) <= 80 for line in verbose)
    for expected in (
        "  promised records                12  feedback_stats count feedback",
        "  api_error                  3         6             1",
        "runs      3 so far, all windows",
        "speed     run #2 3.00 rows/s, mean of 1 earlier run 2.00",
        "          --batch-size 50)",
    ):
        assert expected in verbose, expected
    assert verbose.count("Failures by reason        rows  attempts    at max (3)") == 1
    assert sum("a risk, not a certainty" in line for line in verbose) == 1


def test_check_critical(dsn, archive):
    scenario(archive)
    result = cli(dsn, "--check")
    assert result.exit_code == 2
    (first,) = result.stdout.splitlines()  # the plugin's one line, nothing else
    assert first == (
        "FEEDBACK-BACKFILL CRITICAL - failure rate 38.9% > 5%; 1 row misses promised records at 12+ days old"
        " (retention); 2 rows miss promised records 0h+ after their day | coverage=48.15%;;;0;100"
        " failure_rate=38.89%;;5;0;100 rows=27;;;0 pending=9;;;0 failed=7;;;0 data_feedback_coverage=58.33%;;;0;100"
        " lacking_now=0;;;0 promised_lacking=5;;;0 extractor_records=0;;;0 rows_per_s=3.000;;;0"
    )
    # with --json the line goes to stderr and stdout stays one JSON document
    result = cli(dsn, "--check", "--json")
    assert result.exit_code == 2
    assert result.stderr.startswith("FEEDBACK-BACKFILL CRITICAL - ")
    assert json.loads(result.stdout)["status"] == "CRITICAL"


def hold_lease(conn: psycopg.Connection, command: str, invocation_id: int | None, expires_s: float) -> None:
    """The lease row as a live holder (or, with expires_s <= 0, a killed one) leaves it."""
    conn.execute(
        "INSERT INTO feedback_backfill_lease"
        " (name, holder, command, hostname, pid, invocation_id, heartbeat_at, expires_at)"
        " VALUES ('runner', 'h', %s, 'db-host-1', 4242, %s, now() + make_interval(secs => %s - 60),"
        " now() + make_interval(secs => %s))"
        " ON CONFLICT (name) DO UPDATE SET command = EXCLUDED.command, invocation_id = EXCLUDED.invocation_id,"
        " heartbeat_at = EXCLUDED.heartbeat_at, expires_at = EXCLUDED.expires_at",
        (command, invocation_id, expires_s, expires_s),
    )


def test_live_run_holding_the_lease(dsn, archive):
    scenario(archive)
    archive.invocation(
        ago_s=60,
        elapsed_s=20,
        examined=40,
        finished=False,
        params={"batch_size": 10, "delay_ms": 100, "max_attempts": 2},
        api_requests=4,
    )
    with psycopg.connect(dsn, autocommit=True) as runner:
        hold_lease(runner, "run", 4, 60)
        out = as_json(dsn)
        lines = cli(dsn).stdout.splitlines()
        verbose = cli(dsn, "-v").stdout.splitlines()
        pid = 4242
        # the lease expired (as when the runner's process dies): the same run reads as killed
        hold_lease(runner, "run", 4, -5)
        killed = as_json(dsn)
        assert killed["runs"]["last"]["state"] == "unfinished" and killed["runs"]["runner_pid"] is None
        assert killed["runs"]["lease"]["state"] == "expired"
        assert "last run  #4 stopped without finishing (killed?) after 20s" in cli(dsn).stdout.splitlines()
        assert any(
            re.fullmatch(r"  lease: free, expired \d+s ago without a release \(holder killed\?\)", x)
            for x in cli(dsn, "-v").stdout.splitlines()
        )
    assert out["runs"]["runner_pid"] == pid
    assert (out["runs"]["lease"]["command"], out["runs"]["lease"]["state"], out["runs"]["lease"]["alive"]) == (
        "run",
        "held",
        True,
    )
    assert "    by `backfill run` on db-host-1 (pid 4242) since " in "\n".join(verbose)
    last = out["runs"]["last"]
    assert (last["id"], last["state"], last["rows_per_s"], last["api_error_rate"]) == (4, "running", 2.0, 0.0)
    # the older unfinished run is still a killed one; the running one has no throughput verdict yet
    assert out["runs"]["throughput"] == {
        "last_finished_id": 2,
        "rows_per_s": 3.0,
        "baseline_rows_per_s": 2.0,
        "baseline_runs": 1,
    }
    assert out["runs"]["eta"] == {
        "pending": 9,
        "rows_per_s": 2.0,
        "seconds": 5,
        "floor_seconds": 1,
        "batch_size": 10,
        "delay_ms": 100,
    }
    # max_attempts comes from the last run's parameters
    assert out["failures"]["max_attempts"] == 2
    assert out["failures"]["reasons"] == reasons((3, 6, 2), (1, 1, 0), (1, 2, 1), (1, 1, 0), (1, 1, 0))
    assert any(
        re.fullmatch(rf"last run  #4 running on db-host-1 \(pid {pid}\) for 20s, heartbeat [\dmhds ]+ ago", x)
        for x in lines
    ), lines
    assert "          last run started " in "\n".join(verbose)


def test_check_warning_on_slow_last_run(dsn, archive):
    for rid in archive.runs(0, 20):
        archive.mark(rid, 0, "done", records=1, stats=1)
    archive.invocation(ago_s=7200, elapsed_s=100, examined=400)  # 4 rows/s
    archive.invocation(ago_s=5400, elapsed_s=100, examined=200)  # 2 rows/s: mean 3
    archive.invocation(ago_s=3600, elapsed_s=100, examined=0, outcome="error")  # no rows: no throughput
    archive.invocation(ago_s=1800, elapsed_s=100, examined=150)  # 1.5 < 2/3 x 3
    result = cli(dsn, "--check")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == (
        "FEEDBACK-BACKFILL WARNING - last run 1.50 rows/s < 2.00 (2/3 of the earlier runs' mean)"
        " | coverage=100.00%;;;0;100 failure_rate=0.00%;;5;0;100 rows=20;;;0 pending=0;;;0 failed=0;;;0"
        " data_feedback_coverage=100.00%;;;0;100 lacking_now=0;;;0 promised_lacking=0;;;0 extractor_records=0;;;0"
        " rows_per_s=1.500;;;0"
    )
    out = as_json(dsn)
    assert out["runs"]["throughput"] == {
        "last_finished_id": 4,
        "rows_per_s": 1.5,
        "baseline_rows_per_s": 3.0,
        "baseline_runs": 2,
    }
    assert out["alerts"] == [{"level": "WARNING", "name": "throughput", "value": 1.5, "threshold": 2.0}]
    assert cli(dsn).exit_code == 0  # without --check, the alert is only shown


def test_check_ok_at_exactly_five_percent_and_a_single_run(dsn, archive):
    ids = archive.runs(0, 20)
    for rid in ids[:19]:
        archive.mark(rid, 0, "done", records=1, stats=1)
    archive.mark(ids[19], 0, "failed", "mismatch", stats=1)
    archive.invocation(ago_s=600, elapsed_s=10, examined=20)  # slow or not, nothing to compare to
    result = cli(dsn, "--check")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].startswith(
        "FEEDBACK-BACKFILL OK - progress 95.0% (0 pending, 1 failed), coverage 95.0% | "
    )
    assert "OK        no alert" in cli(dsn).stdout.splitlines()
    out = as_json(dsn)
    assert (out["totals"]["failure_rate"], out["alerts"], out["exit_code"]) == (0.05, [], 0)
    assert out["runs"]["throughput"]["baseline_rows_per_s"] is None


def test_a_zero_row_last_run_raises_no_throughput_warning(dsn, archive):
    for rid in archive.runs(0, 5):
        archive.mark(rid, 0, "no_feedback")
    archive.invocation(ago_s=7200, elapsed_s=100, examined=500)
    archive.invocation(ago_s=3600, elapsed_s=100, examined=0)  # nothing left to do
    assert cli(dsn, "--check").exit_code == 0


def test_project_filter(dsn, archive):
    scenario(archive)
    out = as_json(dsn, "--project", "proj-b")
    assert out["window"]["projects"] == ["proj-b"]
    assert out["totals"] == {
        "rows": 3,
        "examined": 1,
        "done": 1,
        "no_feedback": 0,
        "invalid": 0,
        "failed": 0,
        "pending": 2,
        "records": 1,
        "promised": 1,
        "delivered": 1,
        "coverage": 1 / 3,
        "feedback_coverage_rate": 1.0,
        "failure_rate": 0.0,
    }
    assert [d["run_date"] for d in out["days"]] == [TODAY.isoformat()]
    assert out["status"] == "OK"


def test_before_any_run_everything_is_pending(dsn, archive):
    archive.runs(0, 150)
    archive.runs(3, 50)
    out = as_json(dsn)
    t = out["totals"]
    assert (t["rows"], t["pending"], t["examined"], t["coverage"]) == (200, 200, 0, 0.0)
    assert (t["failure_rate"], t["feedback_coverage_rate"]) == (None, None)
    assert out["runs"] == {
        "count": 0,
        "runner_pid": None,
        "lease": None,
        "last": None,
        # no throughput measured yet; the floor at `backfill run`'s defaults: 2 requests x 1 s
        "eta": {
            "pending": 200,
            "rows_per_s": None,
            "seconds": None,
            "floor_seconds": 2,
            "batch_size": 100,
            "delay_ms": 1000,
        },
        "throughput": {"last_finished_id": None, "rows_per_s": None, "baseline_rows_per_s": None, "baseline_runs": 0},
    }
    assert out["failures"]["max_attempts"] == 3
    lines = cli(dsn).stdout.splitlines()
    assert lines[1] == "progress    0.0%  0 of 200 rows done: enriched, no feedback or invalid"
    assert "last run  none yet" in lines
    assert "ETA       200 pending rows: at best 2s at --delay-ms 1000 (no run measured yet)" in lines


def empty_report(out: dict[str, Any]) -> None:
    assert out["totals"] == {
        "rows": 0,
        "examined": 0,
        "done": 0,
        "no_feedback": 0,
        "invalid": 0,
        "failed": 0,
        "pending": 0,
        "records": 0,
        "promised": 0,
        "delivered": 0,
        "coverage": None,
        "feedback_coverage_rate": None,
        "failure_rate": None,
    }
    assert out["days"] == [] and out["alerts"] == [] and out["status"] == "OK"


def test_empty_table(dsn):
    empty_report(as_json(dsn))
    result = cli(dsn, "--check")
    assert result.exit_code == 0
    (line,) = result.stdout.splitlines()
    assert line.startswith("FEEDBACK-BACKFILL OK - no rows in the window | coverage=U;;;0;100 failure_rate=U;;5;0;100")
    lines = cli(dsn).stdout.splitlines()
    assert "progress       -  no rows in the window" in lines and "(no rows)" in lines


def test_window_without_rows(dsn, archive):
    scenario(archive)
    out = as_json(dsn, "--since", day(40).isoformat(), "--until", day(30).isoformat())
    empty_report(out)
    assert out["runs"]["count"] == 3  # runs are shown whatever the window


def test_revert_holding_the_lease_is_shown_as_what_it_is(dsn, archive):
    """A revert (or reset, verify --fix) holds the lease: not "a new run is starting"."""
    scenario(archive)
    with psycopg.connect(dsn, autocommit=True) as conn:
        hold_lease(conn, "revert", None, 60)
    out = as_json(dsn)
    assert out["runs"]["runner_pid"] is None and out["runs"]["lease"]["command"] == "revert"
    text = cli(dsn).stdout
    assert "a new run is starting" not in text and "a run is starting" not in text
    assert re.search(r"^lease     held by `backfill revert` on db-host-1 \(pid 4242\), heartbeat \d+s ago$", text, re.M)
    verbose = cli(dsn, "-v").stdout
    assert (
        "  lease: held, alive (heartbeat " in verbose and "    by `backfill revert` on db-host-1 (pid 4242)" in verbose
    )


def test_not_migrated(app_dsn):
    for args in ((), ("--json",)):
        result = cli(app_dsn, *args)
        assert result.exit_code == 1
        assert result.stdout == ""
        assert result.stderr == (
            "backfill: error: The backfill tables do not exist: run `backfill db upgrade`"
            " (or `alembic upgrade head` in a checkout) first.\n"
        )
    # --check: the plugin's UNKNOWN (tests/test_output.py)
    assert cli(app_dsn, "--check").exit_code == 3


def test_bad_window_is_a_usage_error(dsn):
    result = cli(dsn, "--since", "yesterday")
    assert result.exit_code == 2 and result.stderr.startswith("backfill: error: --since must be")


def _sessions(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'feedback-backfill'"
        ).fetchone()[0]


def _toast_blocks(dsn: str) -> int:
    """Blocks of runs' TOAST table read or found in cache so far, as the statistics say."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT COALESCE(toast_blks_read, 0) + COALESCE(toast_blks_hit, 0) FROM pg_statio_user_tables"
            " WHERE relname = 'runs'"
        ).fetchone()
        return int(row[0])


def test_reads_no_document(dsn, archive):
    """The report never reads a document: with every document stored out of line (TOAST), the
    report leaves the TOAST table untouched (with and without --project). Its predicates name
    runs.data (the partial indexes' own words) but the indexes answer them: even on 27 rows,
    where the planner would rather read the table, the report prices sequential scans out
    (bench/status_bench.py shows the 1 M-row plans)."""
    scenario(archive)
    # ~10 kB of incompressible text per document: every one goes to the TOAST table
    archive.conn.execute(
        "UPDATE runs SET data = data || jsonb_build_object('padding',"
        " (SELECT string_agg(md5(random()::text || g::text || runs.id::text), '') FROM generate_series(1, 320) AS g))"
    )
    archive.conn.execute("VACUUM ANALYZE runs")
    before = _toast_blocks(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:  # a read of one document does show
        conn.execute("SELECT length(data::text) FROM runs LIMIT 1").fetchone()
        conn.execute("SELECT pg_stat_force_next_flush()")
    after_one = _toast_blocks(dsn)
    assert after_one > before
    for projects in ((), ("proj-a",)):
        backfill.status(Database(dsn), Window.parse("14d", projects=projects))
    wait_for(lambda: _sessions(dsn) == 0, 5, "the status connections to end")  # their statistics come after
    assert _toast_blocks(dsn) == after_one
