"""The project strategy: feedback listed by project and creation time, staged, then applied.

Revision ID: fb0007
Revises: fb0006
Create Date: 2026-12-01

`backfill run --strategy project` lists a project's run-level feedback by creation time
(GET /feedback?session=...&level=run&min_created_at=...&max_created_at=...) instead of
naming every run of the window in some request. Two tables of our own, nothing on ``runs``:

* ``feedback_backfill_listing``: one row per listing of a project, its range
  (``listed_from`` .. ``listed_to``, the moment the pass began) and its progress
  (``listed_until``: every slice up to there is staged, so a kill -9 resumes at the last
  completed slice), when it was completed, applied, or why it fell back to the runs
  strategy (``fallback``).
* ``feedback_backfill_staged``: the records listed, as the API returned them, keyed by the
  record's id (a record met twice, in two slices or two pages, is staged once), with the
  canonical run id the apply phase looks them up by.

``strategy`` and ``requests_saved`` on the invocation row: what `backfill run` chose, and
how many requests fewer than the runs strategy's estimate it made.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "fb0007"
down_revision: str | None = "fb0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # New tables and nullable/constant-default columns on our own small table: metadata only.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.execute(
        """
        CREATE TABLE feedback_backfill_listing (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            invocation_id bigint,
            project text NOT NULL,
            session_id text NOT NULL,
            listed_from timestamptz NOT NULL,
            listed_to timestamptz NOT NULL,
            listed_until timestamptz NOT NULL,
            records bigint NOT NULL DEFAULT 0,
            requests bigint NOT NULL DEFAULT 0,
            started_at timestamptz NOT NULL DEFAULT now(),
            completed_at timestamptz,
            applied_at timestamptz,
            fallback text
        )
        """
    )
    op.execute("CREATE INDEX feedback_backfill_listing_project_idx ON feedback_backfill_listing (project, id)")
    op.execute(
        """
        CREATE TABLE feedback_backfill_staged (
            record_id text PRIMARY KEY,
            run_id text NOT NULL,
            session_id text NOT NULL,
            created_at timestamptz,
            listing_id bigint NOT NULL,
            -- the record as JSON text, exactly as listed: jsonb cannot hold \\u0000 or a lone
            -- surrogate, and such a record must reach the apply phase (which fails its run
            -- `unstorable`, as the runs strategy does), not sink its slice
            record text NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX feedback_backfill_staged_run_idx ON feedback_backfill_staged (run_id)")
    op.execute("CREATE INDEX feedback_backfill_staged_session_idx ON feedback_backfill_staged (session_id, created_at)")
    op.execute(
        "ALTER TABLE feedback_backfill_invocations"
        " ADD COLUMN strategy text,"
        " ADD COLUMN requests_saved bigint NOT NULL DEFAULT 0"
    )


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.execute("ALTER TABLE feedback_backfill_invocations DROP COLUMN requests_saved, DROP COLUMN strategy")
    op.execute("DROP TABLE feedback_backfill_staged")
    op.execute("DROP TABLE feedback_backfill_listing")
