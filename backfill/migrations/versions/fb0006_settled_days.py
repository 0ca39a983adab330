"""feedback_backfill_settled: where a completed walk of each day ended, so that settled rows are not re-read.

Revision ID: fb0006
Revises: fb0005
Create Date: 2026-12-01

The rows found without feedback stay in runs_feedback_pending_idx (we never rewrite them),
so before this revision every invocation passed over each of them once, checked against
the status table: seconds on a large window. One row per run_date of ours says that a
``backfill run`` walked the whole day (every project, no --limit, no row skipped) and
checkpointed every row lacking records whose ``runs.id`` is at most ``id_bound``; ids are
SERIAL, so a run archived later into that day has a higher id and is walked as before.
Below the bound the walk only re-examines, through small indexes, the rows that can have
changed: promised and lacking (runs_feedback_missing_idx), failed with attempts left, and
rows we enriched although their feedback_stats promised nothing, lacking records again
(``feedback_backfill_status_unpromised_idx``, the part of the ledger that
runs_feedback_missing_idx cannot see). ``reset`` and ``revert`` delete the marks of their
window. A narrow table of our own, created empty (a brief lock, no data work), and one
partial index of our status table, built CONCURRENTLY as in fb0005 (a running backfill
keeps checkpointing; the same invalid-leftover handling and -x lock_timeout).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
from backfill.migrations import online

revision: str = "fb0006"
down_revision: str | None = "fb0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Word for word in backfill/sql/queries.sql (walk_settled, count_settled).
UNPROMISED = "feedback_backfill_status_unpromised_idx"
UNPROMISED_ON = "feedback_backfill_status (run_date, row_id) WHERE records_md5 IS NOT NULL AND stats_count = 0"


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.execute(
        """
        CREATE TABLE feedback_backfill_settled (
            run_date date PRIMARY KEY,
            id_bound bigint NOT NULL,
            invocation_id bigint,
            settled_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    online.build_indexes({UNPROMISED: UNPROMISED_ON})


def downgrade() -> None:
    online.drop_indexes([UNPROMISED])
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.execute("DROP TABLE feedback_backfill_settled")
