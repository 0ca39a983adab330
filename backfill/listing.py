"""Feedback in by project: a project's run-level feedback listed by creation time, in slices, staged.

``GET /feedback?session=<project id>&level=run&min_created_at=a&max_created_at=b`` lists the
records created in [a, b]. Feedback cannot be created before its run started, so every
record of the window's runs was created after the window's first day began (less ``SKEW``)
and before the pass began (``listed_to``); records created later are found by the apply
phase, which fetches run by run the rows whose staged records fall short of their
feedback_stats. The range is cut into slices sized from the records expected, so that
``offset`` stays small (a listing paged by offset over thousands of records is the kind a
server stops honouring); a slice that needs more than ``MAX_SLICE_PAGES`` pages, or whose
paging does not advance, or that the API refuses, is halved. Each slice's records are
staged (``feedback_backfill_staged``, keyed by record id: a record met twice is staged once)
in the transaction that moves the listing's progress (``listed_until``) past the slice: a
kill -9 resumes at the last completed slice. Requests go through ``FeedbackSource``: its
pacing, 429s, outages, probes and second-signal abandon are the listing's too.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from . import db
from .config import Window
from .feedback import canonical_run_id
from .source import PAGE_LIMIT, BatchFailed, FeedbackSource, UrlTooLong

#: Listed from this long before the window's first day began: run_date is the date the
#: extractor gave the run (its time zone is not known here, up to 14 h from UTC) and a run's
#: start time is the clock of the client that traced it. One more day of records to list.
SKEW = dt.timedelta(days=1)
#: Records per slice, as planned from what feedback_stats promise (offsets stay below it).
SLICE_RECORDS = 2000
#: A slice needing more pages than this (three times the records planned) is halved instead;
#: the pages it took are lost, so slices grow at most twofold from one to the next.
MAX_SLICE_PAGES = 60
GROWTH = 2.0
#: A pass that extends the previous listing of a project lists again from this long before
#: the previous one ended: a record committed late (created just before that moment, visible
#: just after) is not lost; the records listed twice are staged once.
OVERLAP = dt.timedelta(minutes=10)
#: An unfinished listing that ended longer ago than this is not resumed: a new one lists afresh.
RESUME_AGE = dt.timedelta(hours=1)
#: A slice this short that still cannot be listed makes the project fall back to ``runs``.
MIN_SLICE = dt.timedelta(seconds=1)
#: The first slice when nothing is promised (the range is then mostly empty: slices grow).
FIRST_SLICE = dt.timedelta(hours=6)


class ListingFailed(Exception):
    """The project cannot be listed (``reason``): it is fetched run by run instead."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _SliceRefused(Exception):
    """This slice could not be listed whole: halve it."""


@dataclass
class Listing:
    """A row of feedback_backfill_listing: a project's records created in [listed_from, listed_to]."""

    id: int
    project: str
    session_id: str
    listed_from: dt.datetime
    listed_to: dt.datetime
    listed_until: dt.datetime
    records: int
    requests: int
    completed_at: dt.datetime | None
    applied_at: dt.datetime | None
    fallback: str | None
    invocation_id: int | None


def window_start(window: Window) -> dt.datetime:
    """The earliest creation time a record of the window's runs can have."""
    return dt.datetime.combine(window.since, dt.time(), tzinfo=dt.UTC) - SKEW


def session_id(gw: db.Gateway, source: FeedbackSource, project: str, window: Window) -> str:
    """The project's id in LangSmith: the session_id the extractor archived, else asked by name."""
    rows = gw.execute("project_session_ids", {"project": project, "since": window.since, "until": window.until})
    gw.commit()
    ids = sorted({i for i in (canonical_run_id(str(r["session_id"])) for r in rows) if i})
    if len(ids) > 1:
        raise ListingFailed(f"the window's rows of {project} name {len(ids)} LangSmith projects (session_id)")
    if ids:
        return ids[0]
    try:
        found = source.get_page({"name": project, "limit": 1, "include_stats": False}, "/sessions")
    except (BatchFailed, UrlTooLong) as exc:
        raise ListingFailed(f"LangSmith did not say the id of project {project!r} ({exc})") from None
    # an entry without an id (a proxy's or an older server's answer) cannot name the project
    match = [
        s for s in found if isinstance(s, dict) and s.get("name") == project and canonical_run_id(str(s.get("id")))
    ]
    if not match and any(isinstance(s, dict) and s.get("name") == project for s in found):
        raise ListingFailed(f"LangSmith named project {project!r} without a valid id (GET /sessions?name=)")
    if not match:
        raise ListingFailed(f"LangSmith knows no project named {project!r} (GET /sessions?name=)")
    return str(canonical_run_id(str(match[0]["id"])))


def begin(gw: db.Gateway, project: str, sid: str, window: Window, invocation_id: int | None, *, fresh: bool) -> Listing:
    """The listing this pass works on: the project's unfinished one (resumed where it stopped,
    when ``resumable``), else a new one up to now; unless ``fresh`` (a --refetch wants records
    as they are now), a new one after a completed listing lists only what was created since
    (``--follow``)."""
    start = window_start(window)
    latest = gw.execute("listing_latest", {"project": project})
    now: dt.datetime = gw.one("now")["now"]
    gw.commit()
    last = Listing(**latest[0]) if latest else None
    if last is not None and last.session_id == sid and last.listed_from <= start:
        if last.applied_at is None and resumable(last, window, now, fresh=fresh):
            return last
        if extends(latest[0], window, fresh=fresh):
            with gw.transaction():
                # what was created before the window began cannot belong to its rows
                gw.execute("staged_prune", {"session_id": sid, "before": start})
                row = gw.one("listing_start", _new(invocation_id, project, sid, start, now, last.listed_to - OVERLAP))
            return Listing(**row)
    with gw.transaction():
        gw.execute("staged_clear", {"session_id": sid})
        row = gw.one("listing_start", _new(invocation_id, project, sid, start, now, start))
    return Listing(**row)


def resumable(last: Listing, window: Window, now: dt.datetime, *, fresh: bool) -> bool:
    """Whether an unfinished listing is resumed rather than replaced: not under --refetch (it
    wants records as they are now), not when it ends more than ``RESUME_AGE`` ago (records
    edited since would be staged as they were), not when the window holds days after its end."""
    ends_on = last.listed_to.astimezone(dt.UTC).date()
    return not fresh and now - last.listed_to <= RESUME_AGE and window.until <= ends_on + dt.timedelta(days=1)


def extends(latest: dict[str, Any] | None, window: Window, *, fresh: bool) -> bool:
    """Whether a new listing after ``latest`` (a listing_latest row) lists only what was created since it."""
    return (
        not fresh
        and latest is not None
        and latest["applied_at"] is not None
        and latest["fallback"] is None
        and latest["listed_from"] <= window_start(window)
    )


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


def list_all(
    gw: db.Gateway, source: FeedbackSource, listing: Listing, expected: int, invocation_id: int | None
) -> None:
    """List and stage every slice from ``listing.listed_until`` to ``listing.listed_to``."""
    span = listing.listed_to - listing.listed_until
    width = span * min(1.0, SLICE_RECORDS / expected) if expected > 0 else FIRST_SLICE
    width = max(width, MIN_SLICE)
    a = listing.listed_until
    while a < listing.listed_to:
        b = min(a + width, listing.listed_to)
        try:
            records = _list_slice(source, listing.session_id, a, b)
        except _SliceRefused as refused:
            if b - a <= MIN_SLICE:
                raise ListingFailed(f"the listing of {listing.project} could not be paged ({refused})") from None
            width = max(MIN_SLICE, (b - a) / 2)
            continue
        _stage(gw, source, listing, records, b, invocation_id)
        a = b
        # the next slice sized by what this one held: SLICE_RECORDS each, growing at most GROWTH-fold
        width = max(MIN_SLICE, width * min(GROWTH, max(1 / GROWTH, SLICE_RECORDS / max(len(records), 1))))
    listing.listed_until = a


def _list_slice(source: FeedbackSource, sid: str, a: dt.datetime, b: dt.datetime) -> list[dict[str, Any]]:
    """The records created in [a, b], deduplicated by id across its pages."""
    params: dict[str, Any] = {
        "session": [sid],
        "level": "run",
        "min_created_at": a.isoformat(),
        "max_created_at": b.isoformat(),
        "limit": PAGE_LIMIT,
    }
    out: dict[str, dict[str, Any]] = {}
    offset = pages = 0
    while True:
        page = _page(source, {**params, "offset": offset})
        pages += 1
        new = 0
        for rec in page:
            if not isinstance(rec, dict):
                raise _SliceRefused("malformed answer: a feedback record is not a JSON object")
            key, owner = str(rec.get("id")), canonical_run_id(str(rec.get("run_id")))
            if owner is None or rec.get("session_id") not in (None, sid):
                source.stray += 1  # not a run-level record of this project: not ours to stage
                continue
            if key in out:
                source.duplicates += 1
                continue
            out[key] = rec
            new += 1
        source.records_received += new
        if len(page) < PAGE_LIMIT:
            return list(out.values())
        if new == 0:
            raise _SliceRefused("paging did not advance")
        if pages >= MAX_SLICE_PAGES:
            raise _SliceRefused(f"more than {MAX_SLICE_PAGES} pages")
        offset += len(page)


def _page(source: FeedbackSource, params: dict[str, Any]) -> list[Any]:
    """One page; a refusal is the slice's (halve it) once the API proved healthy, as in ``isolate``."""
    while True:
        try:
            return source.get_page(params)
        except BatchFailed as exc:
            if not source.proven(exc):
                continue  # an outage was waited out: ask again
            raise _SliceRefused(exc.detail) from None
        except UrlTooLong as exc:
            raise _SliceRefused(exc.detail) from None


def created_at(rec: dict[str, Any]) -> dt.datetime | None:
    """A record's created_at (naive taken as UTC), or None when it is missing or not a date."""
    raw = rec.get("created_at")
    try:
        when = dt.datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        return None
    if when is None:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _created(rec: dict[str, Any]) -> str | None:
    when = created_at(rec)
    return when.isoformat() if when else None


def _stage(
    gw: db.Gateway,
    source: FeedbackSource,
    listing: Listing,
    records: list[dict[str, Any]],
    until: dt.datetime,
    invocation_id: int | None,
) -> None:
    """Stage a slice and move the listing past it, in one transaction (the requests counted in it too)."""
    rows = [
        {
            "record_id": str(rec.get("id")),
            "run_id": canonical_run_id(str(rec.get("run_id"))),
            "session_id": listing.session_id,
            "created_at": _created(rec),
            # JSON text, ASCII-escaped: a NUL or a lone surrogate is carried to decide() intact
            "record": json.dumps(rec),
        }
        for rec in records
    ]
    delta = source.unrecorded()
    with gw.transaction():
        if rows:
            gw.execute("stage_records", {"records": db.Jsonb(rows), "listing_id": listing.id})
        gw.execute(
            "listing_progress",
            {"listing_id": listing.id, "listed_until": until, "records": len(rows), "requests": delta[0]},
        )
        gw.execute("count_invocation", api_only(invocation_id, delta))
    source.record(delta)
    listing.records += len(rows)
    listing.requests += delta[0]


def api_only(invocation_id: int | None, delta: tuple[int, int, float, float]) -> dict[str, Any]:
    """count_invocation's parameters for requests that examined no row (a slice, the sampled check)."""
    return {
        "invocation_id": invocation_id,
        **dict.fromkeys(("examined", "enriched", "no_feedback", "failed", "records"), 0),
        "api_requests": delta[0],
        "api_errors": delta[1],
        "rate_limit_wait_s": delta[2],
        "outage_wait_s": delta[3],
    }
