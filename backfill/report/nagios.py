"""`backfill status --check`: the report as one line in the monitoring-plugin format."""

from __future__ import annotations

from backfill.domain.status import CRITICAL_FAILURE_RATE, LEVELS, StatusReport
from backfill.report.text import describe, pct, perf_pct


def check_line(self: StatusReport) -> str:
    """One line in the monitoring-plugin format: status, text, then performance data."""
    t = self.totals
    if self.alerts:
        text = "; ".join(describe(a) for a in sorted(self.alerts, key=lambda a: -LEVELS[a.level]))
    elif t.rows:
        text = (
            f"coverage {pct(t.coverage)}, {t.pending} pending, {t.failed + t.invalid} failed,"
            f" feedback coverage {pct(self.data.feedback_coverage_rate)} (data)"
        )
    else:
        text = "no rows in the window"
    perf = [
        f"coverage={perf_pct(t.coverage)};;;0;100",
        f"failure_rate={perf_pct(t.failure_rate)};;{CRITICAL_FAILURE_RATE * 100:g};0;100",
        f"rows={t.rows};;;0",
        f"pending={t.pending};;;0",
        f"failed={t.failed + t.invalid};;;0",
        f"data_feedback_coverage={perf_pct(self.data.feedback_coverage_rate)};;;0;100",
        f"lacking_now={self.data.lacking_now};;;0",
        f"promised_lacking={self.data.promised_lacking};;;0",
        f"extractor_records={self.data.extractor_records};;;0",
    ]
    if self.throughput.rows_per_s is not None:
        perf.append(f"rows_per_s={self.throughput.rows_per_s:.3f};;;0")
    return f"FEEDBACK-BACKFILL {self.status} - {text} | {' '.join(perf)}"
