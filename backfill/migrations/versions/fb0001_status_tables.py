"""feedback_backfill_status and feedback_backfill_invocations: the checkpoint.

Revision ID: fb0001
Revises:
Create Date: 2026-11-29

One status row per run the backfill has examined, keyed by runs.run_id (the extractor's
stable key: an upsert keeps it, a delete and re-insert does not keep runs.id). There is
deliberately no foreign key to runs: the app must stay free to delete or rewrite its rows
without our table blocking it. One invocation row per `backfill run`.

The status row is also the ledger that makes `backfill revert` exact: for a row we patched,
``prior`` says whether ``feedback_records`` was absent or JSON null before, and
``records_md5`` is md5 of the ``feedback_records`` we wrote, so a revert removes our
records only while they are still ours, and restores the row's JSONB exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "fb0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("feedback_backfill",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # New, empty tables in this migration's own transaction: nothing else can be waiting on
    # them, so plain CREATE INDEX is right here (CONCURRENTLY is for the app's `runs`).
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.execute(
        """
        CREATE TABLE feedback_backfill_invocations (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            started_at timestamptz NOT NULL DEFAULT now(),
            heartbeat_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz,
            outcome text,
            message text,
            params jsonb NOT NULL DEFAULT '{}'::jsonb,
            rows_pending_at_start bigint NOT NULL DEFAULT 0,
            rows_examined bigint NOT NULL DEFAULT 0,
            rows_enriched bigint NOT NULL DEFAULT 0,
            rows_no_feedback bigint NOT NULL DEFAULT 0,
            rows_failed bigint NOT NULL DEFAULT 0,
            records_stored bigint NOT NULL DEFAULT 0,
            api_requests bigint NOT NULL DEFAULT 0,
            api_errors bigint NOT NULL DEFAULT 0,
            CONSTRAINT feedback_backfill_invocations_outcome_check CHECK (
                outcome IN ('completed', 'completed_with_failures', 'interrupted', 'error'))
        )
        """
    )
    op.execute(
        """
        CREATE TABLE feedback_backfill_status (
            run_id text PRIMARY KEY,
            run_date date NOT NULL,
            state text NOT NULL,
            reason text,
            attempts bigint NOT NULL DEFAULT 0,
            records bigint NOT NULL DEFAULT 0,
            stats_count bigint NOT NULL DEFAULT 0,
            prior text,
            records_md5 text,
            last_error text,
            first_examined_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            invocation_id bigint REFERENCES feedback_backfill_invocations (id) ON DELETE SET NULL,
            CONSTRAINT feedback_backfill_status_state_check CHECK (
                state IN ('done', 'no_feedback', 'failed', 'invalid')),
            CONSTRAINT feedback_backfill_status_reason_check CHECK (
                (state IN ('done', 'no_feedback') AND reason IS NULL)
                OR (state = 'failed' AND reason IN ('api_error', 'mismatch', 'unstorable'))
                OR (state = 'invalid' AND reason IN ('invalid_run_id', 'not_an_object'))),
            CONSTRAINT feedback_backfill_status_prior_check CHECK (prior IN ('absent', 'null')),
            CONSTRAINT feedback_backfill_status_ledger_check CHECK ((prior IS NULL) = (records_md5 IS NULL))
        )
        """
    )
    # The report's per-day table and counts by state: an index-only range scan by date.
    op.execute(
        "CREATE INDEX feedback_backfill_status_date_state_idx"
        " ON feedback_backfill_status (run_date, state) INCLUDE (reason, attempts, records, stats_count)"
    )
    # ON DELETE SET NULL on invocations needs this to not scan the status table.
    op.execute("CREATE INDEX feedback_backfill_status_invocation_idx ON feedback_backfill_status (invocation_id)")


def downgrade() -> None:
    # Only our own two tables; the app's tables and version table are not ours to drop.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.execute("DROP TABLE feedback_backfill_status")
    op.execute("DROP TABLE feedback_backfill_invocations")
