"""`backfill status`: how far the backfill is, from the checkpoint and the data, without the API.

Everything comes from indexes: rows per day from ``runs (run_date)`` (or ``(project,
run_date)``), the checkpoint from ``feedback_backfill_status (run_date, state) INCLUDE
(...)``, runs from ``feedback_backfill_invocations`` and ``feedback_backfill_lease``. ``runs.data`` is
never read, so the report stays fast on millions of rows. All queries share one
read-only REPEATABLE READ snapshot. Figures:

* **pending** rows of a day = its rows in ``runs`` - its status rows - its rows settled
  without a checkpoint row (never below 0): rows never examined. A status row whose run the
  app has since deleted still counts as examined.
* **no_feedback** counts, besides the status rows in that state, the rows a project's apply
  settled by proof without a checkpoint row (``backfill.domain.settling``): the counts kept
  on the day's mark (``feedback_backfill_settled.empty``, a row per day), as the runs
  strategy's checkpoint rows would count them.
* **coverage** = (done + no_feedback + invalid) / rows: rows the backfill is through with.
* **feedback_coverage_rate** (the spec's "feedback coverage rate") = examined rows whose
  ``feedback_stats`` count records and that got them (state done) / examined rows whose
  ``feedback_stats`` count records. It covers EXAMINED rows only: the counts of unexamined
  rows would mean reading (detoasting) every document.
* **failure_rate** = (failed + invalid) / examined, as ``backfill run`` counts failures
  (its ``rows_failed`` and exit code 3 include invalid rows).
* **rows_per_s** of a run = rows_examined / (coalesce(finished_at, heartbeat_at) - started_at).

What the rows hold NOW (the extractor keeps re-archiving whole documents), counted from the
partial indexes of ``runs`` (run_date, id), never from a document (see status_data_by_day):

* **lacking**: rows whose ``feedback_records`` is absent or null (runs_feedback_pending_idx).
* **lacking_now**: of them, rows the ledger says we wrote records to: re-archived since
  (the next ``backfill run`` enriches them again).
* **promised** / **promised_lacking**: rows whose ``feedback_stats`` count records
  (runs_feedback_promised_idx), and those of them lacking records.
* **extractor_records**: rows holding the extractor's own reduced records
  (runs_feedback_extractor_idx: a record with ``feedback_source_type``).
* **our_records**: rows the ledger says hold our records, neither lacking nor holding the
  extractor's. A hand edit that keeps the API's shape still counts here: only md5, that is
  the document, tells it, and ``backfill verify`` reads that.
* **other_records**: rows holding records that are neither (rows - lacking -
  extractor_records - our_records): e.g. records written by hand or by another tool.
* **data feedback_coverage_rate** (the spec's Feedback Coverage Rate, from the data) =
  (promised - promised_lacking) / promised: rows holding detailed records among the rows
  whose feedback_stats promise records, examined or not, whoever wrote the records.

These come from index-only scans of runs_feedback_pending_idx, _promised_idx, _missing_idx,
_extractor_idx and feedback_backfill_status_ledger_idx, merged on (run_date, id); with
``--project`` each index entry's ``runs.project`` is read from the table (a heap visit, never
``data``), which is slower (see docs/benchmarks.md). Rows examined before fb0005 (no
``row_id`` in the checkpoint) are matched by run_id, one probe each.

Alerts (the spec's thresholds): CRITICAL when failure_rate > 5 %; WARNING when the last
finished run, if it examined rows, ran below 2/3 of the mean throughput of the earlier runs
that examined rows. Runs are those of the whole database, whatever the window.
Records that stay missing (``missing_records``): WARNING when rows whose feedback_stats
promise records lack them although their run_date ended 6+ hours ago (a follow mode that
stopped, an extractor re-archiving faster than we enrich); CRITICAL when such rows are
12+ days old (LangSmith's retention). A row's age is measured from the end of its run_date
(the indexes hold the date, not the time): a lower bound of how long it has lacked them.

``--json`` prints one object: its keys are described in docs/status-json.md. The renderers
(text, JSON, the --check line, OpenMetrics) are in ``backfill.report``; this module measures.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import fields, replace
from typing import Any

from backfill.archive import gateway as db
from backfill.archive.lease import LEASE_NAME
from backfill.archive.reader import window_params
from backfill.config import Database, Window
from backfill.domain.options import RunOptions
from backfill.domain.status import (
    AT_RISK_AGE_DAYS,
    CRITICAL_FAILURE_RATE,
    DATA_FIGURES,
    FAILED_REASONS,
    INVALID_REASONS,
    LEVELS,
    REASONS,
    RETENTION_DAYS,
    RISK_NOTE,
    WARNING_THROUGHPUT_RATIO,
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

#: Defaults of `backfill run`, for the figures that need a run's parameters before any run.
RUN_DEFAULTS: dict[str, int] = {
    f.name: f.default for f in fields(RunOptions) if isinstance(f.default, int) and not isinstance(f.default, bool)
}
#: Promised records still missing this long after the end of their run_date: WARNING.
MISSING_WARNING_HOURS = 6


# -- the report, from the database ------------------------------------------------------


def status(database: Database, window: Window | None = None) -> StatusReport:
    """The progress report of ``window`` (default: the last 14 days); the API of `backfill status`.

    Read-only and API-free. Raises NotMigrated before `alembic upgrade head`.
    """
    window = window or Window.parse()
    gw = db.connect(database)
    try:
        gw.require_schema()
        gw.execute("status_snapshot")
        lock = gw.one("status_lease", {"name": LEASE_NAME})
        lease = _lease(lock)
        invocations = gw.execute("status_invocations")
        # the newest run is running while a live lease of a `backfill run` names it
        running = lease is not None and lease.alive and lease.command.startswith("run")
        newest = invocations[-1]["id"] if invocations else None
        runs = _invocations(invocations, running and lease is not None and lease.invocation_id == newest)
        last = runs[-1] if runs else None
        params = last.params if last else {}
        max_attempts = _int_param(params, "max_attempts")
        where = {**window_params(window), "max_attempts": max_attempts}
        gw.execute("status_settings", where)
        per_day = {r["run_date"]: r["total"] for r in gw.execute("status_runs_by_day", where)}
        by_day = "status_checkpoint_by_day_projects" if window.projects else "status_checkpoint_by_day"
        checkpoint = gw.execute(by_day, where)
        settled = {r["run_date"]: r["n"] for r in gw.execute("status_settled_empty", where)}
        figures = gw.execute("status_data_by_day", where)
        gw.rollback()  # a read-only transaction: nothing to commit
    finally:
        gw.close()
    as_of: dt.datetime = lock["as_of"]
    totals, failures, days = _tally(per_day, checkpoint, as_of.astimezone(dt.UTC).date(), settled)
    days, data = _data(days, figures)
    eta = Eta(
        pending=totals.pending,
        rows_per_s=last.rows_per_s if last else None,
        batch_size=_int_param(params, "batch_size"),
        delay_ms=_int_param(params, "delay_ms"),
        promised=data.promised_lacking,
    )
    throughput = _throughput(runs)
    return StatusReport(
        window=window,
        as_of=as_of,
        totals=totals,
        failures=failures,
        max_attempts=max_attempts,
        days=days,
        runs_count=len(runs),
        runner_pid=lease.pid if running and lease is not None else None,
        last_run=last,
        eta=eta,
        throughput=throughput,
        alerts=_alerts(totals, throughput) + _missing_alerts(days, as_of),
        data=data,
        lease=lease,
    )


def _lease(row: dict[str, Any]) -> LeaseInfo | None:
    if row["command"] is None:
        return None
    state = "held" if row["alive"] else "released" if row["released"] else "expired"
    return LeaseInfo(
        command=row["command"],
        hostname=row["hostname"],
        pid=row["pid"],
        invocation_id=row["invocation_id"],
        acquired_at=row["acquired_at"],
        heartbeat_at=row["heartbeat_at"],
        expires_at=row["expires_at"],
        state=state,
    )


def _int_param(params: dict[str, Any], name: str) -> int:
    value = params.get(name)
    default = RUN_DEFAULTS[name]
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default


def _invocations(rows: list[dict[str, Any]], lock_held: bool) -> list[Invocation]:
    runs = []
    for i, r in enumerate(rows):
        if r["finished_at"] is not None:
            state = "finished"
        else:
            # Only the newest run can hold the lease: an older unfinished one was killed.
            state = "running" if lock_held and i == len(rows) - 1 else "unfinished"
        runs.append(
            Invocation(
                id=r["id"],
                state=state,
                outcome=r["outcome"],
                message=r["message"],
                started_at=r["started_at"],
                heartbeat_at=r["heartbeat_at"],
                finished_at=r["finished_at"],
                rows_pending_at_start=r["rows_pending_at_start"],
                rows_examined=r["rows_examined"],
                rows_enriched=r["rows_enriched"],
                rows_no_feedback=r["rows_no_feedback"],
                rows_failed=r["rows_failed"],
                records_stored=r["records_stored"],
                api_requests=r["api_requests"],
                api_errors=r["api_errors"],
                params=r["params"] if isinstance(r["params"], dict) else {},
                rate_limit_wait_s=float(r.get("rate_limit_wait_s") or 0.0),
                outage_wait_s=float(r.get("outage_wait_s") or 0.0),
                strategy=r.get("strategy"),
                requests_saved=int(r.get("requests_saved") or 0),
            )
        )
    return runs


def _tally(
    per_day: dict[dt.date, int],
    checkpoint: list[dict[str, Any]],
    today: dt.date,
    settled: dict[dt.date, int] | None = None,
) -> tuple[Totals, dict[str, Failure], list[Day]]:
    by_day: dict[dt.date, Counter[str]] = {d: Counter() for d in per_day}
    for run_date, n in (settled or {}).items():  # examined without feedback, no checkpoint row
        by_day.setdefault(run_date, Counter())["no_feedback"] += n
    failures = {r: Failure() for r in REASONS}
    sums: Counter[str] = Counter()
    for row in checkpoint:
        day = by_day.setdefault(row["run_date"], Counter())
        day[row["state"]] += row["n"]
        sums["records"] += row["records"]
        sums["promised"] += row["promised"]
        sums["delivered"] += row["delivered"]
        if row["reason"] in failures:
            f = failures[row["reason"]]
            failures[row["reason"]] = Failure(
                f.rows + row["n"], f.attempts + row["attempts"], f.at_max_attempts + row["at_max_attempts"]
            )
    days = []
    for run_date in sorted(by_day):
        c, total = by_day[run_date], per_day.get(run_date, 0)
        pending = max(total - sum(c.values()), 0)
        days.append(
            Day(
                run_date=run_date,
                total=total,
                done=c["done"],
                no_feedback=c["no_feedback"],
                invalid=c["invalid"],
                failed=c["failed"],
                pending=pending,
                at_risk=(today - run_date).days >= AT_RISK_AGE_DAYS and (pending + c["failed"]) > 0,
            )
        )
    totals = Totals(
        rows=sum(d.total for d in days),
        done=sum(d.done for d in days),
        no_feedback=sum(d.no_feedback for d in days),
        invalid=sum(d.invalid for d in days),
        failed=sum(d.failed for d in days),
        pending=sum(d.pending for d in days),
        records=sums["records"],
        promised=sums["promised"],
        delivered=sums["delivered"],
    )
    return totals, failures, days


def _data(days: list[Day], figures: list[dict[str, Any]]) -> tuple[list[Day], Data]:
    """Add what the rows hold now (status_data_by_day) to each day, and sum the window."""
    by_day: dict[dt.date, Counter[str]] = {}
    for row in figures:
        by_day.setdefault(row["run_date"], Counter())[row["figure"]] += row["n"]
    out = []
    for d in days:
        c = by_day.get(d.run_date, Counter())
        ours = max(c["ledger"] - c["lacking_now"] - c["ledger_extractor"], 0)
        out.append(
            replace(
                d,
                lacking=c["lacking"],
                lacking_now=c["lacking_now"],
                promised=c["promised"],
                promised_lacking=c["promised_lacking"],
                extractor_records=c["extractor_records"],
                our_records=ours,
            )
        )
    data = Data(
        rows=sum(d.total for d in out),
        **{
            k: sum(getattr(d, k) for d in out)
            for k in ("lacking", "lacking_now", "promised", "promised_lacking", "extractor_records", "our_records")
        },
    )
    return out, data


def _missing_alerts(days: list[Day], as_of: dt.datetime) -> list[Alert]:
    """Promised records missing 6h+ after the end of their run_date (WARNING), at 12+ days (CRITICAL)."""
    today = as_of.astimezone(dt.UTC).date()
    critical = sum(d.promised_lacking for d in days if (today - d.run_date).days >= AT_RISK_AGE_DAYS)
    warning = 0
    for d in days:
        day_end = dt.datetime.combine(d.run_date + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
        if as_of - day_end >= dt.timedelta(hours=MISSING_WARNING_HOURS):
            warning += d.promised_lacking
    alerts = []
    if critical:
        alerts.append(Alert("CRITICAL", "missing_records", critical, AT_RISK_AGE_DAYS))
    if warning - critical > 0:
        alerts.append(Alert("WARNING", "missing_records", warning - critical, MISSING_WARNING_HOURS))
    return alerts


def _throughput(runs: list[Invocation]) -> Throughput:
    finished = [r for r in runs if r.state == "finished"]
    if not finished:
        return Throughput()
    last = finished[-1]
    earlier = [r.rows_per_s for r in runs if r.id < last.id and r.rows_per_s is not None]
    return Throughput(
        last_finished_id=last.id,
        rows_per_s=last.rows_per_s,
        baseline_rows_per_s=sum(earlier) / len(earlier) if earlier else None,
        baseline_runs=len(earlier),
    )


def _alerts(totals: Totals, tp: Throughput) -> list[Alert]:
    alerts = []
    if totals.failure_rate is not None and totals.failure_rate > CRITICAL_FAILURE_RATE:
        alerts.append(Alert("CRITICAL", "failure_rate", totals.failure_rate, CRITICAL_FAILURE_RATE))
    if tp.rows_per_s is not None and tp.baseline_rows_per_s is not None:
        threshold = WARNING_THROUGHPUT_RATIO * tp.baseline_rows_per_s
        if tp.rows_per_s < threshold:
            alerts.append(Alert("WARNING", "throughput", tp.rows_per_s, threshold))
    return alerts


__all__ = [
    "CRITICAL_FAILURE_RATE",
    "WARNING_THROUGHPUT_RATIO",
    "RETENTION_DAYS",
    "AT_RISK_AGE_DAYS",
    "DATA_FIGURES",
    "FAILED_REASONS",
    "INVALID_REASONS",
    "REASONS",
    "LEVELS",
    "RISK_NOTE",
    "Alert",
    "Data",
    "Day",
    "Eta",
    "Failure",
    "Invocation",
    "LeaseInfo",
    "StatusReport",
    "Throughput",
    "Totals",
    "MISSING_WARNING_HOURS",
    "RUN_DEFAULTS",
    "status",
]
