"""After the first run: retry failures, reset, and revert exactly (`backfill retry|reset|revert`)."""

from __future__ import annotations

from dataclasses import dataclass

from backfill.archive import gateway as db
from backfill.archive.lease import holding
from backfill.config import Database, Window
from backfill.errors import NeedsOwner


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
        with holding(gw, command):
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


__all__ = ["Change", "reset", "retry", "revert"]
