"""Feedback by project: a project's id by name, and its run-level records created in a time slice.

``GET /feedback?session=<project id>&level=run&min_created_at=a&max_created_at=b`` lists the
records of one slice of creation time; the runner plans the slices and stages them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from backfill.domain.listing import ListingFailed
from backfill.domain.records import canonical_run_id
from backfill.domain.rows import Tally
from backfill.langsmith.pages import PagingFailed, page_through
from backfill.langsmith.transport import BatchFailed, Transport, UrlTooLong

#: A slice needing more pages than this (three times the records planned) is halved instead;
#: the pages it took are lost, so slices grow at most twofold from one to the next.
MAX_SLICE_PAGES = 60


class SliceRefused(Exception):
    """This slice could not be listed whole: halve it."""


def session_id(transport: Transport, project: str, tally: Tally) -> str:
    """The project's id in LangSmith, asked by name (GET /sessions?name=)."""
    try:
        found = transport.get_page({"name": project, "limit": 1, "include_stats": False}, tally, "/sessions")
    except (BatchFailed, UrlTooLong) as exc:
        raise ListingFailed(f"LangSmith did not say the id of project {project!r} ({exc})") from None
    # an entry without an id (a proxy's or an older server's answer) cannot name the project
    named = [s for s in found if isinstance(s, dict) and s.get("name") == project]
    match = [s for s in named if canonical_run_id(str(s.get("id")))]
    if not match and named:
        raise ListingFailed(f"LangSmith named project {project!r} without a valid id (GET /sessions?name=)")
    if not match:
        raise ListingFailed(f"LangSmith knows no project named {project!r} (GET /sessions?name=)")
    return str(canonical_run_id(str(match[0]["id"])))


def list_slice(transport: Transport, sid: str, a: dt.datetime, b: dt.datetime, tally: Tally) -> list[dict[str, Any]]:
    """The project's run-level records created in [a, b], each once; ``SliceRefused`` when the
    slice cannot be listed whole (halve it)."""
    params: dict[str, Any] = {
        "session": [sid],
        "level": "run",
        "min_created_at": a.isoformat(),
        "max_created_at": b.isoformat(),
    }

    def owner(rec: dict[str, Any]) -> str | None:
        # not a run-level record of this project: not ours to stage
        if rec.get("session_id") not in (None, sid):
            return None
        return canonical_run_id(str(rec.get("run_id")))

    try:
        return [
            rec for _, rec in page_through(lambda p: _page(transport, p, tally), params, owner, tally, MAX_SLICE_PAGES)
        ]
    except PagingFailed as exc:
        raise SliceRefused(exc.detail) from None


def _page(transport: Transport, params: dict[str, Any], tally: Tally) -> list[Any]:
    """One page; a refusal is the slice's (halve it) once the API proved healthy, as in ``by_run``."""
    while True:
        try:
            return transport.get_page(params, tally)
        except BatchFailed as exc:
            if not transport.proven(exc, tally):
                continue  # an outage was waited out: ask again
            raise SliceRefused(exc.detail) from None
        except UrlTooLong as exc:
            raise SliceRefused(exc.detail) from None
