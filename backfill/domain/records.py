"""What a run's fetched feedback means for its row: pure functions, no I/O."""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

DONE, NO_FEEDBACK, FAILED, INVALID = "done", "no_feedback", "failed", "invalid"
#: Why a row failed (``FAILED``, retried up to --max-attempts) or is invalid (never fetched).
FAILED_REASONS = ("api_error", "mismatch", "unstorable")
INVALID_RUN_ID, NOT_AN_OBJECT = "invalid_run_id", "not_an_object"
INVALID_REASONS = (INVALID_RUN_ID, NOT_AN_OBJECT)


@dataclass(frozen=True)
class Outcome:
    """The checkpoint of one run: state, reason (failed/invalid), records to store, error."""

    state: str
    reason: str | None = None
    records: tuple[dict[str, Any], ...] = ()
    error: str | None = None


@functools.lru_cache(maxsize=4096)  # a few batches: the same ids come back within one
def canonical_run_id(run_id: str) -> str | None:
    """The run id as the API writes it (lower-case UUID), or None when it is not a UUID.

    Cached: a row's id is canonicalized by the walk, the request, the answer and the write.
    """
    try:
        return str(uuid.UUID(run_id.strip()))
    except (ValueError, AttributeError):
        return None


def promised(feedback_stats: Any) -> int:
    """How many records the row's aggregated ``feedback_stats`` count (sum of ``n``)."""
    if not isinstance(feedback_stats, dict):
        return 0
    total = 0
    for stats in feedback_stats.values():
        n = stats.get("n") if isinstance(stats, dict) else None
        if isinstance(n, int) and not isinstance(n, bool) and n > 0:
            total += n
    return total


#: What PostgreSQL's jsonb cannot store: U+0000, and lone UTF-16 surrogates (valid JSON
#: escapes, e.g. an emoji cut in half, but not encodable as UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable(value: Any) -> str | None:
    """The first character of a string (or key) that jsonb cannot store, as \\uXXXX; else None.

    One pass of orjson clears almost every record: it refuses lone surrogates and writes
    U+0000 as an escape. Only a record it refuses, or whose text shows that escape (perhaps
    a backslash written out), is walked string by string, which is far slower.
    """
    try:
        if b"\\u0000" not in orjson.dumps(value):
            return None
    except orjson.JSONEncodeError:
        pass  # a lone surrogate, or not JSON as is: walk it
    return _walk(value)


def _walk(value: Any) -> str | None:
    if isinstance(value, str):
        m = _UNSTORABLE.search(value)
        return f"\\u{ord(m.group()):04x}" if m else None
    if isinstance(value, dict):
        return next((c for k, v in value.items() for c in (_walk(k), _walk(v)) if c), None)
    if isinstance(value, list):
        return next((c for v in value if (c := _walk(v))), None)
    return None


def created_at(record: dict[str, Any]) -> dt.datetime | None:
    """A record's created_at (naive taken as UTC), or None when it is missing or not a date."""
    raw = record.get("created_at")
    try:
        when = dt.datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        return None
    if when is None:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _created(record: dict[str, Any]) -> tuple[int, dt.datetime | str, str]:
    raw, key = record.get("created_at"), str(record.get("id"))
    if not isinstance(raw, str):
        return (0, "", key)
    when = created_at(record)
    if when is None:
        return (2, raw, key)
    return (1, when.astimezone(dt.UTC).replace(tzinfo=None).isoformat(), key)


def sort_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Deterministic order: by ``created_at`` (records without one first), then ``id``."""
    return sorted(records, key=_created)


def decide(records: list[dict[str, Any]], feedback_stats: Any, *, keep_partial: bool = False) -> Outcome:
    """The outcome for a run whose fetch succeeded.

    Fewer records than ``feedback_stats`` count is a mismatch, retried by later runs; on the
    last attempt (``keep_partial``) the records the API did return are stored with it, so
    that giving up never means losing what exists.
    """
    for rec in records:
        char = unstorable(rec)
        if char:
            return Outcome(
                FAILED,
                "unstorable",
                error=f"record {rec.get('id')} holds {char}, which PostgreSQL jsonb cannot store",
            )
    expected = promised(feedback_stats)
    if len(records) < expected:
        error = f"API returned {len(records)} record(s), feedback_stats count {expected}"
        kept = tuple(sort_records(records)) if keep_partial else ()
        return Outcome(FAILED, "mismatch", records=kept, error=error + (", stored" if kept else ""))
    if not records:
        return Outcome(NO_FEEDBACK)
    return Outcome(DONE, records=tuple(sort_records(records)))


def canonical(record: Any) -> str:
    """A record compared by content: its JSON with sorted keys."""
    return json.dumps(record, sort_keys=True)


def diff(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> tuple[list[str], list[str], list[str]]:
    """Records by id from ``old`` to ``new``: (added, changed, deleted) ids, each sorted."""
    before = {str(r.get("id")): canonical(r) for r in old}
    after = {str(r.get("id")): canonical(r) for r in new}
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    return sorted(after.keys() - before.keys()), changed, sorted(before.keys() - after.keys())
