"""After the first run: verify against the API, retry failures, reset, and revert exactly."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from . import db
from .config import Database, LangSmith, Window
from .errors import NeedsOwner, UsageError
from .feedback import DONE, decide
from .isolate import fetch_isolating
from .source import FeedbackSource
from .store import write
from .walk import Row


@dataclass
class Drift:
    """How a run's stored records differ from what the API returns now."""

    run_id: str
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def drifted(self) -> bool:
        return bool(self.added or self.changed or self.deleted or self.error)

    def line(self) -> str:
        if self.error:
            return f"{self.run_id}  not verified: {self.error}"
        return (
            f"{self.run_id}  {len(self.added)} added, {len(self.changed)} changed, "
            f"{len(self.deleted)} deleted since stored"
        )


@dataclass
class LocalChange:
    """A row whose stored records are no longer the ones we wrote (md5 in the ledger)."""

    run_id: str
    kind: str  # vanished (absent or null: re-archived) | extractor (its reduced records) | changed

    def line(self) -> str:
        what = {
            "vanished": "records vanished since we wrote them (re-archived?)",
            "extractor": "the extractor's own records replaced ours (left; see run --refetch"
            " --replace-extractor-records)",
            "changed": "records changed in the database since we wrote them",
        }[self.kind]
        return f"{self.run_id}  local change: {what}"


@dataclass
class VerifyReport:
    checked: int = 0
    drifts: list[Drift] = field(default_factory=list)
    unverified: list[Drift] = field(default_factory=list)
    fixed: int = 0
    api_requests: int = 0
    local: list[LocalChange] = field(default_factory=list)
    local_fixed: int = 0

    @property
    def exit_code(self) -> int:
        """3 drift or local changes found and left; else 1 when some runs could not be fetched; else 0."""
        if len(self.drifts) > self.fixed or len(self.local) > self.local_fixed:
            return 3
        return 1 if self.unverified else 0

    def lines(self) -> list[str]:
        out = [c.line() for c in self.local]
        out += [d.line() for d in self.drifts + self.unverified]
        totals = [sum(len(getattr(d, k)) for d in self.drifts) for k in ("added", "changed", "deleted")]
        out.append(
            f"verified {self.checked} enriched run(s) against LangSmith: {len(self.drifts)} drifted"
            f" ({totals[0]} records added, {totals[1]} changed, {totals[2]} deleted since stored);"
            f" {self.fixed} re-patched; {len(self.unverified)} not verified (API error);"
            f" {self.api_requests} API request(s)"
        )
        kinds = {k: sum(c.kind == k for c in self.local) for k in ("vanished", "changed", "extractor")}
        out.append(
            f"local changes: {len(self.local)} run(s) no longer hold the records we wrote"
            f" ({kinds['vanished']} vanished, {kinds['changed']} changed, {kinds['extractor']} the extractor's);"
            f" {self.local_fixed} re-enriched"
        )
        return out


def _key(record: dict[str, Any]) -> str:
    return str(record.get("id"))


def compare(run_id: str, stored: list[dict[str, Any]], fresh: list[dict[str, Any]]) -> Drift:
    """Records by id: added (new in the API), changed (different JSON), deleted (gone)."""
    old = {_key(r): r for r in stored}
    new = {_key(r): r for r in fresh}
    return Drift(
        run_id,
        added=sorted(set(new) - set(old)),
        deleted=sorted(set(old) - set(new)),
        changed=sorted(k for k in set(old) & set(new) if _canon(old[k]) != _canon(new[k])),
    )


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def verify(
    database: Database,
    langsmith: LangSmith,
    window: Window,
    *,
    sample: int | None = 100,
    fix: bool = False,
    batch_size: int = 100,
    delay_ms: int = 1000,
    stop: threading.Event | None = None,
) -> VerifyReport:
    """Re-fetch ``sample`` random enriched runs (all when None) and compare with what is stored."""
    if sample is not None and sample < 1:
        raise UsageError("--sample must be 1 or more")
    report = VerifyReport()
    gw = db.connect(database)
    source = FeedbackSource(langsmith, delay_ms=delay_ms, stop=stop or threading.Event())
    try:
        gw.require_schema()
        if fix:  # --fix writes: under the lease, as `verify --fix` (a plain verify only reads)
            gw.lease = db.Lease.take(database, "verify --fix")
        params = {"since": window.since, "until": window.until, "sample": sample}
        run_ids = [r["run_id"] for r in gw.execute("verify_sample", params)]
        gw.commit()
        for start in range(0, len(run_ids), batch_size):
            rows = gw.execute("verify_rows", {"run_ids": run_ids[start : start + batch_size]})
            gw.commit()
            # Rows that no longer hold what we wrote are a local change, not drift of the API.
            chunk = [r for r in rows if r["ours"]]
            changed = [r for r in rows if not r["ours"]]
            for r in changed:
                kind = "vanished" if r["vanished"] else "extractor" if r["extractor"] else "changed"
                report.local.append(LocalChange(r["run_id"], kind))
            # the extractor's records are left alone; vanished and changed ones are re-enriched
            refetch = [r for r in changed if not r["extractor"]] if fix else []
            report.checked += len(chunk) + len(changed)
            fetched = fetch_isolating(source, [r["run_id"] for r in chunk + refetch])
            drifted: list[Row] = []
            outcomes = {}
            local_rows: list[Row] = []
            local_outcomes = {}
            for r in refetch:
                got = fetched[r["run_id"]]
                if isinstance(got, str):
                    report.unverified.append(Drift(r["run_id"], error=got))
                    continue
                outcome = decide(got, r["feedback_stats"])
                if outcome.state == DONE:
                    local_rows.append(Row(r["id"], r["run_id"], r["run_date"], r["data_type"], r["feedback_stats"]))
                    local_outcomes[r["run_id"]] = outcome
            if local_rows:
                report.local_fixed += write(gw, local_rows, local_outcomes, refetch=True, replace="any").enriched
            for r in chunk:
                got = fetched[r["run_id"]]
                if isinstance(got, str):
                    report.unverified.append(Drift(r["run_id"], error=got))
                    continue
                drift = compare(r["run_id"], r["stored"] or [], got)
                if drift.drifted:
                    report.drifts.append(drift)
                    row = Row(r["id"], r["run_id"], r["run_date"], r["data_type"], r["feedback_stats"])
                    outcome = decide(got, r["feedback_stats"])
                    if outcome.state == DONE:
                        drifted.append(row)
                        outcomes[r["run_id"]] = outcome
            if fix and drifted:
                report.fixed += write(gw, drifted, outcomes, refetch=True).enriched
        report.api_requests = source.requests_sent
        return report
    finally:
        if gw.lease is not None:
            gw.lease.release()
        source.close()
        gw.close()


@dataclass
class Change:
    """What retry, reset or revert did (or would do, with dry_run)."""

    rows: int
    checkpoints: int = 0
    dry_run: bool = False


def retry(database: Database, window: Window, reason: str | None = None) -> Change:
    """Give failed runs their attempts back: the next `backfill run` tries them again."""
    gw = db.connect(database)
    try:
        gw.require_schema()
        with gw.transaction():
            done = gw.execute("retry_failed", {"since": window.since, "until": window.until, "reason": reason})
        return Change(len(done))
    finally:
        gw.close()


def _by_day(database: Database, window: Window, dry_run: bool, count: str, keep_ledger: bool, revert: bool) -> Change:
    gw = db.connect(database)
    try:
        gw.require_schema()
        params = {"since": window.since, "until": window.until}
        if dry_run:
            n = gw.one(count, params)["rows"]
            gw.commit()
            return Change(n, dry_run=True)
        command = "revert" if revert else "reset"
        _require_owner(gw, command, revert)
        # Under the lease: a concurrent `backfill run` would re-patch what we remove.
        with db.holding(gw, command):
            # the marks first: rows whose checkpoint goes (or that lack records again) below
            # a mark would not be walked again; a kill after this only costs a full walk
            with gw.transaction():
                gw.execute("unsettle", params)
                # a listing extended after this would write its staged copies back
                gw.execute("listings_retire", {**params, "why": f"retired by backfill {command}"})
            days = [r["run_date"] for r in gw.execute("ledger_days", params)]
            gw.commit()
            change = Change(0)
            for day in days:  # one short transaction per day, each checking the lease
                with gw.transaction():
                    if revert:
                        change.rows += len(gw.execute("revert_day", {"day": day}))
                    change.checkpoints += gw.rowcount("forget_day", {"day": day, "keep_ledger": keep_ledger})
        if not revert:
            change.rows = change.checkpoints
        return change
    finally:
        gw.close()


def _require_owner(gw: db.Gateway, command: str, revert: bool) -> None:
    """Say, in one line and before anything changes, that this command needs the owner.

    sql/grants.sql gives the runner role no DELETE on purpose: reset and revert forget
    checkpoint rows, and granting DELETE to make them work would widen every `backfill run`.
    """
    got = gw.one("check_privileges")
    gw.commit()
    missing = [
        what
        for what, ok in (
            ("DELETE on feedback_backfill_status", got["status_delete"]),
            ("DELETE on feedback_backfill_settled", got["settled_delete"]),
            ("UPDATE (data) on runs", got["runs_update_data"] or not revert),
            ("UPDATE on feedback_backfill_listing", got["listing_update"]),
            ("INSERT, UPDATE on feedback_backfill_lease", got["lease_insert"] and got["lease_update"]),
        )
        if not ok
    ]
    if missing:
        raise NeedsOwner(
            f"`backfill {command}` needs {' and '.join(missing)}, which role {got['role']} lacks: run it as the"
            " owner of the backfill tables (the role that ran `backfill db upgrade`); the runner role is"
            " deliberately not granted DELETE. Nothing was changed"
        )


def reset(database: Database, window: Window, dry_run: bool = False) -> Change:
    """Forget the checkpoint of the window (no feedback, failed, invalid): examine them again.

    The rows of runs whose feedback_records we wrote are kept: they are the ledger revert needs.
    """
    return _by_day(database, window, dry_run, "reset_count", keep_ledger=True, revert=False)


def revert(database: Database, window: Window, dry_run: bool = False) -> Change:
    """Remove exactly the feedback_records the backfill added, and the window's checkpoint."""
    return _by_day(database, window, dry_run, "revert_count", keep_ledger=False, revert=True)


__all__ = ["Change", "Drift", "LocalChange", "VerifyReport", "compare", "reset", "retry", "revert", "verify"]
