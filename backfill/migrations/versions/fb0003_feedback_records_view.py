"""feedback_records_v: one row per stored feedback record, for analysts.

Revision ID: fb0003
Revises: fb0002
Create Date: 2026-11-29

A plain view over runs (no data copied, nothing to keep in sync). Casts are guarded so that
one odd record (a non-numeric score, a malformed timestamp) yields NULL instead of making
every query over the view fail. Filter on data->'feedback_records' @> ... (the GIN index)
for speed; see README.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "fb0003"
down_revision: str | None = "fb0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = r"'^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}'"


def _ts(field: str) -> str:
    return f"CASE WHEN f.rec ->> '{field}' ~ {TS} THEN (f.rec ->> '{field}')::timestamptz END"


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.execute(
        f"""
        CREATE VIEW feedback_records_v AS
        SELECT r.run_id,
               r.project,
               r.run_date,
               f.ord AS position,
               f.rec ->> 'id' AS feedback_id,
               f.rec ->> 'key' AS key,
               CASE WHEN jsonb_typeof(f.rec -> 'score') = 'number' THEN (f.rec ->> 'score')::numeric
                    WHEN jsonb_typeof(f.rec -> 'score') = 'boolean' THEN (f.rec ->> 'score')::boolean::int
               END AS score,
               f.rec -> 'value' ->> 'verdict' AS verdict,
               f.rec -> 'value' AS value,
               f.rec ->> 'comment' AS comment,
               {_ts("created_at")} AS created_at,
               {_ts("modified_at")} AS modified_at,
               f.rec AS record
        FROM runs AS r
        CROSS JOIN LATERAL jsonb_array_elements(
            CASE WHEN jsonb_typeof(r.data -> 'feedback_records') = 'array' THEN r.data -> 'feedback_records' END
        ) WITH ORDINALITY AS f (rec, ord)
        """
    )


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.execute("DROP VIEW feedback_records_v")
