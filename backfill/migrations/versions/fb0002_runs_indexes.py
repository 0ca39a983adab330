"""Indexes on runs: GIN path indexes on the JSONB, and the walker's partial index.

Revision ID: fb0002
Revises: fb0001
Create Date: 2026-11-29

Built with CREATE INDEX CONCURRENTLY, outside any transaction, one after another: the
extractor keeps writing meanwhile. lock_timeout bounds how long we queue for the table's
SHARE UPDATE EXCLUSIVE lock (the app's writes never wait on it); statement_timeout is lifted
because a build on a large table legitimately takes minutes. An interrupted concurrent
build leaves an INVALID index behind that IF NOT EXISTS would happily keep: on re-run we
find it through pg_index.indisvalid, drop it concurrently and build it again.
Tune the wait with: alembic -x lock_timeout=10s upgrade head
"""

from __future__ import annotations

from collections.abc import Sequence

from backfill.migrations import online

revision: str = "fb0002"
down_revision: str | None = "fb0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The walker's predicate, word for word (see walk_batch in backfill/sql/queries.sql):
#: the planner only uses a partial index whose predicate the query implies.
PENDING = "COALESCE(jsonb_typeof(data -> 'feedback_records'), 'null') = 'null'"

INDEXES: dict[str, str] = {
    # Rationale queries: data->'feedback_records' @> '[{"key": ..., "value": {...}}]'.
    "runs_feedback_records_gin_idx": "runs USING gin ((data -> 'feedback_records') jsonb_path_ops)",
    "runs_feedback_stats_gin_idx": "runs USING gin ((data -> 'feedback_stats') jsonb_path_ops)",
    # Rows of a date window still lacking feedback records, in walk order.
    "runs_feedback_pending_idx": f"runs (run_date, id) WHERE {PENDING}",
}


def upgrade() -> None:
    online.build_indexes(INDEXES)


def downgrade() -> None:
    online.drop_indexes(list(reversed(INDEXES)))
