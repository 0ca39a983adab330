"""Rows proven empty are settled, not written: the count of them on each day's mark, and the rows no proof covers.

Revision ID: fb0008
Revises: fb0007
Create Date: 2026-12-05

Under the project strategy a completed, sample-checked listing proves that a row of its
project without staged records, whose ``feedback_stats`` promise nothing and that lacks
records, has no feedback: the apply neither reads its document nor writes a checkpoint row
for it, and the day's mark records it (``backfill.domain.settling``). Two things make that
exact and cheap:

* ``feedback_backfill_settled.empty``: per project, how many rows of the day at or below
  ``id_bound`` were settled so (counted when the mark was written, in its transaction) and
  have not been examined since (a checkpoint row written for one of them takes it off, in
  the checkpoint's transaction). `backfill status` adds them to no_feedback from this
  narrow table, without an anti-join over the day's rows. A constant default on our own
  small table: metadata only, a brief lock.
* ``runs_feedback_unprovable_idx``: rows lacking records that no listing can prove empty,
  because no request can name them (run_id not in the API's canonical form) or they are not
  a run's document (``data`` is not an object: the app's CHECK constraints pass on NULL).
  The apply visits them through this index (the runs strategy records them invalid) instead
  of reading every row's document to find them. A superset of the invalid rows: a run_id
  that is a UUID in another spelling is visited and judged as any row. Almost always empty;
  built CONCURRENTLY as in fb0005 (the same invalid-leftover handling, the same
  -x lock_timeout).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
from backfill.migrations import online

revision: str = "fb0008"
down_revision: str | None = "fb0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Word for word in backfill/sql/queries.sql (walk_candidates): fb0002's pending predicate,
#: and what makes a row unprovable.
UNPROVABLE = "runs_feedback_unprovable_idx"
UNPROVABLE_ON = (
    "runs (run_date, id) WHERE COALESCE(jsonb_typeof(data -> 'feedback_records'), 'null') = 'null'"
    " AND (jsonb_typeof(data) <> 'object'"
    " OR run_id !~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$')"
)


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.execute("ALTER TABLE feedback_backfill_settled ADD COLUMN empty jsonb NOT NULL DEFAULT '{}'::jsonb")
    online.build_indexes({UNPROVABLE: UNPROVABLE_ON})


def downgrade() -> None:
    # The marks would claim rows settled that no checkpoint row records: drop them with the
    # counts (the next run walks those days whole, as after `backfill reset`).
    online.drop_indexes([UNPROVABLE])
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.execute("DELETE FROM feedback_backfill_settled WHERE empty <> '{}'::jsonb")
    op.execute("ALTER TABLE feedback_backfill_settled DROP COLUMN empty")
