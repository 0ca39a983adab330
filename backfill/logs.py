"""What `backfill run` and `run --follow` say besides the progress bar: events through `logging`.

Every event is a log record of the logger ``backfill`` whose ``extra`` carries ``event`` (a
short name: run_started, run_finished, pass_finished, pass_failed, ...) and ``fields`` (the
invocation id, counts, durations). ``setup("text")`` prints ``2026-11-29T14:05:00Z INFO
message`` lines; ``setup("json")`` one JSON object per line, for log shippers (journald,
Vector, Fluent Bit): ``{"ts", "level", "event", "message", ...fields}``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any, TextIO

LOGGER = "backfill"
FORMATS = ("text", "json")

log = logging.getLogger(LOGGER)


def event(name: str, message: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event: ``message`` for people, ``fields`` for machines."""
    log.log(level, message, extra={"event": name, "fields": fields})


def _ts(record: logging.LogRecord) -> str:
    return dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """``2026-11-29T14:05:00.123Z INFO message``: the message last, so that a line ends with it."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{_ts(record)} {record.levelname} {record.getMessage()}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (no ANSI, nothing else on the stream)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _ts(record),
            "level": record.levelname,
            "event": getattr(record, "event", "message"),
            "message": record.getMessage(),
        }
        for key, value in (getattr(record, "fields", None) or {}).items():
            out.setdefault(key, value)
        return json.dumps(out, default=str, separators=(",", ":"))


def setup(fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send the ``backfill`` logger's INFO and above to ``stream`` (stderr) in ``fmt``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    for old in list(log.handlers):
        log.removeHandler(old)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    log.json = fmt == "json"  # type: ignore[attr-defined]


def is_json() -> bool:
    """Whether setup("json") is in force (then stderr carries JSON lines only)."""
    return bool(getattr(log, "json", False))


def ensure(stream: TextIO) -> None:
    """For callers of the Python API that set up nothing: text lines on ``stream``."""
    if not log.handlers:
        setup("text", stream)


def summary_fields(summary: Any) -> dict[str, Any]:
    """The counts and durations of a ``runner.RunSummary``, for a run_finished/pass_finished event."""
    elapsed = round(summary.elapsed_s, 3)
    return {
        "invocation_id": summary.invocation_id,
        "outcome": summary.outcome,
        "exit_code": summary.exit_code,
        "pending_at_start": summary.pending_at_start,
        "rows_examined": summary.examined,
        "rows_enriched": summary.enriched,
        "records_stored": summary.records,
        "rows_no_feedback": summary.no_feedback,
        "rows_failed": sum(summary.failed.values()),
        "failed_by_reason": dict(summary.failed),
        "rows_skipped": summary.skipped,
        "api_requests": summary.api_requests,
        "api_errors": summary.api_errors,
        "records_dropped": summary.dropped,
        "elapsed_s": elapsed,
        "rows_per_s": round(summary.examined / summary.elapsed_s, 3) if summary.elapsed_s > 0 else None,
        "rate_limit_wait_s": round(summary.rate_limit_wait_s, 3),
        "outage_wait_s": round(summary.outage_wait_s, 3),
    }
