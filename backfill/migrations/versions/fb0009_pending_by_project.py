"""The mark counts the rows it settles from an index, not from the rows: rows lacking records by day and project.

Revision ID: fb0009
Revises: fb0008
Create Date: 2026-12-06

A day's mark under the project strategy counts, per project, the rows a listing proved
empty (``settle_day_proven``, fb0008). It read each of them: their project from the row, a
probe of the status table for each. That count grew with the runs (a 5 M-run fortnight
visits 5 M rows to settle 50 k records), where everything else of the apply follows the
records. ``runs_feedback_pending_project_idx``: fb0002's pending predicate, keyed by
``(run_date, project, id)``, so that a day's rows lacking records are counted per project
by an index-only scan of a range; the few of them that hold a checkpoint row are counted
from the status table's side and taken off. Built CONCURRENTLY as in fb0005 and fb0008 (the
same invalid-leftover handling, the same -x lock_timeout). Its cost: one more index entry
per row the extractor archives without records, removed when the row gets them. Its
predicate adds ``mod(id, 1) = 0`` (true of every row) so that no other query's plan changes.
"""

from __future__ import annotations

from collections.abc import Sequence

from backfill.migrations import online

revision: str = "fb0009"
down_revision: str | None = "fb0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Word for word in backfill/sql/queries.sql (settle_day_proven): fb0002's pending predicate,
#: and ``mod(id, 1) = 0``, true of every row, which only that count states. The planner may take a
#: partial index only for a query whose conditions prove its predicate: with the pending
#: predicate alone, the walks and count_pending (planned with their values: ``id > 0`` proves
#: ``id > 0``, ``project = 'a'`` proves ``project IS NOT NULL``) took it instead of the range of
#: runs_feedback_pending_idx that skips a settled day's rows; no condition of theirs proves this.
PENDING_BY_PROJECT = "runs_feedback_pending_project_idx"
PENDING_BY_PROJECT_ON = (
    "runs (run_date, project, id)"
    " WHERE COALESCE(jsonb_typeof(data -> 'feedback_records'), 'null') = 'null' AND mod(id, 1) = 0"
)


def upgrade() -> None:
    online.build_indexes({PENDING_BY_PROJECT: PENDING_BY_PROJECT_ON})


def downgrade() -> None:
    online.drop_indexes([PENDING_BY_PROJECT])
