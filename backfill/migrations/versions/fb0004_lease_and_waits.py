"""feedback_backfill_lease, and the time an invocation waited on the API.

Revision ID: fb0004
Revises: fb0003
Create Date: 2026-11-29

The lease replaces the session advisory lock as the one-runner guarantee. Behind PgBouncer
in transaction pooling a session lock is granted again to whichever client shares the
server connection, and a killed runner leaves it on a pooled connection. The lease is a
row of our own: taken, renewed (heartbeat) and released in short transactions, taken over
by another process only once ``expires_at`` has passed. ``command`` says what holds it
(run, verify --fix, revert, reset), so that `backfill status` names it.

``rate_limit_wait_s`` and ``outage_wait_s`` record how long an invocation waited out 429
windows and API incidents (neither marks a row failed); `backfill status` shows them.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "fb0004"
down_revision: str | None = "fb0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A new table and two columns with constant defaults on our own small table: metadata
    # only (PostgreSQL 11+ stores a constant default without rewriting), a brief lock.
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.execute(
        """
        CREATE TABLE feedback_backfill_lease (
            name text PRIMARY KEY,
            holder text NOT NULL,
            command text NOT NULL,
            hostname text NOT NULL,
            pid bigint NOT NULL,
            invocation_id bigint,
            acquired_at timestamptz NOT NULL DEFAULT now(),
            heartbeat_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL
        )
        """
    )
    op.execute(
        "ALTER TABLE feedback_backfill_invocations"
        " ADD COLUMN rate_limit_wait_s double precision NOT NULL DEFAULT 0,"
        " ADD COLUMN outage_wait_s double precision NOT NULL DEFAULT 0"
    )


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.execute("ALTER TABLE feedback_backfill_invocations DROP COLUMN outage_wait_s, DROP COLUMN rate_limit_wait_s")
    op.execute("DROP TABLE feedback_backfill_lease")
