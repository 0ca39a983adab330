"""The fake's run catalog: the runs it "holds", so that it can list a project's feedback.

Without a catalog the fake answers per run id only (GET /feedback?run=...). A project listing
(``session=``, ``level``, ``min_created_at``, ``max_created_at``) enumerates records, so the
fake must know which runs exist, in which project (tracer session) and since when: that is
``RunInfo``. A cataloged run's records are placed in time once, when it is added (created
after its run started, never after the catalog's horizon), and that one list is what both the
per-run answer and every listing serve.

This module holds the data and the pure filtering; server.py routes requests to it.
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import random
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from backfill.sandbox.fake_langsmith.plumbing import Answer, canonical

#: The tenant (workspace) every session of the fake belongs to.
TENANT_ID = str(uuid.UUID(bytes=hashlib.sha256(b"fake-tenant").digest()[:16], version=4))
LEVELS = ("run", "session")


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run the fake holds: its id, its project's (tracer session's) id, when it started.

    ``project`` (the session's name) is optional: when given, GET /sessions knows the name.
    """

    run_id: str
    session_id: str
    start_time: dt.datetime
    project: str | None = None


@dataclass(frozen=True)
class Filters:
    """The parsed query of a GET /feedback (all combine as AND)."""

    runs: tuple[str, ...]
    sessions: frozenset[str]
    level: str | None
    min_created: dt.datetime | None
    max_created: dt.datetime | None
    keys: frozenset[str]
    sources: frozenset[str]

    @property
    def listing(self) -> bool:
        """No run named: the answer enumerates the catalog (of the sessions named, or all)."""
        return not self.runs

    def keeps(self, record: dict[str, Any], created: dt.datetime | None = None) -> bool:
        """Whether ``record`` (created at ``created``, parsed here if not given) passes the
        filters other than run and session (those choose the candidate records)."""
        if self.keys and record.get("key") not in self.keys:
            return False
        if self.sources and (record.get("feedback_source") or {}).get("type") not in self.sources:
            return False
        if self.level is not None and (self.level == "run") != (record.get("run_id") is not None):
            return False
        if self.min_created is None and self.max_created is None:
            return True
        created = created or created_of(record)
        if created is None:
            return False
        return (self.min_created is None or created >= self.min_created) and (
            self.max_created is None or created <= self.max_created
        )


def _invalid(name: str, msg: str) -> Answer:
    return Answer(422, [{"loc": ["query", name], "msg": msg}])


def parse_datetime(raw: str, name: str = "min_created_at") -> dt.datetime:
    """An ISO 8601 instant (``Z``, an offset, or none: UTC), else the API's 422."""
    try:
        value = dt.datetime.fromisoformat(raw.strip().replace("z", "Z"))
    except ValueError:
        raise _invalid(name, "invalid datetime format") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def created_of(record: dict[str, Any]) -> dt.datetime | None:
    raw = record.get("created_at")
    if isinstance(raw, dt.datetime):
        return raw if raw.tzinfo is not None else raw.replace(tzinfo=dt.UTC)
    if not isinstance(raw, str):
        return None
    try:
        return parse_datetime(raw)
    except Answer:
        return None


def parse_filters(query: dict[str, list[str]]) -> Filters:
    """The filters of a GET /feedback query; a malformed uuid, datetime or level is a 422."""
    try:
        runs = tuple(canonical(r) for r in query.get("run", []))
    except ValueError:
        raise _invalid("run", "value is not a valid uuid") from None
    try:
        sessions = frozenset(canonical(s) for s in query.get("session", []))
    except ValueError:
        raise _invalid("session", "value is not a valid uuid") from None
    level = query["level"][-1] if "level" in query else None
    if level is not None and level not in LEVELS:
        raise _invalid("level", "value is not a valid enumeration member; permitted: 'run', 'session'")
    bounds = [parse_datetime(query[n][-1], n) if n in query else None for n in ("min_created_at", "max_created_at")]
    return Filters(
        runs,
        sessions,
        level,
        bounds[0],
        bounds[1],
        frozenset(query.get("key", [])),
        frozenset(query.get("source", [])),
    )


def _iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def place(records: list[dict[str, Any]], info: RunInfo, horizon: dt.datetime) -> list[dict[str, Any]]:
    """``records`` of a cataloged run, made its own in time and project.

    The first is created minutes to hours after the run started (one in six some days later:
    late reviews), the next ones minutes apart; ``modified_at`` follows within the hour. Offsets
    that would pass ``horizon`` (feedback cannot be created in the future) are scaled down to
    fit between the start and the horizon, order kept. Deterministic from the run id and the
    horizon.
    """
    if not records:
        return []
    rng = random.Random(int.from_bytes(hashlib.sha256(f"placed:{info.run_id}".encode()).digest(), "big"))
    first = rng.randrange(60, 6 * 3600) + (rng.randrange(1, 6) * 86400 if rng.random() < 1 / 6 else 0)
    offsets = [first + rng.random()]
    for _ in records[1:]:
        offsets.append(offsets[-1] + rng.randrange(60, 7200) + rng.random())
    room = (horizon - info.start_time).total_seconds()
    if offsets[-1] >= room:
        # a share of the room, not all of it: clamped runs must not crowd at the horizon
        scale = max(room, 0.0) * (0.05 + 0.95 * rng.random()) / (offsets[-1] + 1)
        offsets = [o * scale for o in offsets]
    placed = []
    for rec, offset in zip(records, offsets, strict=True):
        created = info.start_time + dt.timedelta(seconds=offset)
        modified = created + dt.timedelta(seconds=rng.randrange(0, 3600) * (rng.random() < 0.5))
        placed.append(
            {
                **rec,
                "session_id": info.session_id,
                "created_at": _iso(created),
                "modified_at": _iso(max(created, min(modified, horizon))),
            }
        )
    return placed


def session_json(session_id: str, name: str | None) -> dict[str, Any]:
    """A tracer session as GET /sessions answers it (the fields TracerSessionResult needs)."""
    return {
        "id": session_id,
        "name": name,
        "tenant_id": TENANT_ID,
        "start_time": "2026-01-01T00:00:00.000000",
        "end_time": None,
        "description": None,
        "extra": None,
        "reference_dataset_id": None,
    }


class Catalog:
    """The runs the fake holds, their placed records, and each session's listing (cached)."""

    def __init__(self) -> None:
        self._catalog_lock = threading.Lock()
        self._runs: dict[str, RunInfo] = {}
        self._placed: dict[str, list[dict[str, Any]]] = {}
        self._names: dict[str, str] = {}  # session id -> name
        self._session_level: dict[str, list[dict[str, Any]]] = {}  # session id -> records without a run
        # session id -> [(created_at, record)] of its runs' served records, newest first
        self._listings: dict[str, list[tuple[dt.datetime | None, dict[str, Any]]]] = {}

    def add_runs(self, runs: Iterable[RunInfo], *, horizon: dt.datetime | None = None) -> None:
        """Hold ``runs``: they appear in their session's listings, their records placed in time.

        Records are created no later than ``horizon``: by default the latest start of ``runs``
        plus one hour, or now if that is earlier (deterministic for an archive of the past).
        """
        infos = [RunInfo(canonical(r.run_id), canonical(r.session_id), _utc(r.start_time), r.project) for r in runs]
        if not infos:
            return
        if horizon is None:
            latest = max(i.start_time for i in infos) + dt.timedelta(hours=1)
            horizon = min(latest, dt.datetime.now(dt.UTC))
        placed = {i.run_id: place(self._generated(i.run_id), i, _utc(horizon)) for i in infos}
        with self._catalog_lock:
            for info in infos:
                self._runs[info.run_id] = info
                # only runs with records: a million runs, mostly without feedback, stay small
                if placed[info.run_id]:
                    self._placed[info.run_id] = placed[info.run_id]
                else:
                    self._placed.pop(info.run_id, None)
                if info.project is not None:
                    self._names[info.session_id] = info.project
            self._listings.clear()

    def add_project(self, name: str, session_id: str) -> None:
        """Make GET /sessions know the project ``name`` (with or without runs)."""
        with self._catalog_lock:
            self._names[canonical(session_id)] = name

    def add_session_feedback(self, session_id: str, records: list[dict[str, Any]]) -> None:
        """Session-level records (no ``run_id``) of a project: listed, never in a per-run answer."""
        with self._catalog_lock:
            self._session_level.setdefault(canonical(session_id), []).extend(records)
            self._listings.clear()

    def cataloged(self, run_id: str) -> RunInfo | None:
        with self._catalog_lock:
            return self._runs.get(run_id)

    def sessions(self) -> dict[str, str | None]:
        """Every session the fake knows (named, or holding runs): id -> name."""
        with self._catalog_lock:
            known: dict[str, str | None] = {i.session_id: None for i in self._runs.values()}
            known.update(self._names)
        return known

    def _generated(self, run_id: str) -> list[dict[str, Any]]:
        """The records the feedback function generates for ``run_id`` (server.py supplies it)."""
        raise NotImplementedError

    def _placed_of(self, run_id: str) -> list[dict[str, Any]] | None:
        """A cataloged run's placed records; None if it has none (the feedback function's
        answer, ``[]``, stands) or is not cataloged."""
        with self._catalog_lock:
            return self._placed.get(run_id)

    def _listing_of(
        self, session_id: str, served: Callable[[str], list[dict[str, Any]]], overridden: set[str]
    ) -> list[tuple[dt.datetime | None, dict[str, Any]]]:
        """Session ``session_id``'s records as served (``served``: a run's per-run answer),
        newest first, ties by id (descending); built once, until the catalog changes. Only the
        runs with placed records or an override (``overridden``) can have any."""
        with self._catalog_lock:
            cached = self._listings.get(session_id)
            if cached is not None:
                return cached
            candidates = self._placed.keys() | (overridden & self._runs.keys())
            run_ids = sorted(r for r in candidates if self._runs[r].session_id == session_id)
            extra = list(self._session_level.get(session_id, []))
        entries = [(created_of(r), r) for run_id in run_ids for r in served(run_id)]
        entries += [(created_of(r), r) for r in extra]
        entries.sort(key=_newest_first, reverse=True)
        with self._catalog_lock:
            self._listings[session_id] = entries
        return entries

    def _invalidate(self) -> None:
        with self._catalog_lock:
            self._listings.clear()

    def _list(
        self, filters: Filters, served: Callable[[str], list[dict[str, Any]]], overridden: set[str]
    ) -> list[tuple[dt.datetime | None, dict[str, Any]]]:
        """The listing's result set (before faults and paging), newest first."""
        sessions = filters.sessions or frozenset(self.sessions())
        if len(sessions) == 1:
            entries = _between(self._listing_of(next(iter(sessions)), served, overridden), filters)
        else:
            entries = [e for s in sorted(sessions) for e in self._listing_of(s, served, overridden)]
            entries.sort(key=_newest_first, reverse=True)
        return [e for e in entries if filters.keeps(e[1], e[0])]


def _between(
    entries: list[tuple[dt.datetime | None, dict[str, Any]]], filters: Filters
) -> list[tuple[dt.datetime | None, dict[str, Any]]]:
    """The part of a listing (newest first) that a created_at range can keep, found by bisection:
    a slice of a million-run catalog costs its own records, not the catalog's."""
    if filters.min_created is None and filters.max_created is None:
        return entries
    # ascending keys on the reversed order: (-created) is not a datetime, so bisect on positions
    newest = len(entries)
    lo, hi = 0, newest
    if filters.max_created is not None:  # first entry created at or before max_created
        hi_key = filters.max_created
        lo = bisect.bisect_left(range(newest), True, key=lambda i: (entries[i][0] or _OLDEST) <= hi_key)
    if filters.min_created is not None:  # first entry created before min_created
        lo_key = filters.min_created
        hi = bisect.bisect_left(range(newest), True, key=lambda i: (entries[i][0] or _OLDEST) < lo_key)
    return entries[lo:hi]


_OLDEST = dt.datetime.min.replace(tzinfo=dt.UTC)


def _newest_first(entry: tuple[dt.datetime | None, dict[str, Any]]) -> tuple[dt.datetime, str]:
    return entry[0] or _OLDEST, str(entry[1].get("id"))


def _utc(ts: dt.datetime) -> dt.datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=dt.UTC)
