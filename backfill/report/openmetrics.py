"""`backfill status --format openmetrics`: the status report as an OpenMetrics text exposition.

Made for node_exporter's textfile collector (cron writes a ``.prom`` file atomically; see
README "Monitoring"). Every value comes from the ``status.StatusReport`` that `backfill
status` prints, so the exposition, the human report and ``--json`` never disagree. A figure
that is undefined (a rate without a denominator, a run that has not finished) has no
sample rather than a made-up 0 or NaN: an alert rule on it then simply does not fire.

Every metric is a gauge: each is a reading of the database at ``as_of``, not a
counter of this process. Names are prefixed ``feedback_backfill_``; metrics with a unit end
with it (``_seconds``, ``_ratio``) and declare it in ``# UNIT``. Labels-only facts are gauges
named ``*_info`` of value 1 rather than OpenMetrics' ``info`` type, which the Prometheus text
format 0.0.4 parser of node_exporter's textfile collector rejects; its parser skips the
``# UNIT`` and ``# EOF`` lines as comments, so one file serves both.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from backfill.archive.status import LEVELS, StatusReport

PREFIX = "feedback_backfill_"
CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@dataclass
class _Family:
    name: str
    kind: str  # gauge (an "info" is a gauge named *_info of value 1: node_exporter's parser knows no info type)
    help: str
    unit: str = ""
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float | int | None, **labels: object) -> None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        self.samples.append(({k: str(v) for k, v in labels.items()}, value))

    def lines(self) -> list[str]:
        full = PREFIX + self.name
        out = [f"# TYPE {full} {self.kind}", f"# HELP {full} {_escape_help(self.help)}"]
        if self.unit:
            out.append(f"# UNIT {full} {self.unit}")
        for labels, value in self.samples:
            out.append(f"{full}{_labels(labels)} {_number(value)}")
        return out


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float | int) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _epoch(value: dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


#: Adds a family to the exposition: fam(name, help, unit="", kind="gauge").
_Fam = Callable[..., _Family]


def families(report: StatusReport) -> list[_Family]:
    """The metric families of ``report``, in exposition order."""
    fams: list[_Family] = []

    def fam(name: str, help_: str, unit: str = "", kind: str = "gauge") -> _Family:
        f = _Family(name, kind, help_, unit)
        fams.append(f)
        return f

    _window(report, fam)
    _last_run(report, fam)
    _lease_and_alerts(report, fam)
    return fams


def _window(report: StatusReport, fam: _Fam) -> None:
    """The window's rows: checkpoint states, what the data holds, per day."""
    t, d = report.totals, report.data
    window = fam("window_info", "The window the figures cover: run_date since .. until (exclusive), projects (1).")
    window.add(
        1,
        since=report.window.since.isoformat(),
        until=report.window.until.isoformat(),
        projects=",".join(report.window.projects),
    )
    fam("as_of_timestamp_seconds", "The database clock when the report's snapshot was taken.", "seconds").add(
        _epoch(report.as_of)
    )

    rows = fam("rows", "Rows of the window by checkpoint state (pending: never examined).")
    for state in ("done", "no_feedback", "invalid", "failed", "pending"):
        rows.add(getattr(t, state), state=state)
    fam("window_rows", "Rows of the window in runs.").add(t.rows)
    fam("records_stored", "Feedback records the backfill stored in the window's rows (checkpoint).").add(t.records)
    fam("coverage_ratio", "Checkpoint: (done + no_feedback + invalid) / rows of the window.", "ratio").add(t.coverage)
    cov = fam(
        "feedback_coverage_ratio",
        "Rows holding records / rows whose feedback_stats promise records; source=checkpoint covers examined"
        " rows only, source=data every row of the window (the spec's Feedback Coverage Rate).",
        "ratio",
    )
    cov.add(t.feedback_coverage_rate, source="checkpoint")
    cov.add(d.feedback_coverage_rate, source="data")
    fam("failure_ratio", "(failed + invalid) / examined rows of the window (CRITICAL above 0.05).", "ratio").add(
        t.failure_rate
    )
    data = fam("data_rows", "What the window's rows hold now, from the partial indexes of runs (see status).")
    for figure in ("lacking", "lacking_now", "promised", "promised_lacking", "extractor_records", "our_records"):
        data.add(getattr(d, figure), figure=figure)
    data.add(d.other_records, figure="other_records")
    pending = fam("day_pending_rows", "Rows never examined, per run_date of the window (days with rows only).")
    failed = fam("day_failed_rows", "Failed rows (failed + invalid), per run_date of the window.")
    for day in report.days:
        pending.add(day.pending, run_date=day.run_date.isoformat())
        failed.add(day.failed + day.invalid, run_date=day.run_date.isoformat())
    fam("at_risk_days", "run_dates 12+ days old with pending or failed rows (LangSmith retention: 14 days).").add(
        sum(1 for day in report.days if day.at_risk)
    )


def _last_run(report: StatusReport, fam: _Fam) -> None:
    """The invocations: the last run's timestamps, counts, waits; throughput and ETA."""
    run = report.last_run
    fam("runs", "`backfill run` invocations recorded in the database.").add(report.runs_count)
    info = fam("last_run_info", "The last `backfill run`: its invocation id, state and outcome (1).")
    if run is not None:
        info.add(1, id=run.id, state=run.state, outcome=run.outcome or "")
    fam("last_run_start_timestamp_seconds", "When the last run started.", "seconds").add(
        _epoch(run.started_at) if run else None
    )
    fam("last_run_heartbeat_timestamp_seconds", "The last run's latest progress (its invocation row).", "seconds").add(
        _epoch(run.heartbeat_at) if run else None
    )
    fam("last_run_end_timestamp_seconds", "When the last run finished (no sample while it runs).", "seconds").add(
        _epoch(run.finished_at) if run else None
    )
    fam("last_run_duration_seconds", "The last run's elapsed time (until its heartbeat if unfinished).", "seconds").add(
        run.elapsed.total_seconds() if run else None
    )
    last_rows = fam("last_run_rows", "Rows the last run examined, enriched, found without feedback, failed.")
    if run is not None:
        for what in ("examined", "enriched", "no_feedback", "failed"):
            last_rows.add(getattr(run, f"rows_{what}"), outcome=what)
        last_rows.add(run.rows_pending_at_start, outcome="pending_at_start")
    fam("last_run_records_stored", "Feedback records the last run stored.").add(run.records_stored if run else None)
    fam("last_run_rows_per_second", "The last run's throughput: rows examined / elapsed seconds.").add(
        run.rows_per_s if run else None
    )
    fam("last_run_api_requests", "API requests of the last run.").add(run.api_requests if run else None)
    fam("last_run_api_errors", "API requests of the last run that failed.").add(run.api_errors if run else None)
    fam("last_run_rate_limit_wait_seconds", "Seconds the last run waited out rate limits (429).", "seconds").add(
        run.rate_limit_wait_s if run else None
    )
    fam("last_run_outage_wait_seconds", "Seconds the last run backed off failing requests and outages.", "seconds").add(
        run.outage_wait_s if run else None
    )
    tp = fam(
        "throughput_rows_per_second",
        "Rows/s of the last finished run (run=last_finished) and the mean of the runs before it (run=baseline);"
        " WARNING when last_finished < 2/3 of baseline.",
    )
    tp.add(report.throughput.rows_per_s, run="last_finished")
    tp.add(report.throughput.baseline_rows_per_s, run="baseline")
    fam("eta_seconds", "Pending rows / the last run's rows/s.", "seconds").add(report.eta.seconds)


def _lease_and_alerts(report: StatusReport, fam: _Fam) -> None:
    lease = report.lease
    held = fam("lease_held", "1 while a backfill command holds the database's lease (alive), else 0.")
    if lease is None:
        held.add(0, command="", hostname="", pid="")
    else:
        held.add(1 if lease.alive else 0, command=lease.command, hostname=lease.hostname, pid=lease.pid)
    fam("lease_heartbeat_timestamp_seconds", "The lease holder's latest heartbeat.", "seconds").add(
        _epoch(lease.heartbeat_at) if lease else None
    )

    fam("alert_level", "The report's alert level: 0 OK, 1 WARNING, 2 CRITICAL (what `status --check` exits with).").add(
        LEVELS[report.status]
    )
    alert = fam("alert", "Each alert raised (value: its measured value), by name and level.")
    for a in report.alerts:
        alert.add(a.value, name=a.name, level=a.level)


def render(report: StatusReport) -> str:
    """The OpenMetrics text exposition of ``report``, ending with ``# EOF``."""
    lines = [line for f in families(report) for line in f.lines()]
    return "\n".join([*lines, "# EOF"]) + "\n"
