"""`backfill status` rendered (``backfill.report``) from a ``StatusReport`` built by hand: the text
report, the --check line, the --json document and the OpenMetrics exposition, line for line."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from backfill.config import Window
from backfill.domain.status import (
    REASONS,
    Alert,
    Data,
    Day,
    Eta,
    Failure,
    Invocation,
    LeaseInfo,
    StatusReport,
    Throughput,
    Totals,
)
from backfill.report import nagios, openmetrics, status_json, text

AS_OF = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
T10 = dt.datetime(2026, 11, 30, 10, 0, tzinfo=dt.UTC)
MIN = dt.timedelta(minutes=1)

LAST_RUN = Invocation(
    id=4,
    state="finished",
    outcome="completed_with_failures",
    message=None,
    started_at=T10,
    heartbeat_at=T10 + 20 * MIN,
    finished_at=T10 + 20 * MIN,
    rows_pending_at_start=1000,
    rows_examined=850,
    rows_enriched=600,
    rows_no_feedback=200,
    rows_failed=50,
    records_stored=1500,
    api_requests=120,
    api_errors=6,
    params={"since": "2026-11-17", "until": "2026-12-01", "projects": ["proj-a", "proj-b"], "batch_size": 100}
    | {"delay_ms": 1000, "max_attempts": 3, "api_key": "never shown"},
    rate_limit_wait_s=30.0,
    outage_wait_s=95.0,
    strategy="mixed",
    requests_saved=40,
)
LEASE = LeaseInfo("run", "db-host-1", 4242, 4, T10, T10 + 20 * MIN, T10 + 21 * MIN, "released")

#: 1,000 rows over two days, a finished run with failures, a warning and a critical alert.
FULL = StatusReport(
    window=Window(dt.date(2026, 11, 17), dt.date(2026, 12, 1), ("proj-a", "proj-b")),
    as_of=AS_OF,
    totals=Totals(
        rows=1000,
        done=600,
        no_feedback=200,
        invalid=10,
        failed=40,
        pending=150,
        records=1500,
        promised=700,
        delivered=650,
    ),
    failures={r: Failure() for r in REASONS}
    | {"api_error": Failure(30, 45, 2), "mismatch": Failure(10, 20, 1)}
    | {"invalid_run_id": Failure(6, 6, 0), "not_an_object": Failure(4, 4, 0)},
    max_attempts=3,
    days=[
        Day(dt.date(2026, 11, 17), 500, 300, 100, 10, 40, 50, True, 90, 5, 400, 30, 20, 300),
        Day(dt.date(2026, 11, 29), 500, 300, 100, 0, 0, 100, False, 250, 0, 300, 20, 0, 300),
    ],
    runs_count=4,
    runner_pid=None,
    last_run=LAST_RUN,
    eta=Eta(pending=150, rows_per_s=850 / 1200, batch_size=100, delay_ms=1000),
    throughput=Throughput(last_finished_id=4, rows_per_s=850 / 1200, baseline_rows_per_s=1.5, baseline_runs=3),
    alerts=[Alert("WARNING", "throughput", 850 / 1200, 1.0), Alert("CRITICAL", "failure_rate", 50 / 850, 0.05)],
    data=Data(
        rows=1000, lacking=340, lacking_now=5, promised=700, promised_lacking=50, extractor_records=20, our_records=600
    ),
    lease=LEASE,
)

#: A window without rows, before any run.
EMPTY = StatusReport(
    window=Window(dt.date(2026, 11, 17), dt.date(2026, 12, 1)),
    as_of=AS_OF,
    totals=Totals(),
    failures={r: Failure() for r in REASONS},
    max_attempts=3,
    days=[],
    runs_count=0,
    runner_pid=None,
    last_run=None,
    eta=Eta(pending=0, rows_per_s=None, batch_size=100, delay_ms=1000),
    throughput=Throughput(),
)

FULL_TEXT = """\
feedback-backfill: run_date 2026-11-17 to 2026-11-30 inclusive, projects proj...
progress   81.0%  810 of 1,000 rows done: enriched, no feedback or invalid
coverage   92.9%  650 of 700 rows hold the records their feedback_stats count

run_date        rows  enriched   no fb invalid  failed pending missing
2026-11-17       500       300     100      10      40      50      30  at risk
2026-11-29       500       300     100       0       0     100      20
total          1,000       600     200      10      40     150      50
at risk   12+ days old with rows left: LangSmith keeps base traces 14 days
failures  api_error 30 (2 at max attempts), mismatch 10 (1 at max attempts),
          invalid_run_id 6, not_an_object 4

last run  #4 completed with failures 2026-11-30 10:20 UTC after 20m 00s
          850 rows (0.71/s), 1,500 records, 120 requests (6 failed)
          strategy mixed: 40 requests saved against run by run
          waited 30s on rate limits (429), 1m 35s on API failures and outages
ETA       150 pending rows: 3m 32s at 0.71 rows/s (at best 2s at --delay-ms
          1000)
CRITICAL  failure rate 5.9% > 5%
WARNING   last run 0.71 rows/s < 1.00 (2/3 of the earlier runs' mean)"""


def test_the_text_report_of_a_window_with_a_finished_run_failures_and_alerts() -> None:
    assert text.lines(FULL) == FULL_TEXT.split("\n")


def test_the_verbose_report_adds_the_data_the_failures_by_reason_and_the_runs() -> None:
    lines = text.lines(FULL, verbose=True)
    assert lines[:7] == FULL_TEXT.split("\n")[:7]
    data = lines.index("What the rows hold now          rows  (from the indexes, not the checkpoint)")
    assert lines[data + 1 : data + 8] == [
        "  lacking records                340  feedback_records absent or null",
        "    re-archived since              5  we had enriched them; next run redoes",
        "  our records                    600  the API's, written by the backfill",
        "  extractor's records             20  its reduced shape; left as they are",
        "  other records                   40  neither (by hand, another tool)",
        "  promised records               700  feedback_stats count feedback",
        "    missing them                  50",
    ]
    failures = lines.index("Failures by reason        rows  attempts    at max (3)")
    assert lines[failures + 1 : failures + 6] == [
        "  api_error                 30        45             2",
        "  mismatch                  10        20             1",
        "  unstorable                 0         0             0",
        "  invalid_run_id             6         6             0",
        "  not_an_object              4         4             0",
    ]
    runs = lines.index("runs      4 so far, all windows")
    assert lines[runs - 2 : runs + 5] == [
        "  lease: free, released 2026-11-30 10:21:00 UTC",
        "    by `backfill run` on db-host-1 (pid 4242)",
        "runs      4 so far, all windows",
        "          last run started 2026-11-30 10:00:00 UTC; API error rate 5.0%",
        "speed     run #4 0.71 rows/s, mean of 3 earlier runs 1.50",
        "ETA       150 pending rows: 3m 32s at 0.71 rows/s (at best 2s at --delay-ms 1000",
        "          --batch-size 100)",
    ]
    assert "so their feedback may soon be unreachable: a risk, not a certainty." in lines  # the whole risk note


def test_the_text_report_of_an_empty_window_before_any_run() -> None:
    assert text.lines(EMPTY) == [
        "feedback-backfill: run_date 2026-11-17 to 2026-11-30 inclusive, all projects",
        "progress       -  no rows in the window",
        "coverage       -  no row's feedback_stats count feedback",
        "",
        "run_date        rows  enriched   no fb invalid  failed pending missing",
        "(no rows)",
        "",
        "last run  none yet",
        "ETA       no pending rows",
        "OK        no alert",
    ]


def test_a_run_in_progress_and_the_lease_it_holds() -> None:
    seconds = dt.timedelta(seconds=1)
    running = dataclasses.replace(
        LAST_RUN, state="running", outcome=None, finished_at=None, heartbeat_at=AS_OF - 90 * seconds
    )
    held = dataclasses.replace(LEASE, heartbeat_at=AS_OF - 20 * seconds, expires_at=AS_OF + 2 * MIN, state="held")
    report = dataclasses.replace(FULL, last_run=running, runner_pid=4242, lease=held)
    lines = text.lines(report)
    start = lines.index("last run  #4 running on db-host-1 (pid 4242) for 1h 58m, heartbeat 1m 30s ago")
    assert lines[start + 1] == "          850 rows (0.12/s), 1,500 records, 120 requests (6 failed)"
    assert [line for line in text.lines(report, verbose=True) if "lease" in line or "(pid 4242) since" in line] == [
        "  lease: held, alive (heartbeat 20s ago, expires in 2m 00s)",
        "    by `backfill run` on db-host-1 (pid 4242) since 10:00:00 UTC",
    ]
    expired = text.lines(dataclasses.replace(FULL, lease=dataclasses.replace(LEASE, state="expired")), verbose=True)
    assert "  lease: free, expired 1h 39m ago without a release (holder killed?)" in expired


def test_every_line_fits_80_columns_and_a_long_scope_is_cut() -> None:
    projects = tuple(f"project-{i}" for i in range(9))
    many = dataclasses.replace(FULL, window=dataclasses.replace(FULL.window, projects=projects))
    huge = dataclasses.replace(FULL, totals=dataclasses.replace(FULL.totals, rows=1_234_567_890))
    for report in (FULL, EMPTY, many, huge):
        for verbose in (False, True):
            assert max(len(line) for line in text.lines(report, verbose=verbose)) <= 80
    head = text.lines(many)[0]
    assert head.startswith("feedback-backfill: run_date 2026-11-17 to 2026-11-30 inclusive, projects proj")
    assert head.endswith("...") and len(head) <= 80


def test_the_check_line_for_nagios() -> None:
    perf = (
        "coverage=81.00%;;;0;100 failure_rate=5.88%;;5;0;100 rows=1000;;;0 pending=150;;;0 failed=50;;;0"
        " data_feedback_coverage=92.86%;;;0;100 lacking_now=5;;;0 promised_lacking=50;;;0 extractor_records=20;;;0"
    )
    assert nagios.check_line(FULL) == (
        "FEEDBACK-BACKFILL CRITICAL - failure rate 5.9% > 5%; last run 0.71 rows/s < 1.00 (2/3 of the earlier"
        f" runs' mean) | {perf} rows_per_s=0.708;;;0"
    )  # the worst alert first
    assert nagios.check_line(dataclasses.replace(FULL, alerts=[], throughput=Throughput())) == (
        f"FEEDBACK-BACKFILL OK - progress 81.0% (150 pending, 50 failed), coverage 92.9% | {perf}"
    )
    assert nagios.check_line(EMPTY) == (
        "FEEDBACK-BACKFILL OK - no rows in the window | coverage=U;;;0;100 failure_rate=U;;5;0;100 rows=0;;;0"
        " pending=0;;;0 failed=0;;;0 data_feedback_coverage=U;;;0;100 lacking_now=0;;;0 promised_lacking=0;;;0"
        " extractor_records=0;;;0"
    )
    assert (FULL.exit_code, EMPTY.exit_code) == (2, 0)
    warning = dataclasses.replace(FULL, alerts=FULL.alerts[:1])
    assert (
        nagios.check_line(warning).startswith("FEEDBACK-BACKFILL WARNING - last run 0.71 rows/s")
        and warning.exit_code == 1
    )


def test_the_json_document() -> None:
    doc = status_json.to_json(FULL)
    assert json.loads(json.dumps(doc)) == doc  # plain JSON, nothing to convert
    assert list(doc) == [
        "window",
        "as_of",
        "totals",
        "data",
        "failures",
        "runs",
        "days",
        "alerts",
        "status",
        "exit_code",
    ]
    assert doc["window"] == {"since": "2026-11-17", "until": "2026-12-01", "projects": ["proj-a", "proj-b"]}
    assert doc["as_of"] == "2026-11-30T12:00:00+00:00" and (doc["status"], doc["exit_code"]) == ("CRITICAL", 2)
    assert doc["totals"] == {
        "rows": 1000,
        "examined": 850,
        "done": 600,
        "no_feedback": 200,
        "invalid": 10,
        "failed": 40,
        "pending": 150,
        "records": 1500,
        "promised": 700,
        "delivered": 650,
        "coverage": 0.81,
        "feedback_coverage_rate": 650 / 700,
        "failure_rate": 50 / 850,
    }
    assert list(doc["data"]) == [
        "rows",
        "lacking",
        "lacking_now",
        "promised",
        "promised_lacking",
        "extractor_records",
        "our_records",
        "other_records",
        "feedback_coverage_rate",
    ]
    assert doc["data"]["other_records"] == 40
    assert doc["failures"]["max_attempts"] == 3 and list(doc["failures"]["reasons"]) == list(REASONS)
    assert doc["failures"]["reasons"]["api_error"] == {"rows": 30, "attempts": 45, "at_max_attempts": 2}
    runs = doc["runs"]
    assert list(runs) == ["count", "runner_pid", "lease", "last", "eta", "throughput"]
    assert runs["lease"] == {
        "command": "run",
        "hostname": "db-host-1",
        "pid": 4242,
        "invocation_id": 4,
        "acquired_at": "2026-11-30T10:00:00+00:00",
        "heartbeat_at": "2026-11-30T10:20:00+00:00",
        "expires_at": "2026-11-30T10:21:00+00:00",
        "state": "released",
        "alive": False,
    }
    last = runs["last"]
    assert last["elapsed_ms"] == 1_200_000 and last["api_error_rate"] == 0.05 and last["finished_at"] is not None
    assert last["params"] == {  # only these: the rest of the row's params (secrets included) stay out
        "since": "2026-11-17",
        "until": "2026-12-01",
        "projects": ["proj-a", "proj-b"],
        "batch_size": 100,
        "delay_ms": 1000,
        "max_attempts": 3,
    }
    assert runs["eta"] == {
        "pending": 150,
        "rows_per_s": 850 / 1200,
        "seconds": 212,
        "floor_seconds": 2,
        "batch_size": 100,
        "delay_ms": 1000,
    }
    assert runs["throughput"] == {
        "last_finished_id": 4,
        "rows_per_s": 850 / 1200,
        "baseline_rows_per_s": 1.5,
        "baseline_runs": 3,
    }
    assert [d["run_date"] for d in doc["days"]] == ["2026-11-17", "2026-11-29"]
    assert list(doc["days"][0]) == [
        "run_date",
        "total",
        "done",
        "no_feedback",
        "invalid",
        "failed",
        "pending",
        "at_risk",
        "lacking",
        "lacking_now",
        "promised",
        "promised_lacking",
        "extractor_records",
        "our_records",
    ]
    assert doc["alerts"][1] == {"level": "CRITICAL", "name": "failure_rate", "value": 50 / 850, "threshold": 0.05}


def test_the_json_document_of_an_empty_window_says_null_where_nothing_is_known() -> None:
    doc = status_json.to_json(EMPTY)
    assert doc["totals"]["coverage"] is None and doc["totals"]["failure_rate"] is None
    assert doc["runs"]["last"] is None and doc["runs"]["lease"] is None and doc["runs"]["eta"]["seconds"] == 0
    assert doc["days"] == [] and doc["alerts"] == [] and (doc["status"], doc["exit_code"]) == ("OK", 0)


def families(report: StatusReport) -> dict[str, list[str]]:
    """The exposition's lines per metric (TYPE, HELP, UNIT and samples), by name."""
    out: dict[str, list[str]] = {}
    for line in openmetrics.render(report).splitlines():
        if line != "# EOF":
            name = line.split()[2] if line.startswith("#") else line.split("{")[0].split()[0]
            out.setdefault(name.removeprefix("feedback_backfill_"), []).append(line)
    return out


def test_the_openmetrics_exposition() -> None:
    exposition = openmetrics.render(FULL)
    assert exposition.endswith("\n# EOF\n")
    parsed = {f.name: f for f in text_string_to_metric_families(exposition)}  # a strict parser accepts it
    fams = families(FULL)
    assert all(f.type == "gauge" for f in parsed.values())
    assert sorted(parsed) == sorted(f"feedback_backfill_{name}" for name in fams) and len(fams) == 31
    assert fams["rows"] == [
        "# TYPE feedback_backfill_rows gauge",
        "# HELP feedback_backfill_rows Rows of the window by checkpoint state (pending: never examined).",
        'feedback_backfill_rows{state="done"} 600',
        'feedback_backfill_rows{state="no_feedback"} 200',
        'feedback_backfill_rows{state="invalid"} 10',
        'feedback_backfill_rows{state="failed"} 40',
        'feedback_backfill_rows{state="pending"} 150',
    ]
    assert fams["coverage_ratio"][2:] == [
        "# UNIT feedback_backfill_coverage_ratio ratio",
        "feedback_backfill_coverage_ratio 0.81",
    ]
    assert fams["window_info"][2:] == [
        'feedback_backfill_window_info{since="2026-11-17",until="2026-12-01",projects="proj-a,proj-b"} 1'
    ]
    assert fams["as_of_timestamp_seconds"][-1] == f"feedback_backfill_as_of_timestamp_seconds {AS_OF.timestamp()!r}"
    assert fams["day_failed_rows"][2:] == [
        'feedback_backfill_day_failed_rows{run_date="2026-11-17"} 50',
        'feedback_backfill_day_failed_rows{run_date="2026-11-29"} 0',
    ]
    assert fams["last_run_info"][2:] == [
        'feedback_backfill_last_run_info{id="4",state="finished",outcome="completed_with_failures"} 1'
    ]
    assert fams["last_run_duration_seconds"][-1] == "feedback_backfill_last_run_duration_seconds 1200.0"
    assert fams["eta_seconds"][-1] == "feedback_backfill_eta_seconds 212"
    assert fams["lease_held"][2:] == ['feedback_backfill_lease_held{command="run",hostname="db-host-1",pid="4242"} 0']
    assert fams["alert_level"][2:] == ["feedback_backfill_alert_level 2"]
    assert fams["alert"][2:] == [
        f'feedback_backfill_alert{{name="throughput",level="WARNING"}} {850 / 1200!r}',
        f'feedback_backfill_alert{{name="failure_rate",level="CRITICAL"}} {50 / 850!r}',
    ]


def test_a_figure_that_is_not_known_has_no_sample() -> None:
    fams = families(EMPTY)
    samples = {name for name, lines in fams.items() if any(not line.startswith("#") for line in lines)}
    unknown = {name for name in fams if name not in samples}
    assert unknown == {
        "coverage_ratio",
        "feedback_coverage_ratio",
        "failure_ratio",
        "day_pending_rows",
        "day_failed_rows",
        "last_run_info",
        "last_run_start_timestamp_seconds",
        "last_run_heartbeat_timestamp_seconds",
        "last_run_end_timestamp_seconds",
        "last_run_duration_seconds",
        "last_run_rows",
        "last_run_records_stored",
        "last_run_rows_per_second",
        "last_run_api_requests",
        "last_run_api_errors",
        "last_run_rate_limit_wait_seconds",
        "last_run_outage_wait_seconds",
        "throughput_rows_per_second",
        "lease_heartbeat_timestamp_seconds",
        "alert",
    }
    assert fams["lease_held"][2:] == ['feedback_backfill_lease_held{command="",hostname="",pid=""} 0']
    assert fams["eta_seconds"][-1] == "feedback_backfill_eta_seconds 0"
    # a label value is escaped
    odd = dataclasses.replace(EMPTY, window=dataclasses.replace(EMPTY.window, projects=('a "b"\\c',)))
    assert families(odd)["window_info"][-1].endswith('projects="a \\"b\\"\\\\c"} 1')
