"""Living beside the extractor: a ledger that restores its records, a refetch marker, who wrote what.

Revision ID: fb0005
Revises: fb0004
Create Date: 2026-11-29

The extractor re-archives a run by replacing the whole document (``feedback_records`` null,
its own reduced records, or no key at all). What this revision adds, all beside the app:

* ``feedback_backfill_status.prior`` may now be ``'records'``: the row held records someone
  else wrote (the extractor's reduced ones, replaced on request by ``run --refetch
  --replace-extractor-records``); ``prior_records`` keeps them as they were, so that revert
  restores them exactly. The ledger describes the row just before our latest write.
* ``refetched_at``: the progress marker of a ``--refetch`` pass (``updated_at`` is bumped by
  every checkpoint and by ``retry``, so it cannot tell what a resumed pass has done).
* ``row_id``: ``runs.id`` of the row we checkpointed (the extractor's upsert keeps it), so
  that `backfill status` joins the checkpoint to the partial indexes of ``runs``, which hold
  (run_date, id) only, without visiting the table.
* Three partial indexes of ``runs`` (run_date, id), like runs_feedback_pending_idx: rows whose
  ``feedback_stats`` promise records, those of them still lacking records, and rows holding
  the extractor's reduced records (a record with a top-level ``feedback_source_type``; the
  API's records carry ``feedback_source``); and the ledger's (run_date, row_id). `backfill
  status` counts them index-only and joins them by merging, never reading a document.
  Built CONCURRENTLY as in fb0002 (the same invalid-leftover handling, the same -x lock_timeout).
* Extended statistics on the pending expression (runs_feedback_pending_stx), so that the
  planner knows how many rows lack records and merges the indexes instead of probing.
* ``feedback_records_v`` reads both shapes: ``source_type`` from ``feedback_source.type`` or
  ``feedback_source_type``, and ``written_by`` (backfill | extractor).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
from backfill.migrations import online

revision: str = "fb0005"
down_revision: str | None = "fb0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Word for word in backfill/sql/queries.sql (status_data_by_day, walk_extractor): the planner
#: only uses a partial index whose predicate the query implies.
PROMISED = "data @? '$.feedback_stats.* ? (@.n > 0)'"
EXTRACTOR = "(data -> 'feedback_records') @? '$[*].feedback_source_type'"

#: fb0002's PENDING, word for word.
PENDING_EXPR = "COALESCE(jsonb_typeof(data -> 'feedback_records'), 'null')"
PENDING = f"{PENDING_EXPR} = 'null'"
STATISTICS = "runs_feedback_pending_stx"

INDEXES: dict[str, str] = {
    "runs_feedback_promised_idx": f"runs (run_date, id) WHERE {PROMISED}",
    "runs_feedback_extractor_idx": f"runs (run_date, id) WHERE {EXTRACTOR}",
    # promised and still lacking: the missing_records alert's rows (small once enriched)
    "runs_feedback_missing_idx": f"runs (run_date, id) WHERE {PENDING} AND {PROMISED}",
    # the ledger in the same order as the runs indexes: status joins them by merging
    "feedback_backfill_status_ledger_idx": "feedback_backfill_status (run_date, row_id) WHERE records_md5 IS NOT NULL",
}

TS = r"'^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}'"


def _ts(field: str) -> str:
    return f"CASE WHEN f.rec ->> '{field}' ~ {TS} THEN (f.rec ->> '{field}')::timestamptz END"


def view(extended: bool) -> str:
    """feedback_records_v; ``extended=False`` is fb0003's, restored by the downgrade."""
    extra = (
        """,
               COALESCE(f.rec -> 'feedback_source' ->> 'type', f.rec ->> 'feedback_source_type') AS source_type,
               CASE WHEN f.rec ? 'feedback_source_type' AND NOT f.rec ? 'feedback_source' THEN 'extractor'
                    ELSE 'backfill' END AS written_by"""
        if extended
        else ""
    )
    return f"""
        CREATE OR REPLACE VIEW feedback_records_v AS
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
               f.rec AS record{extra}
        FROM runs AS r
        CROSS JOIN LATERAL jsonb_array_elements(
            CASE WHEN jsonb_typeof(r.data -> 'feedback_records') = 'array' THEN r.data -> 'feedback_records' END
        ) WITH ORDINALITY AS f (rec, ord)
        """


def upgrade() -> None:
    # Our own narrow table: nullable columns without defaults and a CHECK on our own
    # small table, a brief lock; then the view (no data).
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    op.execute(
        "ALTER TABLE feedback_backfill_status"
        " ADD COLUMN prior_records jsonb,"
        " ADD COLUMN refetched_at timestamptz,"
        " ADD COLUMN row_id bigint"
    )
    op.execute("ALTER TABLE feedback_backfill_status DROP CONSTRAINT feedback_backfill_status_prior_check")
    op.execute(
        "ALTER TABLE feedback_backfill_status ADD CONSTRAINT feedback_backfill_status_prior_check"
        " CHECK (prior IN ('absent', 'null', 'records') AND (prior = 'records') = (prior_records IS NOT NULL))"
        " NOT VALID"
    )
    op.execute(view(extended=True))
    online.build_indexes(
        INDEXES,
        first=(
            # validated in its own transaction (SHARE UPDATE EXCLUSIVE: checkpoints keep writing)
            "ALTER TABLE feedback_backfill_status VALIDATE CONSTRAINT feedback_backfill_status_prior_check",
            # How many rows lack records, for the planner (the next ANALYZE fills it in): without
            # it, it guesses 0.5 % and joins the pending index row by row instead of merging.
            f"CREATE STATISTICS IF NOT EXISTS {STATISTICS} ON ({PENDING_EXPR}) FROM runs",
        ),
    )


def downgrade() -> None:
    # A ledger row that would restore the extractor's records cannot be expressed before
    # fb0005: refuse (revert first) rather than lose what revert must give back.
    op.execute(
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM feedback_backfill_status WHERE prior = 'records') THEN"
        " RAISE EXCEPTION 'feedback_backfill_status holds records to restore (prior = records):"
        " run backfill revert first'; END IF; END $$"
    )
    online.drop_indexes(list(reversed(INDEXES)), last=(f"DROP STATISTICS IF EXISTS {STATISTICS}",))
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute("SET LOCAL statement_timeout = '60s'")
    # Columns cannot be removed by CREATE OR REPLACE: drop the view, then fb0003's again.
    op.execute("DROP VIEW feedback_records_v")
    op.execute(view(extended=False).replace("CREATE OR REPLACE VIEW", "CREATE VIEW"))
    op.execute("ALTER TABLE feedback_backfill_status DROP CONSTRAINT feedback_backfill_status_prior_check")
    op.execute(
        "ALTER TABLE feedback_backfill_status ADD CONSTRAINT feedback_backfill_status_prior_check"
        " CHECK (prior IN ('absent', 'null')) NOT VALID"
    )
    op.execute(
        "ALTER TABLE feedback_backfill_status DROP COLUMN row_id, DROP COLUMN refetched_at, DROP COLUMN prior_records"
    )
    with op.get_context().autocommit_block():
        op.execute("ALTER TABLE feedback_backfill_status VALIDATE CONSTRAINT feedback_backfill_status_prior_check")
