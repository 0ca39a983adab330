"""Project listings in the archive: the listing rows (feedback_backfill_listing) and the staged
records (feedback_backfill_staged) a listing brought in before they are applied to ``runs``."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from typing import Any

from backfill.archive import gateway as db
from backfill.archive.ledger import count_api
from backfill.archive.reader import committing
from backfill.config import Window
from backfill.domain.listing import OVERLAP, Listing, extends, resumable, window_start
from backfill.domain.records import canonical_run_id, created_at
from backfill.domain.rows import Row, Tally


def session_ids(gw: db.Gateway, project: str, window: Window) -> list[str]:
    """The LangSmith project ids (session_id) the window's rows of ``project`` name."""
    rows = committing(gw)("project_session_ids", {"project": project, "since": window.since, "until": window.until})
    return sorted({i for i in (canonical_run_id(str(r["session_id"])) for r in rows) if i})


def latest(gw: db.Gateway, project: str) -> dict[str, Any] | None:
    """The project's latest listing row (in the caller's transaction)."""
    rows = gw.execute("listing_latest", {"project": project})
    return rows[0] if rows else None


def begin(gw: db.Gateway, project: str, sid: str, window: Window, invocation_id: int | None, *, fresh: bool) -> Listing:
    """The listing this pass works on: the project's unfinished one (resumed where it stopped,
    when ``resumable``), else a new one up to now; unless ``fresh`` (a --refetch wants records
    as they are now), a new one after a completed listing lists only what was created since
    (``--follow``)."""
    start = window_start(window)
    row = latest(gw, project)
    now: dt.datetime = gw.one("now")["now"]
    gw.commit()
    last = Listing(**row) if row else None
    if last is not None and last.session_id == sid and last.listed_from <= start:
        if last.applied_at is None and resumable(last, window, now, fresh=fresh):
            return last
        if extends(row, window, fresh=fresh):
            with gw.transaction():
                # what was created before the window began cannot belong to its rows
                gw.execute("staged_prune", {"session_id": sid, "before": start})
                new = gw.one("listing_start", _new(invocation_id, project, sid, start, now, last.listed_to - OVERLAP))
            return Listing(**new)
    with gw.transaction():
        gw.execute("staged_clear", {"session_id": sid})
        new = gw.one("listing_start", _new(invocation_id, project, sid, start, now, start))
    return Listing(**new)


def _new(
    invocation_id: int | None, project: str, sid: str, start: dt.datetime, now: dt.datetime, until: dt.datetime
) -> dict[str, Any]:
    return {
        "invocation_id": invocation_id,
        "project": project,
        "session_id": sid,
        "listed_from": start,
        "listed_to": now,
        "listed_until": max(start, until),
    }


def stage(
    gw: db.Gateway,
    listing: Listing,
    records: list[dict[str, Any]],
    until: dt.datetime,
    api: Tally,
    invocation_id: int | None,
    owed: int = 0,
) -> None:
    """Stage a slice and move the listing past it, in one transaction: its requests counted on the
    invocation row, and with the ``owed`` requests the listing made before it, on the listing row."""
    rows = []
    for rec in records:
        when = created_at(rec)
        rows.append(
            {
                "record_id": str(rec.get("id")),
                "run_id": canonical_run_id(str(rec.get("run_id"))),
                "session_id": listing.session_id,
                "created_at": when.isoformat() if when else None,
                # JSON text, ASCII-escaped: a NUL or a lone surrogate is carried to decide() intact
                "record": json.dumps(rec),
            }
        )
    with gw.transaction():
        if rows:
            gw.execute("stage_records", {"records": db.Jsonb(rows), "listing_id": listing.id})
        gw.execute(
            "listing_progress",
            {"listing_id": listing.id, "listed_until": until, "records": len(rows), "requests": api.requests + owed},
        )
        count_api(gw, invocation_id, api)
    listing.records += len(rows)
    listing.requests += api.requests + owed
    listing.listed_until = until


def done(gw: db.Gateway, listing: Listing, fallback: str | None, owed: int = 0) -> None:
    """The listing is complete (or given up for ``fallback``); ``owed``: its requests not yet on its row
    (already on the invocation row)."""
    with gw.transaction():
        gw.execute("listing_done", {"listing_id": listing.id, "fallback": fallback, "requests": owed})
    listing.fallback = fallback
    listing.requests += owed


def applied(gw: db.Gateway, listing: Listing) -> None:
    with gw.transaction():
        gw.execute("listing_applied", {"listing_id": listing.id})


def outside(gw: db.Gateway, listing: Listing, window: Window) -> int:
    """Records staged for runs that are not rows of the window: counted, never written."""
    params = {"session_id": listing.session_id, "since": window.since, "until": window.until}
    return int(committing(gw)("staged_outside", params)[0]["outside"])


def staged(
    gw: db.Gateway, listing: Listing, run_ids: list[str], stale: set[str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Canonical run id -> its staged records (parsed back from their JSON text); the runs with a
    record staged by an earlier listing than ``listing`` are added to ``stale`` when given.
    The caller ends the read's transaction (with its other reads: fewer round trips)."""
    ids = [c for c in (canonical_run_id(r) for r in run_ids) if c]
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if ids:
        for r in gw.execute("staged_for_runs", {"run_ids": ids, "session_id": listing.session_id}):
            out[r["run_id"]].append(json.loads(r["record"]))
            if stale is not None and r["listing_id"] != listing.id:
                stale.add(r["run_id"])
    return out


def examined_before(gw: db.Gateway, rows: list[Row]) -> set[str]:
    """The rows' run ids (as stored) that hold a status entry (the caller ends the read's transaction)."""
    if not rows:
        return set()
    return {r["run_id"] for r in gw.execute("examined_before", {"run_ids": [r.run_id for r in rows]})}


def sample(gw: db.Gateway, listing: Listing, window: Window, n: int) -> list[str]:
    """Up to ``n`` runs of each kind the sampled check compares: promising records, and with staged records."""
    params = {
        "project": listing.project,
        "session_id": listing.session_id,
        "since": window.since,
        "until": window.until,
        "n": n,
        "salt": str(listing.id),
    }
    return [r["run_id"] for r in committing(gw)("sample_runs", params) if canonical_run_id(r["run_id"])]
