"""What monitoring reads: `status --format openmetrics` (parsed by prometheus_client) and JSON logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as classic_parser
from typer.testing import CliRunner

from backfill.cli import app
from backfill.sandbox.fake_langsmith import FakeLangSmith

from .helpers import invocations, seed, status, wait_for

KEY = "lsv2_monitoring_key_5150"


@pytest.fixture
def fake() -> Iterator[FakeLangSmith]:
    with FakeLangSmith(api_key=KEY) as server:
        yield server


def env(dsn: str, fake: FakeLangSmith) -> dict[str, str]:
    return {"DATABASE_URL": dsn, "LANGSMITH_API_KEY": KEY, "LANGSMITH_ENDPOINT": fake.url}


def metrics(dsn: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """name -> {sorted labels: value}, as prometheus_client's OpenMetrics parser reads them."""
    result = CliRunner().invoke(app, ["status", "--format", "openmetrics"], env={"DATABASE_URL": dsn})
    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith("# EOF\n")
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    # the same file must also pass the classic text format 0.0.4 parser (node_exporter's textfile collector)
    assert {f.name for f in classic_parser(result.stdout)}
    for family in text_string_to_metric_families(result.stdout):
        assert family.name.startswith("feedback_backfill_")
        assert family.documentation
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def one(db: str, sql: str) -> Any:
    with psycopg.connect(db) as conn:
        return conn.execute(sql).fetchone()[0]


def test_openmetrics_values_equal_the_database(dsn, fake):
    seed(dsn, 90, days=4)
    for run_id in _ids(dsn)[:3]:  # three runs the API keeps failing: failed rows
        fake.poison(run_id)
    result = CliRunner().invoke(
        app, ["run", "--delay-ms", "0", "--limit", "60", "--no-progress", "--max-attempts", "1"], env=env(dsn, fake)
    )
    assert result.exit_code == 3, result.stderr
    m = metrics(dsn)

    states = {
        s: one(dsn, f"SELECT count(*) FROM feedback_backfill_status WHERE state = '{s}'")
        for s in ("done", "no_feedback", "invalid", "failed")
    }
    assert states["failed"] == 3
    rows = m["feedback_backfill_rows"]
    for state, n in states.items():
        assert rows[(("state", state),)] == n
    assert rows[(("state", "pending"),)] == 90 - sum(states.values()) == 30
    assert m["feedback_backfill_window_rows"][()] == one(dsn, "SELECT count(*) FROM runs") == 90
    stored = one(dsn, "SELECT coalesce(sum(records), 0) FROM feedback_backfill_status")
    assert m["feedback_backfill_records_stored"][()] == stored > 0
    assert m["feedback_backfill_coverage_ratio"][()] == pytest.approx((states["done"] + states["no_feedback"]) / 90)
    assert m["feedback_backfill_failure_ratio"][()] == pytest.approx(3 / 60)
    promised = one(dsn, "SELECT count(*) FROM runs WHERE data @? '$.feedback_stats.* ? (@.n > 0)'")
    holding = one(
        dsn,
        "SELECT count(*) FROM runs WHERE data @? '$.feedback_stats.* ? (@.n > 0)'"
        " AND jsonb_typeof(data -> 'feedback_records') = 'array'",
    )
    assert m["feedback_backfill_feedback_coverage_ratio"][(("source", "data"),)] == pytest.approx(holding / promised)
    assert m["feedback_backfill_data_rows"][(("figure", "promised"),)] == promised

    inv = invocations(dsn)[-1]
    assert m["feedback_backfill_runs"][()] == 1
    assert (
        m["feedback_backfill_last_run_info"][
            (("id", str(inv["id"])), ("outcome", inv["outcome"]), ("state", "finished"))
        ]
        == 1
    )
    assert m["feedback_backfill_last_run_start_timestamp_seconds"][()] == pytest.approx(inv["started_at"].timestamp())
    assert m["feedback_backfill_last_run_end_timestamp_seconds"][()] == pytest.approx(inv["finished_at"].timestamp())
    assert m["feedback_backfill_last_run_api_requests"][()] == inv["api_requests"] > 0
    assert m["feedback_backfill_last_run_api_errors"][()] == inv["api_errors"] > 0
    assert m["feedback_backfill_last_run_rate_limit_wait_seconds"][()] == inv["rate_limit_wait_s"]
    assert m["feedback_backfill_last_run_rows"][(("outcome", "examined"),)] == inv["rows_examined"] == 60
    elapsed = (inv["finished_at"] - inv["started_at"]).total_seconds()
    assert m["feedback_backfill_last_run_rows_per_second"][()] == pytest.approx(60 / elapsed)
    # the run is over: the lease was released
    assert (
        m["feedback_backfill_lease_held"][
            (("command", "run"), ("hostname", os.uname().nodename), ("pid", str(inv_pid(dsn))))
        ]
        == 0
    )
    # 3/60 failed is 5 %, not above: no failure_rate alert; but promised rows of days that ended 6h+ ago
    # still lack records (the 30 pending rows, and the 3 failed): WARNING missing_records
    late = one(
        dsn,
        "SELECT count(*) FROM runs WHERE data @? '$.feedback_stats.* ? (@.n > 0)'"
        " AND COALESCE(jsonb_typeof(data -> 'feedback_records'), 'null') = 'null'"
        " AND (run_date + 1)::timestamp AT TIME ZONE 'UTC' + interval '6 hours' <= now()",
    )
    alerts = m.get("feedback_backfill_alert", {})
    assert alerts == ({(("level", "WARNING"), ("name", "missing_records")): late} if late else {})
    assert m["feedback_backfill_alert_level"][()] == (1 if late else 0)


def inv_pid(dsn: str) -> int:
    return int(one(dsn, "SELECT pid FROM feedback_backfill_lease"))


def _ids(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT run_id FROM runs ORDER BY run_date, id")]


def test_openmetrics_alert_level_critical_over_5_percent_failures(dsn, fake):
    seed(dsn, 20, days=1)
    for run_id in _ids(dsn)[:4]:
        fake.poison(run_id)
    result = CliRunner().invoke(
        app, ["run", "--delay-ms", "0", "--no-progress", "--max-attempts", "1"], env=env(dsn, fake)
    )
    assert result.exit_code == 3
    m = metrics(dsn)
    assert m["feedback_backfill_alert_level"][()] == 2
    assert m["feedback_backfill_alert"][(("level", "CRITICAL"), ("name", "failure_rate"))] == pytest.approx(4 / 20)


def test_openmetrics_before_any_run_has_no_made_up_values(dsn):
    m = metrics(dsn)
    assert m["feedback_backfill_window_rows"][()] == 0
    assert "feedback_backfill_coverage_ratio" not in m  # 0 rows: undefined, no sample
    assert "feedback_backfill_last_run_start_timestamp_seconds" not in m
    assert m["feedback_backfill_lease_held"][(("command", ""), ("hostname", ""), ("pid", ""))] == 0


def test_openmetrics_refuses_json_or_check(dsn):
    result = CliRunner().invoke(app, ["status", "--format", "openmetrics", "--json"], env={"DATABASE_URL": dsn})
    assert result.exit_code == 2
    assert result.stderr.strip() == "backfill: error: --format openmetrics cannot be combined with --json or --check"
    # with --check, the refusal is the plugin's one UNKNOWN line (exit 3), not a usage error read as CRITICAL
    result = CliRunner().invoke(app, ["status", "--format", "openmetrics", "--check"], env={"DATABASE_URL": dsn})
    assert (result.exit_code, result.stderr) == (3, "")
    assert result.stdout == (
        "FEEDBACK-BACKFILL UNKNOWN - --format openmetrics cannot be combined with --json or --check\n"
    )


def _popen(dsn: str, fake: FakeLangSmith, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "backfill", "run", "--delay-ms", "0", "--log-format", "json", *args],
        env={**os.environ, **env(dsn, fake), "LANGSMITH_CONFIG_FILE": os.devnull},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_json_logs_one_object_per_line(dsn, fake):
    seed(dsn, 25)
    proc = _popen(dsn, fake, "--batch-size", "10")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "\x1b" not in err and "\r" not in err  # no ANSI, no progress bar on a pipe
    lines = [json.loads(line) for line in err.splitlines()]  # every line is JSON
    # auto's choice comes right after the start: the one project of 25 rows is asked run by run
    assert [e["event"] for e in lines] == ["run_window", "run_started", "strategy", "strategy_project", "run_finished"]
    assert lines[3]["project"] == "proj-a" and lines[3]["strategy"] == "runs"
    inv = invocations(dsn)[-1]
    started, finished = lines[1], lines[4]
    assert started["invocation_id"] == finished["invocation_id"] == inv["id"]
    assert started["pending"] == 25 and started["level"] == "INFO" and started["ts"].endswith("Z")
    assert finished["rows_examined"] == inv["rows_examined"] == 25 == len(status(dsn))
    assert finished["records_stored"] == inv["records_stored"]
    assert finished["api_requests"] == inv["api_requests"] == 3
    assert finished["exit_code"] == 0 and finished["outcome"] == "completed" and finished["elapsed_s"] > 0


def test_json_logs_of_an_error(dsn, fake):
    seed(dsn, 5)
    proc = subprocess.Popen(
        [sys.executable, "-m", "backfill", "run", "--log-format", "json"],
        env={**os.environ, **env(dsn, fake), "LANGSMITH_API_KEY": "wrong_key_0000"},
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    last = json.loads(err.splitlines()[-1])
    assert last["event"] == "error" and last["level"] == "ERROR" and last["error"] == "ApiAuthError"


def test_json_logs_of_follow(dsn, fake):
    seed(dsn, 5)
    proc = _popen(dsn, fake, "--follow", "--interval", "1s")
    wait_for(lambda: len(status(dsn)) == 5, 20, "the first pass to examine the 5 rows")
    wait_for(lambda: invocations(dsn)[0]["finished_at"] is not None, 20, "the first pass to finish")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in err.splitlines()]
    names = [e["event"] for e in events]
    assert names[0] == "follow_started" and names[-1] == "follow_stopped"
    passes = [e for e in events if e["event"] == "pass_finished"]
    assert passes and passes[0]["rows_examined"] == 5 and passes[0]["invocation_id"] == invocations(dsn)[0]["id"]
