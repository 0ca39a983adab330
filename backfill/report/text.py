"""`backfill status` for a person: one screen by default (``lines``), everything with ``verbose``.

Everything here reads a ``StatusReport`` (backfill.domain.status) and formats it; nothing queries.
Two figures head the report, named apart so that they are never confused:

* **progress** (``totals.coverage`` in --json, ``coverage`` in the --check perfdata): the rows the
  backfill is through with, enriched, without feedback or invalid, among the window's rows;
* **coverage** (``data.feedback_coverage_rate``, ``data_feedback_coverage``): the rows holding
  feedback records among those whose feedback_stats count feedback, whoever wrote them, examined
  or not. Its complement is the per-day ``missing`` column, which the missing_records alerts watch.

Then one per-day table (the newest ``DAYS`` days by default), failures, the last run, the ETA and
the alerts. Lines are at most 80 columns wide.
"""

from __future__ import annotations

import datetime as dt
import textwrap

from backfill.domain.status import (
    AT_RISK_AGE_DAYS,
    CRITICAL_FAILURE_RATE,
    FAILED_REASONS,
    INVALID_REASONS,
    REASONS,
    RETENTION_DAYS,
    RISK_NOTE,
    Alert,
    Day,
    LeaseInfo,
    StatusReport,
)
from backfill.domain.units import count, duration

#: Days of the per-day table by default: a 14-day window (`status`'s default) fits a screen.
DAYS = 14
WIDTH = 80
#: The label column of the report's key lines.
LABEL = 10


def lines(self: StatusReport, *, days: int | None = DAYS, verbose: bool = False) -> list[str]:
    """The report: ``days`` newest days with rows in the per-day table (None: every day)."""
    out = [_title(self), *_figures(self), "", *_day_table(self, days)]
    if any(d.at_risk for d in self.days):
        out += list(RISK_NOTE) if verbose else [_label("at risk", _risk_short())]
    if verbose:
        out += ["", *_data_lines(self), "", *_data_table(self, days), "", *_failure_table(self)]
    else:
        out += _failures(self)
    out += ["", *_run_lines(self, verbose)]
    out += [_label(a.level, describe(a)) for a in _by_level(self.alerts)] or [_label("OK", "no alert")]
    return [line for lines in out for line in lines.split("\n")]


def _title(self: StatusReport) -> str:
    last_day = self.window.until - dt.timedelta(days=1)
    head = f"feedback-backfill: run_date {self.window.since} to {last_day} inclusive, "
    scope = "projects " + ", ".join(self.window.projects) if self.window.projects else "all projects"
    if len(head) + len(scope) > WIDTH:
        scope = scope[: WIDTH - len(head) - 3] + "..."
    return head + scope


def _figures(self: StatusReport) -> list[str]:
    """Progress (the checkpoint) and coverage (the data), each said in words."""
    t, d = self.totals, self.data
    if t.rows:
        through = t.done + t.no_feedback + t.invalid
        progress = f"{pct(t.coverage):>6}  {through:,} of {count(t.rows, 'row')} done: enriched, no feedback or invalid"
    else:
        progress = f"{'-':>6}  no rows in the window"
    if d.promised:
        held = d.promised - d.promised_lacking
        coverage = (
            f"{pct(d.feedback_coverage_rate):>6}  {held:,} of {d.promised:,} rows hold the records their"
            " feedback_stats count"
        )
    else:
        coverage = f"{'-':>6}  no row's feedback_stats count feedback"
    return [_label("progress", progress), _label("coverage", coverage)]


def _day_table(self: StatusReport, days: int | None) -> list[str]:
    """Rows per day by checkpoint state, and the promised records still missing; a total line."""
    head = f"{'run_date':<12}{'rows':>8}{'enriched':>10}{'no fb':>8}{'invalid':>8}{'failed':>8}{'pending':>8}"
    out = [head + f"{'missing':>8}"]
    shown = self.days if days is None else self.days[-days:]
    older = self.days[: len(self.days) - len(shown)]
    if older:
        rows, pending = sum(d.total for d in older), sum(d.pending for d in older)
        out.append(
            f"{count(len(older), 'older day')} with {count(rows, 'row')}, {pending:,} pending:"
            f" --days {len(self.days)} or -v shows them"
        )
    out += [_day_row(d.run_date.isoformat(), d) + ("  at risk" if d.at_risk else "") for d in shown]
    if not self.days:
        out.append("(no rows)")
    else:
        t, missing = self.totals, self.data.promised_lacking
        total = Day(dt.date.min, t.rows, t.done, t.no_feedback, t.invalid, t.failed, t.pending, False)
        out.append(_day_row("total", total, missing))
    return out


def _day_row(label: str, d: Day, missing: int | None = None) -> str:
    missing = d.promised_lacking if missing is None else missing
    return (
        f"{label:<12}{d.total:>8,}{d.done:>10,}{d.no_feedback:>8,}{d.invalid:>8,}{d.failed:>8,}{d.pending:>8,}"
        f"{missing:>8,}"
    )


def _risk_short() -> str:
    return f"{AT_RISK_AGE_DAYS}+ days old with rows left: LangSmith keeps base traces {RETENTION_DAYS} days"


def _failures(self: StatusReport) -> list[str]:
    """The failed and invalid rows by reason, when there are any."""
    parts = []
    for reason in FAILED_REASONS + INVALID_REASONS:
        f = self.failures[reason]
        if f.rows:
            at_max = (
                f" ({f.at_max_attempts:,} at max attempts)" if f.at_max_attempts and reason in FAILED_REASONS else ""
            )
            parts.append(f"{reason} {f.rows:,}{at_max}")
    return [_label("failures", ", ".join(parts))] if parts else []


def _failure_table(self: StatusReport) -> list[str]:
    out = [f"{'Failures by reason':<20}{'rows':>10}{'attempts':>10}{f'at max ({self.max_attempts})':>14}"]
    for reason in REASONS:
        f = self.failures[reason]
        out.append(f"  {reason:<18}{f.rows:>10,}{f.attempts:>10,}{f.at_max_attempts:>14,}")
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
        _total("promised records", d.promised, "feedback_stats count feedback"),
        _total("  missing them", d.promised_lacking),
    ]


def _data_table(self: StatusReport, days: int | None) -> list[str]:
    out = [f"{'run_date':<12}{'lacking':>9}{'re-arch':>9}{'ours':>9}{'extract':>9}{'promised':>10}{'missing':>9}"]
    for d in self.days if days is None else self.days[-days:]:
        out.append(
            f"{d.run_date.isoformat():<12}{d.lacking:>9,}{d.lacking_now:>9,}{d.our_records:>9,}"
            f"{d.extractor_records:>9,}{d.promised:>10,}{d.promised_lacking:>9,}"
        )
    return out


def _run_lines(self: StatusReport, verbose: bool) -> list[str]:
    """The last run in two lines (and its strategy, waits and message), who else holds the lease, the ETA."""
    run, out, lease = self.last_run, [], self.lease
    if run is None:
        out.append(_label("last run", "none yet"))
    else:
        took = duration(run.elapsed.total_seconds())
        if run.state == "running":
            ago = duration((self.as_of - run.heartbeat_at).total_seconds())
            where = f" on {lease.hostname[:30]}" if lease is not None else ""
            state = f"running{where} (pid {self.runner_pid}) for {took}, heartbeat {ago} ago"
        elif run.state == "unfinished":
            state = f"stopped without finishing (killed?) after {took}"
        else:
            state = f"{(run.outcome or '').replace('_', ' ')} {_ts(run.finished_at)[:16]} UTC after {took}"
        rate = "" if run.rows_per_s is None else f" ({run.rows_per_s:,.2f}/s)"
        out += [
            _label("last run", f"#{run.id} {state}"),
            _label(
                "",
                f"{count(run.rows_examined, 'row')}{rate}, {count(run.records_stored, 'record')},"
                f" {count(run.api_requests, 'request')} ({run.api_errors:,} failed)",
            ),
        ]
        if run.strategy in ("project", "mixed"):
            saved = count(run.requests_saved, "request")
            out.append(_label("", f"strategy {run.strategy}: {saved} saved against run by run"))
        if run.rate_limit_wait_s or run.outage_wait_s:
            out.append(
                _label(
                    "",
                    f"waited {duration(run.rate_limit_wait_s)} on rate limits (429),"
                    f" {duration(run.outage_wait_s)} on API failures and outages",
                )
            )
        if run.message:
            out.append(_label("", f"message: {run.message}"))
    if verbose:
        out += lease_lines(lease, self.as_of) if lease is not None else []
        out += _verbose_run_lines(self)
    elif lease is not None and lease.alive and (run is None or run.state != "running"):
        # what holds the lease now, when it is not the run shown running: a run starting, a revert
        beat = duration((self.as_of - lease.heartbeat_at).total_seconds())
        out.append(
            _label(
                "lease",
                f"held by `backfill {lease.command}` on {lease.hostname[:30]} (pid {lease.pid}), heartbeat {beat} ago",
            )
        )
    out.append(_label("ETA", _eta(self, verbose)))
    return out


def _verbose_run_lines(self: StatusReport) -> list[str]:
    out = [_label("runs", f"{self.runs_count:,} so far, all windows")]
    run = self.last_run
    if run is not None:
        out.append(_label("", f"last run started {_ts(run.started_at)}; API error rate {pct(run.api_error_rate)}"))
    tp = self.throughput
    if tp.rows_per_s is not None and tp.baseline_rows_per_s is not None:
        out.append(
            _label(
                "speed",
                f"run #{tp.last_finished_id} {tp.rows_per_s:.2f} rows/s, mean of"
                f" {count(tp.baseline_runs, 'earlier run')} {tp.baseline_rows_per_s:.2f}",
            )
        )
    return out


def _eta(self: StatusReport, verbose: bool = False) -> str:
    eta = self.eta
    if not eta.pending:
        return "no pending rows"
    floor = f"at best {duration(eta.floor_seconds)} at --delay-ms {eta.delay_ms}"
    if verbose:
        floor += f" --batch-size {eta.batch_size}"
    pending = count(eta.pending, "pending row")
    if eta.seconds is not None and eta.rows_per_s:
        return f"{pending}: {duration(eta.seconds)} at {eta.rows_per_s:,.2f} rows/s ({floor})"
    return f"{pending}: {floor} (no run measured yet)"


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


def _by_level(alerts: list[Alert]) -> list[Alert]:
    order = {"CRITICAL": 0, "WARNING": 1}
    return sorted(alerts, key=lambda a: order.get(a.level, 2))


def describe(self: Alert) -> str:
    if self.name == "failure_rate":
        return f"failure rate {pct(self.value)} > {CRITICAL_FAILURE_RATE:.0%}"
    n = int(self.value)
    verb = "misses" if n == 1 else "miss"
    if self.name == "missing_records" and self.level == "CRITICAL":
        return f"{count(n, 'row')} {verb} promised records at {self.threshold:.0f}+ days old (retention)"
    if self.name == "missing_records":
        return f"{count(n, 'row')} {verb} promised records {self.threshold:.0f}h+ after their day"
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


def _label(label: str, text: str) -> str:
    """``text`` after its label, wrapped under itself past 80 columns (lines joined by newlines)."""
    wrapped = textwrap.wrap(text, WIDTH - LABEL, break_on_hyphens=False) or [""]
    return "\n".join(f"{label if i == 0 else '':<{LABEL}}{part}" for i, part in enumerate(wrapped))


def _total(label: str, value: int, note: str = "") -> str:
    return f"  {label:<24}{value:>10,}" + (f"  {note}" if note else "")


def _ts(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
