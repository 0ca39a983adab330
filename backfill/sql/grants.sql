\set ON_ERROR_STOP on
-- Least privilege for the role that runs `backfill check`, `run`, `status`, `retry`,
-- `verify [--fix]` and `db current`. A psql script (ON_ERROR_STOP: the first error ends it,
-- psql exits 3). Apply as the owner of `runs`, after `backfill db upgrade`:
--   backfill db grants backfill_runner --create-role | psql "$OWNER_DATABASE_URL"
--   (or: psql -v role=backfill_runner -f sql/grants.sql "$OWNER_DATABASE_URL")
-- The role also needs CONNECT on the database, which PUBLIC has unless revoked
-- (GRANT CONNECT ON DATABASE <db> TO ...).

GRANT USAGE ON SCHEMA public TO :"role";

-- runs: read the window, patch only the data column (UPDATE of one column also
-- allows the SELECT ... FOR UPDATE that locks the rows of a batch in id order).
GRANT SELECT ON runs TO :"role";
GRANT UPDATE (data) ON runs TO :"role";

-- our checkpoint tables: insert and update, never delete (revert/reset are run by the owner)
GRANT SELECT, INSERT, UPDATE ON feedback_backfill_status TO :"role";
GRANT SELECT, INSERT, UPDATE ON feedback_backfill_invocations TO :"role";
-- the settled marks (fb0006): written by `backfill run`, deleted only by reset/revert
GRANT SELECT, INSERT, UPDATE ON feedback_backfill_settled TO :"role";

-- the lease (one writer at a time): taken (INSERT ... ON CONFLICT DO UPDATE), renewed and
-- released (UPDATE); the row stays, so no DELETE either
GRANT SELECT, INSERT, UPDATE ON feedback_backfill_lease TO :"role";

-- the project strategy (fb0007): its listings' progress, and the records it staged, which
-- are deleted once a new listing of the project replaces them (they are copies of the API's)
GRANT SELECT, INSERT, UPDATE ON feedback_backfill_listing TO :"role";
GRANT SELECT, INSERT, UPDATE, DELETE ON feedback_backfill_staged TO :"role";

-- our revision, read by `backfill db current` and by `check` (schema at head?)
GRANT SELECT ON feedback_backfill_alembic_version TO :"role";

-- the app's own revision, if it keeps one: `check` confirms none of ours landed there
SELECT to_regclass('alembic_version') IS NOT NULL AS backfill_app_version \gset
\if :backfill_app_version
GRANT SELECT ON alembic_version TO :"role";
\endif

-- Analysts (a different role): the view of one row per feedback record. A view reads `runs`
-- with its owner's rights, so analysts need no grant on runs itself.
-- GRANT SELECT ON feedback_records_v TO analyst;
