"""The figures of `backfill status` as data: what each report is made of, and its alert levels.

Measured by ``backfill.archive.status`` (the queries), rendered by ``backfill.report``.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

from backfill.config import Window
from backfill.domain.packing import requests
from backfill.domain.records import FAILED_REASONS, INVALID_REASONS

#: The spec's alert thresholds.
CRITICAL_FAILURE_RATE = 0.05
WARNING_THROUGHPUT_RATIO = 2 / 3
#: LangSmith deletes base traces after 14 days; a day this old with rows left is at risk.
RETENTION_DAYS = 14
AT_RISK_AGE_DAYS = 12
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
    strategy: str | None = None  # runs, project or mixed (fb0007; None before)
    requests_saved: int = 0  # against the runs strategy's estimate (project listings)

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
    promised: int = 0  # records the pending rows' feedback_stats promise

    @property
    def seconds(self) -> int | None:
        if not self.pending:
            return 0
        return math.ceil(self.pending / self.rows_per_s) if self.rows_per_s else None

    @property
    def floor_seconds(self) -> int:
        """The pacing alone: the requests ``packing`` needs at least, one per delay_ms at best."""
        return math.ceil(requests(self.pending, self.promised, self.batch_size) * self.delay_ms / 1000)


@dataclass(frozen=True)
class Throughput:
    """The last finished run's rows/s against the mean of the runs before it."""

    last_finished_id: int | None = None
    rows_per_s: float | None = None
    baseline_rows_per_s: float | None = None
    baseline_runs: int = 0


@dataclass(frozen=True)
class LeaseInfo:
    """Who holds, or last held, the database's one lease (see ``archive.lease``)."""

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


@dataclass(frozen=True)
class Alert:
    level: str
    name: str
    value: float
    threshold: float


@dataclass(frozen=True)
class StatusReport:
    """What `backfill status` shows (rendered by ``backfill.report``: text, --check, --json, OpenMetrics)."""

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
