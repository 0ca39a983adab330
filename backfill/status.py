"""`backfill status`: how far the backfill is, from the checkpoint and the data, without the API.

Everything comes from indexes: rows per day from ``runs (run_date)`` (or ``(project,
run_date)``), the checkpoint from ``feedback_backfill_status (run_date, state) INCLUDE
(...)``, runs from ``feedback_backfill_invocations`` and ``feedback_backfill_lease``. ``runs.data`` is
never read, so the report stays fast on millions of rows. All queries share one
read-only REPEATABLE READ snapshot. Figures:

* **pending** rows of a day = its rows in ``runs`` - its status rows (never below 0): rows
  never examined. A status row whose run the app has since deleted still counts as examined.
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

``--json`` prints one object with these keys (integers exact; floats only for rates,
null when undefined, e.g. a division by zero; timestamps ISO 8601; dates YYYY-MM-DD):

``window``        since, until (exclusive), projects (list; empty = all)
``as_of``         the database clock when the snapshot was taken
``totals``        rows, examined, done, no_feedback, invalid, failed, pending, records
                  (feedback records stored), promised (examined rows whose feedback_stats
                  count records), delivered (those of them done), coverage,
                  feedback_coverage_rate, failure_rate
``failures``      max_attempts (of the last run, default 3), reasons: {api_error, mismatch,
                  unstorable, invalid_run_id, not_an_object: {rows, attempts,
                  at_max_attempts}}
``runs``          count, runner_pid (process id of a live `backfill run` holding the lease,
                  or null), lease (null if never taken, else: command (run, run --refetch,
                  verify --fix, revert, reset), hostname, pid, invocation_id, acquired_at,
                  heartbeat_at, expires_at, state held | expired (holder killed or cut
                  off) | released, alive), last (null before any run, else: id, state
                  running | finished | unfinished (finished_at NULL and no live lease:
                  killed?), outcome, message,
                  started_at, heartbeat_at, finished_at, elapsed_ms, rows_pending_at_start,
                  rows_examined, rows_enriched, rows_no_feedback, rows_failed,
                  records_stored, api_requests, api_errors, rows_per_s, api_error_rate,
                  rate_limit_wait_s (seconds waited out on 429s), outage_wait_s (seconds
                  backing off failing requests and probing through API outages),
                  params {since, until, projects, batch_size, delay_ms, max_attempts}),
                  eta {pending, rows_per_s, seconds, floor_seconds, batch_size, delay_ms}:
                  seconds at the last run's throughput (null without one), floor_seconds
                  = ceil(pending / batch_size) x delay_ms (the last run's, else the defaults),
                  throughput {last_finished_id, rows_per_s, baseline_rows_per_s,
                  baseline_runs}
``data``          what the rows hold now: rows, lacking, lacking_now, promised,
                  promised_lacking, extractor_records, our_records, other_records,
                  feedback_coverage_rate (the spec's, from the data; null without promised rows)
``days``          [{run_date, total, done, no_feedback, invalid, failed, pending, at_risk,
                  lacking, lacking_now, promised, promised_lacking, extractor_records,
                  our_records}], oldest first, days with rows only; at_risk: run_date at
                  least 12 days old with pending or failed rows (LangSmith keeps base traces
                  14 days; runs that received feedback get 400-day retention: a risk, not a
                  certainty)
``alerts``        [{level WARNING | CRITICAL, name failure_rate | throughput |
                  missing_records, value, threshold}]: for missing_records, value = rows,
                  threshold = hours (WARNING, 6) or days (CRITICAL, 12)
``status``        OK | WARNING | CRITICAL; ``exit_code`` 0 | 1 | 2 (what --check exits with)
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from typing import Any

from . import db
from .config import Database, Window
from .runner import RunOptions

#: Defaults of `backfill run`, for the figures that need a run's parameters before any run.
RUN_DEFAULTS: dict[str, int] = {
    f.name: f.default for f in fields(RunOptions) if isinstance(f.default, int) and not isinstance(f.default, bool)
}
#: The spec's alert thresholds.
CRITICAL_FAILURE_RATE = 0.05
WARNING_THROUGHPUT_RATIO = 2 / 3
#: LangSmith deletes base traces after 14 days; a day this old with rows left is at risk.
RETENTION_DAYS = 14
AT_RISK_AGE_DAYS = 12
#: Promised records still missing this long after the end of their run_date: WARNING.
MISSING_WARNING_HOURS = 6
#: The figures of status_data_by_day, per day.
DATA_FIGURES = (
    "lacking",
    "lacking_now",
    "promised",
    "promised_lacking",
    "extractor_records",
    "ledger",
    "ledger_extractor",
)

FAILED_REASONS = ("api_error", "mismatch", "unstorable")
INVALID_REASONS = ("invalid_run_id", "not_an_object")
REASONS = FAILED_REASONS + INVALID_REASONS
LEVELS = {"OK": 0, "WARNING": 1, "CRITICAL": 2}

RISK_NOTE = (
    f"at risk: run_date {AT_RISK_AGE_DAYS}+ days old with pending or failed rows. LangSmith keeps",
    f"base traces {RETENTION_DAYS} days (runs that received feedback get 400-day retention),",
    "so their feedback may soon be unreachable: a risk, not a certainty.",
)


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass(frozen=True)
class Totals:
    """The window's rows by checkpoint state."""

    rows: int = 0
    done: int = 0
    no_feedback: int = 0
    invalid: int = 0
    failed: int = 0
    pending: int = 0
    records: int = 0
    promised: int = 0
    delivered: int = 0

    @property
    def examined(self) -> int:
        return self.done + self.no_feedback + self.invalid + self.failed

    @property
    def coverage(self) -> float | None:
        # Status rows of runs deleted since can push it past 1: it is a share, cap it.
        rate = _rate(self.done + self.no_feedback + self.invalid, self.rows)
        return None if rate is None else min(rate, 1.0)

    @property
    def feedback_coverage_rate(self) -> float | None:
        return _rate(self.delivered, self.promised)

    @property
    def failure_rate(self) -> float | None:
        return _rate(self.failed + self.invalid, self.examined)


@dataclass(frozen=True)
class Failure:
    """Rows of one failure reason, their attempts, and how many reached max_attempts."""

    rows: int = 0
    attempts: int = 0
    at_max_attempts: int = 0


@dataclass(frozen=True)
class Day:
    run_date: dt.date
    total: int
    done: int
    no_feedback: int
    invalid: int
    failed: int
    pending: int
    at_risk: bool
    # what the rows hold now (see the module docstring)
    lacking: int = 0
    lacking_now: int = 0
    promised: int = 0
    promised_lacking: int = 0
    extractor_records: int = 0
    our_records: int = 0


@dataclass(frozen=True)
class Data:
    """What the window's rows hold now, from the partial indexes (never a document)."""

    rows: int = 0
    lacking: int = 0
    lacking_now: int = 0
    promised: int = 0
    promised_lacking: int = 0
    extractor_records: int = 0
    our_records: int = 0

    @property
    def other_records(self) -> int:
        return max(self.rows - self.lacking - self.extractor_records - self.our_records, 0)

    @property
    def feedback_coverage_rate(self) -> float | None:
        return _rate(self.promised - self.promised_lacking, self.promised)


@dataclass(frozen=True)
class Invocation:
    """One `backfill run`, as its invocation row and the runner lock tell."""

    id: int
    state: str  # running | finished | unfinished
    outcome: str | None
    message: str | None
    started_at: dt.datetime
    heartbeat_at: dt.datetime
    finished_at: dt.datetime | None
    rows_pending_at_start: int
    rows_examined: int
    rows_enriched: int
    rows_no_feedback: int
    rows_failed: int
    records_stored: int
    api_requests: int
    api_errors: int
    params: dict[str, Any]
    rate_limit_wait_s: float = 0.0
    outage_wait_s: float = 0.0

    @property
    def elapsed(self) -> dt.timedelta:
        return (self.finished_at or self.heartbeat_at) - self.started_at

    @property
    def rows_per_s(self) -> float | None:
        seconds = self.elapsed.total_seconds()
        return self.rows_examined / seconds if seconds > 0 and self.rows_examined else None

    @property
    def api_error_rate(self) -> float | None:
        return _rate(self.api_errors, self.api_requests)


@dataclass(frozen=True)
class Eta:
    pending: int
    rows_per_s: float | None
    batch_size: int
    delay_ms: int

    @property
    def seconds(self) -> int | None:
        if not self.pending:
            return 0
        return math.ceil(self.pending / self.rows_per_s) if self.rows_per_s else None

    @property
    def floor_seconds(self) -> int:
        """The pacing alone: one request of batch_size run ids per delay_ms at best."""
        return math.ceil(math.ceil(self.pending / self.batch_size) * self.delay_ms / 1000)


@dataclass(frozen=True)
class Throughput:
    """The last finished run's rows/s against the mean of the runs before it."""

    last_finished_id: int | None = None
    rows_per_s: float | None = None
    baseline_rows_per_s: float | None = None
    baseline_runs: int = 0


@dataclass(frozen=True)
class LeaseInfo:
    """Who holds, or last held, the database's one lease (see backfill.db.Lease)."""

    command: str
    hostname: str
    pid: int
    invocation_id: int | None
    acquired_at: dt.datetime
    heartbeat_at: dt.datetime
    expires_at: dt.datetime
    state: str  # held | expired | released

    @property
    def alive(self) -> bool:
        return self.state == "held"

    def lines(self, as_of: dt.datetime) -> list[str]:
        who = f"    by `backfill {self.command}` on {self.hostname[:30]} (pid {self.pid})"
        if self.state == "held":
            beat = _duration((as_of - self.heartbeat_at).total_seconds())
            left = _duration((self.expires_at - as_of).total_seconds())
            return [
                f"  lease: held, alive (heartbeat {beat} ago, expires in {left})",
                f"{who} since {_ts(self.acquired_at)[11:]}",
            ]
        if self.state == "expired":
            ago = _duration((as_of - self.expires_at).total_seconds())
            return [f"  lease: free, expired {ago} ago without a release (holder killed?)", f"{who}"]
        return [f"  lease: free, released {_ts(self.expires_at)}", f"{who}"]


@dataclass(frozen=True)
class Alert:
    level: str
    name: str
    value: float
    threshold: float

    def describe(self) -> str:
        if self.name == "failure_rate":
            return f"failure rate {_pct(self.value)} > {CRITICAL_FAILURE_RATE:.0%}"
        if self.name == "missing_records" and self.level == "CRITICAL":
            return f"{self.value:,.0f} promised row(s) lack records at {self.threshold:.0f}+ days old (retention)"
        if self.name == "missing_records":
            return f"{self.value:,.0f} promised row(s) lack records {self.threshold:.0f}h+ after their day"
        return f"last run {self.value:.2f} rows/s < {self.threshold:.2f} (2/3 of the earlier runs' mean)"


@dataclass(frozen=True)
class StatusReport:
    """What `backfill status` shows; ``lines()``, ``check_line()`` and ``to_json()`` render it."""

    window: Window
    as_of: dt.datetime
    totals: Totals
    failures: dict[str, Failure]
    max_attempts: int
    days: list[Day]
    runs_count: int
    runner_pid: int | None
    last_run: Invocation | None
    eta: Eta
    throughput: Throughput
    alerts: list[Alert] = field(default_factory=list)
    data: Data = field(default_factory=Data)
    lease: LeaseInfo | None = None

    @property
    def status(self) -> str:
        return max((a.level for a in self.alerts), key=LEVELS.__getitem__, default="OK")

    @property
    def exit_code(self) -> int:
        return LEVELS[self.status]

    # -- rendering ---------------------------------------------------------------------

    def check_line(self) -> str:
        """One line in the monitoring-plugin format: status, text, then performance data."""
        t = self.totals
        if self.alerts:
            text = "; ".join(a.describe() for a in sorted(self.alerts, key=lambda a: -LEVELS[a.level]))
        elif t.rows:
            text = (
                f"coverage {_pct(t.coverage)}, {t.pending} pending, {t.failed + t.invalid} failed,"
                f" feedback coverage {_pct(self.data.feedback_coverage_rate)} (data)"
            )
        else:
            text = "no rows in the window"
        perf = [
            f"coverage={_perf_pct(t.coverage)};;;0;100",
            f"failure_rate={_perf_pct(t.failure_rate)};;{CRITICAL_FAILURE_RATE * 100:g};0;100",
            f"rows={t.rows};;;0",
            f"pending={t.pending};;;0",
            f"failed={t.failed + t.invalid};;;0",
            f"data_feedback_coverage={_perf_pct(self.data.feedback_coverage_rate)};;;0;100",
            f"lacking_now={self.data.lacking_now};;;0",
            f"promised_lacking={self.data.promised_lacking};;;0",
            f"extractor_records={self.data.extractor_records};;;0",
        ]
        if self.throughput.rows_per_s is not None:
            perf.append(f"rows_per_s={self.throughput.rows_per_s:.3f};;;0")
        return f"FEEDBACK-BACKFILL {self.status} - {text} | {' '.join(perf)}"

    def lines(self) -> list[str]:
        """The human report, at most 80 columns wide."""
        t = self.totals
        last_day = self.window.until - dt.timedelta(days=1)
        head = f"feedback-backfill status: run_date {self.window.since} .. {last_day}"
        scope = ", ".join(self.window.projects) if self.window.projects else "all projects"
        if len(head) + len(scope) + 3 > 80:
            scope = scope[: 80 - len(head) - 6] + "..."
        out = [f"{head} ({scope})"]
        if t.rows:
            out.append(f"{_bar(t.coverage or 0.0)} {_pct(t.coverage):>6} covered of {t.rows:,} rows")
        else:
            out.append("no rows in the window")
        out += ["", f"{'Totals':<26}{'rows':>10}"]
        out += [
            _total("in window", t.rows),
            _total("enriched (done)", t.done, f"{t.records:,} feedback records stored"),
            _total("no feedback", t.no_feedback),
            _total("invalid", t.invalid, "never to be fetched"),
            _total("failed", t.failed, "retried up to max attempts"),
            _total("pending", t.pending, "never examined"),
            _total("examined", t.examined, f"failure rate {_pct(t.failure_rate)} (failed + invalid)"),
            f"  {'coverage':<24}{_pct(t.coverage):>10}  (done + no feedback + invalid) / rows",
            f"  {'feedback coverage rate':<24}{_pct(t.feedback_coverage_rate):>10}  "
            f"{t.delivered:,} of {t.promised:,} examined rows",
            f"  {'':<36}whose feedback_stats count records",
        ]
        out += ["", *self._data_lines()]
        out += ["", f"{'Failures by reason':<20}{'rows':>10}{'attempts':>10}{f'at max ({self.max_attempts})':>14}"]
        for reason in REASONS:
            f = self.failures[reason]
            out.append(f"  {reason:<18}{f.rows:>10,}{f.attempts:>10,}{f.at_max_attempts:>14,}")
        out += ["", *self._run_lines()]
        out += ["", f"{'Per day':<12}{'total':>10}{'done':>10}{'no fb':>8}{'invalid':>9}{'pending':>10}{'failed':>8}"]
        for d in self.days:
            flag = "  at risk" if d.at_risk else ""
            out.append(
                f"  {d.run_date.isoformat():<10}{d.total:>10,}{d.done:>10,}{d.no_feedback:>8,}"
                f"{d.invalid:>9,}{d.pending:>10,}{d.failed:>8,}{flag}"
            )
        if not self.days:
            out.append("  (no rows)")
        else:
            out += [
                "",
                f"{'Per day, data':<14}{'lacking':>9}{'re-arch':>9}{'ours':>9}{'extract':>9}"
                f"{'promised':>10}{'missing':>9}",
            ]
            for d in self.days:
                out.append(
                    f"  {d.run_date.isoformat():<12}{d.lacking:>9,}{d.lacking_now:>9,}{d.our_records:>9,}"
                    f"{d.extractor_records:>9,}{d.promised:>10,}{d.promised_lacking:>9,}"
                )
        if any(d.at_risk for d in self.days):
            out += ["", *RISK_NOTE]
        out += ["", "Alerts"]
        out += [f"  {a.level:<9}{a.describe()}" for a in self.alerts] or ["  OK       none"]
        return out

    def _data_lines(self) -> list[str]:
        d = self.data
        return [
            f"{'What the rows hold now':<26}{'rows':>10}  (from the indexes, not the checkpoint)",
            _total("lacking records", d.lacking, "feedback_records absent or null"),
            _total("  re-archived since", d.lacking_now, "we had enriched them; next run redoes"),
            _total("our records", d.our_records, "the API's, written by the backfill"),
            _total("extractor's records", d.extractor_records, "its reduced shape; left as they are"),
            _total("other records", d.other_records, "neither (by hand, another tool)"),
            _total("promised records", d.promised, "feedback_stats count records"),
            _total("  lacking them", d.promised_lacking),
            f"  {'feedback coverage rate':<24}{_pct(d.feedback_coverage_rate):>10}  "
            f"{d.promised - d.promised_lacking:,} of {d.promised:,} promised rows hold records",
        ]

    def _run_lines(self) -> list[str]:
        out = [f"Runs ({self.runs_count} so far, all windows)"]
        run = self.last_run
        if run is None:
            out.append("  no `backfill run` yet")
            if self.runner_pid is not None:
                out.append(f"  a run is starting (pid {self.runner_pid} holds the lease)")
        else:
            if run.state == "running":
                ago = _duration((self.as_of - run.heartbeat_at).total_seconds())
                out.append(f"  last run #{run.id}: running (pid {self.runner_pid}), last heartbeat {ago} ago")
            elif run.state == "unfinished":
                out.append(f"  last run #{run.id}: stopped without finishing (killed?)")
            else:
                out.append(f"  last run #{run.id}: finished {_ts(run.finished_at)}, {run.outcome}")
                if self.runner_pid is not None:
                    out.append(f"  a new run is starting (pid {self.runner_pid} holds the lease)")
            rate = "-" if run.rows_per_s is None else f"{run.rows_per_s:.2f}"
            out += [
                f"    started {_ts(run.started_at)}, {_duration(run.elapsed.total_seconds())} so far"
                if run.state == "running"
                else f"    started {_ts(run.started_at)}, ran {_duration(run.elapsed.total_seconds())}"
                + ("" if run.finished_at else " up to its last heartbeat"),
                f"    examined {run.rows_examined:,} rows: {rate} rows/s; {run.records_stored:,} records stored",
                f"    API {run.api_requests:,} requests, {run.api_errors:,} failed"
                f" ({_pct(run.api_error_rate)} error rate)",
            ]
            if run.rate_limit_wait_s or run.outage_wait_s:
                out.append(
                    f"    waited {_duration(run.rate_limit_wait_s)} on rate limits (429),"
                    f" {_duration(run.outage_wait_s)} on API failures and outages"
                )
            if run.message:
                out.append(f"    message: {run.message[:66]}")
        if self.lease is not None:
            out += self.lease.lines(self.as_of)
        eta = self.eta
        if eta.pending:
            at = (
                f"{_duration(eta.seconds)} at {eta.rows_per_s:.2f} rows/s"
                if eta.seconds is not None and eta.rows_per_s
                else "unknown (no measured throughput)"
            )
            out += [
                f"  ETA for {eta.pending:,} pending rows: {at}",
                f"    floor {_duration(eta.floor_seconds)} at --delay-ms {eta.delay_ms} --batch-size {eta.batch_size}",
            ]
        else:
            out.append("  ETA: no pending rows")
        tp = self.throughput
        if tp.rows_per_s is not None and tp.baseline_rows_per_s is not None:
            out.append(
                f"  throughput: run #{tp.last_finished_id} {tp.rows_per_s:.2f} rows/s, mean of"
                f" {tp.baseline_runs} earlier run(s) {tp.baseline_rows_per_s:.2f}"
            )
        return out

    def to_json(self) -> dict[str, Any]:
        t, run, eta, tp = self.totals, self.last_run, self.eta, self.throughput
        return {
            "window": {
                "since": self.window.since.isoformat(),
                "until": self.window.until.isoformat(),
                "projects": list(self.window.projects),
            },
            "as_of": self.as_of.isoformat(),
            "totals": {
                "rows": t.rows,
                "examined": t.examined,
                "done": t.done,
                "no_feedback": t.no_feedback,
                "invalid": t.invalid,
                "failed": t.failed,
                "pending": t.pending,
                "records": t.records,
                "promised": t.promised,
                "delivered": t.delivered,
                "coverage": t.coverage,
                "feedback_coverage_rate": t.feedback_coverage_rate,
                "failure_rate": t.failure_rate,
            },
            "data": {
                "rows": self.data.rows,
                "lacking": self.data.lacking,
                "lacking_now": self.data.lacking_now,
                "promised": self.data.promised,
                "promised_lacking": self.data.promised_lacking,
                "extractor_records": self.data.extractor_records,
                "our_records": self.data.our_records,
                "other_records": self.data.other_records,
                "feedback_coverage_rate": self.data.feedback_coverage_rate,
            },
            "failures": {
                "max_attempts": self.max_attempts,
                "reasons": {
                    r: {"rows": f.rows, "attempts": f.attempts, "at_max_attempts": f.at_max_attempts}
                    for r, f in self.failures.items()
                },
            },
            "runs": {
                "count": self.runs_count,
                "runner_pid": self.runner_pid,
                "lease": None if self.lease is None else _lease_json(self.lease),
                "last": None if run is None else _run_json(run),
                "eta": {
                    "pending": eta.pending,
                    "rows_per_s": eta.rows_per_s,
                    "seconds": eta.seconds,
                    "floor_seconds": eta.floor_seconds,
                    "batch_size": eta.batch_size,
                    "delay_ms": eta.delay_ms,
                },
                "throughput": {
                    "last_finished_id": tp.last_finished_id,
                    "rows_per_s": tp.rows_per_s,
                    "baseline_rows_per_s": tp.baseline_rows_per_s,
                    "baseline_runs": tp.baseline_runs,
                },
            },
            "days": [
                {
                    "run_date": d.run_date.isoformat(),
                    "total": d.total,
                    "done": d.done,
                    "no_feedback": d.no_feedback,
                    "invalid": d.invalid,
                    "failed": d.failed,
                    "pending": d.pending,
                    "at_risk": d.at_risk,
                    "lacking": d.lacking,
                    "lacking_now": d.lacking_now,
                    "promised": d.promised,
                    "promised_lacking": d.promised_lacking,
                    "extractor_records": d.extractor_records,
                    "our_records": d.our_records,
                }
                for d in self.days
            ],
            "alerts": [
                {"level": a.level, "name": a.name, "value": a.value, "threshold": a.threshold} for a in self.alerts
            ],
            "status": self.status,
            "exit_code": self.exit_code,
        }


def _lease_json(lease: LeaseInfo) -> dict[str, Any]:
    return {
        "command": lease.command,
        "hostname": lease.hostname,
        "pid": lease.pid,
        "invocation_id": lease.invocation_id,
        "acquired_at": lease.acquired_at.isoformat(),
        "heartbeat_at": lease.heartbeat_at.isoformat(),
        "expires_at": lease.expires_at.isoformat(),
        "state": lease.state,
        "alive": lease.alive,
    }


def _run_json(run: Invocation) -> dict[str, Any]:
    return {
        "id": run.id,
        "state": run.state,
        "outcome": run.outcome,
        "message": run.message,
        "started_at": run.started_at.isoformat(),
        "heartbeat_at": run.heartbeat_at.isoformat(),
        "finished_at": None if run.finished_at is None else run.finished_at.isoformat(),
        "elapsed_ms": round(run.elapsed.total_seconds() * 1000),
        "rows_pending_at_start": run.rows_pending_at_start,
        "rows_examined": run.rows_examined,
        "rows_enriched": run.rows_enriched,
        "rows_no_feedback": run.rows_no_feedback,
        "rows_failed": run.rows_failed,
        "records_stored": run.records_stored,
        "api_requests": run.api_requests,
        "api_errors": run.api_errors,
        "rows_per_s": run.rows_per_s,
        "api_error_rate": run.api_error_rate,
        "rate_limit_wait_s": run.rate_limit_wait_s,
        "outage_wait_s": run.outage_wait_s,
        "params": {
            k: run.params.get(k) for k in ("since", "until", "projects", "batch_size", "delay_ms", "max_attempts")
        },
    }


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
        lock = gw.one("status_lease", {"name": db.LEASE_NAME})
        lease = _lease(lock)
        invocations = gw.execute("status_invocations")
        # the newest run is running while a live lease of a `backfill run` names it
        running = lease is not None and lease.alive and lease.command.startswith("run")
        newest = invocations[-1]["id"] if invocations else None
        runs = _invocations(invocations, running and lease is not None and lease.invocation_id == newest)
        last = runs[-1] if runs else None
        params = last.params if last else {}
        max_attempts = _int_param(params, "max_attempts")
        where = {
            "since": window.since,
            "until": window.until,
            "projects": list(window.projects) or None,
            "max_attempts": max_attempts,
        }
        gw.execute("status_settings", where)
        per_day = {r["run_date"]: r["total"] for r in gw.execute("status_runs_by_day", where)}
        by_day = "status_checkpoint_by_day_projects" if window.projects else "status_checkpoint_by_day"
        checkpoint = gw.execute(by_day, where)
        figures = gw.execute("status_data_by_day", where)
        gw.rollback()  # a read-only transaction: nothing to commit
    finally:
        gw.close()
    as_of: dt.datetime = lock["as_of"]
    totals, failures, days = _tally(per_day, checkpoint, as_of.astimezone(dt.UTC).date())
    days, data = _data(days, figures)
    eta = Eta(
        pending=totals.pending,
        rows_per_s=last.rows_per_s if last else None,
        batch_size=_int_param(params, "batch_size"),
        delay_ms=_int_param(params, "delay_ms"),
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
            )
        )
    return runs


def _tally(
    per_day: dict[dt.date, int], checkpoint: list[dict[str, Any]], today: dt.date
) -> tuple[Totals, dict[str, Failure], list[Day]]:
    by_day: dict[dt.date, Counter[str]] = {d: Counter() for d in per_day}
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


# -- formatting helpers -----------------------------------------------------------------


def _pct(rate: float | None) -> str:
    if rate is None:
        return "-"
    shown = rate * 100
    # Never show 100.0 % for a window that is not complete (nor 0.0 % for one that started).
    if rate < 1 and round(shown, 1) >= 100:
        shown = 99.9
    elif rate > 0 and round(shown, 1) <= 0:
        shown = 0.1
    return f"{shown:.1f}%"


def _perf_pct(rate: float | None) -> str:
    # "U" is the monitoring-plugin value for "undetermined" (e.g. no rows in the window).
    return "U" if rate is None else f"{rate * 100:.2f}%"


def _bar(rate: float, width: int = 50) -> str:
    filled = min(int(rate * width), width if rate >= 1 else width - 1)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _total(label: str, value: int, note: str = "") -> str:
    return f"  {label:<24}{value:>10,}" + (f"  {note}" if note else "")


def _ts(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(int(round(seconds)), 0)
    d, rest = divmod(s, 86400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    if d:
        return f"{d}d {h}h"
    if h:
        return f"{h}h {m:02d}m"
    if m:
        return f"{m}m {sec:02d}s"
    return f"{sec}s"
