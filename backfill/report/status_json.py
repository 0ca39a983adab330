"""`backfill status --json`: the report as the document docs/status-json.md describes."""

from __future__ import annotations

from typing import Any

from backfill.domain.status import Day, Invocation, LeaseInfo, StatusReport


def to_json(self: StatusReport) -> dict[str, Any]:
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
        "days": [_day_json(d) for d in self.days],
        "alerts": [{"level": a.level, "name": a.name, "value": a.value, "threshold": a.threshold} for a in self.alerts],
        "status": self.status,
        "exit_code": self.exit_code,
    }


def _day_json(d: Day) -> dict[str, Any]:
    return {
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
        "strategy": run.strategy,
        "requests_saved": run.requests_saved,
        "params": {
            k: run.params.get(k) for k in ("since", "until", "projects", "batch_size", "delay_ms", "max_attempts")
        },
    }
