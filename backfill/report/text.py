"""`backfill status` rendered: the human report, the --check line and the --json document.

Everything here reads a ``StatusReport`` (backfill.status) and formats it; nothing queries.
The --json keys are described in docs/status-json.md.
"""

from __future__ import annotations

import datetime as dt

from backfill.domain.status import (
    CRITICAL_FAILURE_RATE,
    REASONS,
    RISK_NOTE,
    Alert,
    LeaseInfo,
    StatusReport,
)
from backfill.domain.units import duration


def lines(self: StatusReport) -> list[str]:
    """The human report, at most 80 columns wide."""
    t = self.totals
    last_day = self.window.until - dt.timedelta(days=1)
    head = f"feedback-backfill status: run_date {self.window.since} .. {last_day}"
    scope = ", ".join(self.window.projects) if self.window.projects else "all projects"
    if len(head) + len(scope) + 3 > 80:
        scope = scope[: 80 - len(head) - 6] + "..."
    out = [f"{head} ({scope})"]
    if t.rows:
        tail = f" {pct(t.coverage):>6} covered of {t.rows:,} rows"
        # the bar gives up what a long count needs: the line stays within 80 columns
        out.append(_bar(t.coverage or 0.0, min(50, 78 - len(tail))) + tail)
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
        _total("examined", t.examined, f"failure rate {pct(t.failure_rate)} (failed + invalid)"),
        f"  {'coverage':<24}{pct(t.coverage):>10}  (done + no feedback + invalid) / rows",
        f"  {'feedback coverage rate':<24}{pct(t.feedback_coverage_rate):>10}  "
        f"{t.delivered:,} of {t.promised:,} examined rows",
        f"  {'':<36}whose feedback_stats count records",
    ]
    out += ["", *_data_lines(self)]
    out += ["", f"{'Failures by reason':<20}{'rows':>10}{'attempts':>10}{f'at max ({self.max_attempts})':>14}"]
    for reason in REASONS:
        f = self.failures[reason]
        out.append(f"  {reason:<18}{f.rows:>10,}{f.attempts:>10,}{f.at_max_attempts:>14,}")
    out += ["", *_run_lines(self)]
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
            f"{'Per day, data':<14}{'lacking':>9}{'re-arch':>9}{'ours':>9}{'extract':>9}{'promised':>10}{'missing':>9}",
        ]
        for d in self.days:
            out.append(
                f"  {d.run_date.isoformat():<12}{d.lacking:>9,}{d.lacking_now:>9,}{d.our_records:>9,}"
                f"{d.extractor_records:>9,}{d.promised:>10,}{d.promised_lacking:>9,}"
            )
    if any(d.at_risk for d in self.days):
        out += ["", *RISK_NOTE]
    out += ["", "Alerts"]
    out += [f"  {a.level:<9}{describe(a)}" for a in self.alerts] or ["  OK       none"]
    return out


def _data_lines(self: StatusReport) -> list[str]:
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
        f"  {'feedback coverage rate':<24}{pct(d.feedback_coverage_rate):>10}  "
        f"{d.promised - d.promised_lacking:,} of {d.promised:,} promised rows hold records",
    ]


def _run_lines(self: StatusReport) -> list[str]:
    out = [f"Runs ({self.runs_count} so far, all windows)"]
    run = self.last_run
    if run is None:
        out.append("  no `backfill run` yet")
        if self.runner_pid is not None:
            out.append(f"  a run is starting (pid {self.runner_pid} holds the lease)")
    else:
        if run.state == "running":
            ago = duration((self.as_of - run.heartbeat_at).total_seconds())
            out.append(f"  last run #{run.id}: running (pid {self.runner_pid}), last heartbeat {ago} ago")
        elif run.state == "unfinished":
            out.append(f"  last run #{run.id}: stopped without finishing (killed?)")
        else:
            out.append(f"  last run #{run.id}: finished {_ts(run.finished_at)}, {run.outcome}")
            if self.runner_pid is not None:
                out.append(f"  a new run is starting (pid {self.runner_pid} holds the lease)")
        rate = "-" if run.rows_per_s is None else f"{run.rows_per_s:.2f}"
        out += [
            f"    started {_ts(run.started_at)}, {duration(run.elapsed.total_seconds())} so far"
            if run.state == "running"
            else f"    started {_ts(run.started_at)}, ran {duration(run.elapsed.total_seconds())}"
            + ("" if run.finished_at else " up to its last heartbeat"),
            f"    examined {run.rows_examined:,} rows: {rate} rows/s; {run.records_stored:,} records stored",
            f"    API {run.api_requests:,} requests, {run.api_errors:,} failed ({pct(run.api_error_rate)} error rate)",
        ]
        if run.strategy in ("project", "mixed"):
            out.append(f"    strategy {run.strategy}: {run.requests_saved:,} request(s) saved against run by run")
        if run.rate_limit_wait_s or run.outage_wait_s:
            out.append(
                f"    waited {duration(run.rate_limit_wait_s)} on rate limits (429),"
                f" {duration(run.outage_wait_s)} on API failures and outages"
            )
        if run.message:
            out.append(f"    message: {run.message[:66]}")
    if self.lease is not None:
        out += lease_lines(self.lease, self.as_of)
    eta = self.eta
    if eta.pending:
        at = (
            f"{duration(eta.seconds)} at {eta.rows_per_s:.2f} rows/s"
            if eta.seconds is not None and eta.rows_per_s
            else "unknown (no measured throughput)"
        )
        out += [
            f"  ETA for {eta.pending:,} pending rows: {at}",
            f"    floor {duration(eta.floor_seconds)} at --delay-ms {eta.delay_ms} --batch-size {eta.batch_size}",
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


def lease_lines(self: LeaseInfo, as_of: dt.datetime) -> list[str]:
    who = f"    by `backfill {self.command}` on {self.hostname[:30]} (pid {self.pid})"
    if self.state == "held":
        beat = duration((as_of - self.heartbeat_at).total_seconds())
        left = duration((self.expires_at - as_of).total_seconds())
        return [
            f"  lease: held, alive (heartbeat {beat} ago, expires in {left})",
            f"{who} since {_ts(self.acquired_at)[11:]}",
        ]
    if self.state == "expired":
        ago = duration((as_of - self.expires_at).total_seconds())
        return [f"  lease: free, expired {ago} ago without a release (holder killed?)", f"{who}"]
    return [f"  lease: free, released {_ts(self.expires_at)}", f"{who}"]


def describe(self: Alert) -> str:
    if self.name == "failure_rate":
        return f"failure rate {pct(self.value)} > {CRITICAL_FAILURE_RATE:.0%}"
    if self.name == "missing_records" and self.level == "CRITICAL":
        return f"{self.value:,.0f} promised row(s) lack records at {self.threshold:.0f}+ days old (retention)"
    if self.name == "missing_records":
        return f"{self.value:,.0f} promised row(s) lack records {self.threshold:.0f}h+ after their day"
    return f"last run {self.value:.2f} rows/s < {self.threshold:.2f} (2/3 of the earlier runs' mean)"


# -- formatting helpers -----------------------------------------------------------------


def pct(rate: float | None) -> str:
    if rate is None:
        return "-"
    shown = rate * 100
    # Never show 100.0 % for a window that is not complete (nor 0.0 % for one that started).
    if rate < 1 and round(shown, 1) >= 100:
        shown = 99.9
    elif rate > 0 and round(shown, 1) <= 0:
        shown = 0.1
    return f"{shown:.1f}%"


def perf_pct(rate: float | None) -> str:
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
