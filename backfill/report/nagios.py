"""`backfill status --check`: the report as the one line of a monitoring plugin (Nagios, Icinga).

``FEEDBACK-BACKFILL <status> - <text> | <perfdata>``, exit code 0 OK, 1 WARNING, 2 CRITICAL;
``FEEDBACK-BACKFILL UNKNOWN - <why>`` and 3 when nothing could be measured. The perfdata labels
keep their names whatever the text says (graphs are drawn from them): ``coverage`` is the
text's progress, ``data_feedback_coverage`` its coverage.
"""

from __future__ import annotations

from backfill.domain.status import CRITICAL_FAILURE_RATE, LEVELS, StatusReport
from backfill.report.text import describe, pct, perf_pct

#: The plugin's exit code when it cannot measure (no database, not migrated, bad options).
UNKNOWN = 3
PLUGIN = "FEEDBACK-BACKFILL"


def check_line(self: StatusReport) -> str:
    """One line in the monitoring-plugin format: status, text, then performance data."""
    t = self.totals
    if self.alerts:
        text = "; ".join(describe(a) for a in sorted(self.alerts, key=lambda a: -LEVELS[a.level]))
    elif t.rows:
        text = (
            f"progress {pct(t.coverage)} ({t.pending:,} pending, {t.failed + t.invalid:,} failed),"
            f" coverage {pct(self.data.feedback_coverage_rate)}"
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
    return f"{PLUGIN} {self.status} - {text} | {' '.join(perf)}"


def unknown_line(why: str) -> str:
    """The line when nothing could be measured: no perfdata (a ``|`` in ``why`` would start it)."""
    return f"{PLUGIN} UNKNOWN - {' '.join(why.split()).replace('|', '/')}"
