"""A batch on its way through the pipeline: the rows read, what the API cost, what was written."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from backfill.domain.records import INVALID, INVALID_RUN_ID, NOT_AN_OBJECT, Outcome, canonical_run_id, promised

#: What a fetch brought for one run: its records, or why its fetch failed.
Answer = list[dict[str, Any]] | str


@dataclass
class Row:
    """A row of the window as the walk returns it (never the whole document)."""

    id: int
    run_id: str
    run_date: dt.date
    data_type: str | None
    feedback_stats: Any
    attempts: int = 0
    #: read at or below its day's settled mark: it may be one settled without a checkpoint row
    #: (``domain.settling``), which its checkpoint then takes off the mark's count
    settled: bool = False


def invalid(row: Row) -> Outcome | None:
    """The outcome of a row no request can serve (its run_id is not a UUID, its data not an object), else None."""
    if canonical_run_id(row.run_id) is None:
        return Outcome(INVALID, INVALID_RUN_ID, error=f"run_id {row.run_id[:80]!r} is not a UUID")
    if row.data_type != "object":
        return Outcome(INVALID, NOT_AN_OBJECT, error=f"data is a JSON {row.data_type}, not an object")
    return None


def promise(row: Row) -> int:
    """What the row's feedback_stats promise; an invalid row is never asked, so it promises nothing."""
    return 0 if invalid(row) is not None else promised(row.feedback_stats)


@dataclass
class Tally:
    """What some requests to LangSmith cost and brought: counted by the code that made them and
    carried with their result, so that the batch they served is charged exactly with them."""

    requests: int = 0
    errors: int = 0
    rate_limit_wait_s: float = 0.0  # waited on 429s
    outage_wait_s: float = 0.0  # waited on failing requests and outage probes
    records: int = 0  # records kept from the answers
    dropped: int = 0  # records dropped: for runs not asked, or repeated across pages

    def __iadd__(self, other: Tally) -> Tally:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


@dataclass(frozen=True)
class Written:
    """What one write checkpointed."""

    examined: int = 0
    enriched: int = 0
    records: int = 0
    no_feedback: int = 0
    skipped: int = 0  # held or changed by another writer: not ours to mark, walked again next run
    failed: Counter[str] = field(default_factory=Counter)  # by reason
