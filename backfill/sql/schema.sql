BEGIN;

CREATE TABLE feedback_backfill_alembic_version (
    version_num VARCHAR(32) NOT NULL, 
    CONSTRAINT feedback_backfill_alembic_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> fb0001

SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

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
        );

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
        );

CREATE INDEX feedback_backfill_status_date_state_idx ON feedback_backfill_status (run_date, state) INCLUDE (reason, attempts, records, stats_count);

CREATE INDEX feedback_backfill_status_invocation_idx ON feedback_backfill_status (invocation_id);

INSERT INTO feedback_backfill_alembic_version (version_num) VALUES ('fb0001') RETURNING feedback_backfill_alembic_version.version_num;

COMMIT;

BEGIN;

-- Running upgrade fb0001 -> fb0002

COMMIT;

SET lock_timeout = '5s';

SET statement_timeout = 0;

-- if runs_feedback_records_gin_idx exists with pg_index.indisvalid = false (an interrupted build), first: DROP INDEX CONCURRENTLY runs_feedback_records_gin_idx;

CREATE INDEX CONCURRENTLY IF NOT EXISTS runs_feedback_records_gin_idx ON runs USING gin ((data -> 'feedback_records') jsonb_path_ops);

-- if runs_feedback_stats_gin_idx exists with pg_index.indisvalid = false (an interrupted build), first: DROP INDEX CONCURRENTLY runs_feedback_stats_gin_idx;

CREATE INDEX CONCURRENTLY IF NOT EXISTS runs_feedback_stats_gin_idx ON runs USING gin ((data -> 'feedback_stats') jsonb_path_ops);

-- if runs_feedback_pending_idx exists with pg_index.indisvalid = false (an interrupted build), first: DROP INDEX CONCURRENTLY runs_feedback_pending_idx;

CREATE INDEX CONCURRENTLY IF NOT EXISTS runs_feedback_pending_idx ON runs (run_date, id) WHERE COALESCE(jsonb_typeof(data -> 'feedback_records'), 'null') = 'null';

RESET statement_timeout;

RESET lock_timeout;

BEGIN;

UPDATE feedback_backfill_alembic_version SET version_num='fb0002' WHERE feedback_backfill_alembic_version.version_num = 'fb0001';

COMMIT;

BEGIN;

-- Running upgrade fb0002 -> fb0003

SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

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
               CASE WHEN f.rec ->> 'created_at' ~ '^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}' THEN (f.rec ->> 'created_at')::timestamptz END AS created_at,
               CASE WHEN f.rec ->> 'modified_at' ~ '^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}' THEN (f.rec ->> 'modified_at')::timestamptz END AS modified_at,
               f.rec AS record
        FROM runs AS r
        CROSS JOIN LATERAL jsonb_array_elements(
            CASE WHEN jsonb_typeof(r.data -> 'feedback_records') = 'array' THEN r.data -> 'feedback_records' END
        ) WITH ORDINALITY AS f (rec, ord);

UPDATE feedback_backfill_alembic_version SET version_num='fb0003' WHERE feedback_backfill_alembic_version.version_num = 'fb0002';

COMMIT;

BEGIN;

-- Running upgrade fb0003 -> fb0004

SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

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
        );

ALTER TABLE feedback_backfill_invocations ADD COLUMN rate_limit_wait_s double precision NOT NULL DEFAULT 0, ADD COLUMN outage_wait_s double precision NOT NULL DEFAULT 0;

UPDATE feedback_backfill_alembic_version SET version_num='fb0004' WHERE feedback_backfill_alembic_version.version_num = 'fb0003';

COMMIT;

BEGIN;

-- Running upgrade fb0004 -> fb0005

SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

ALTER TABLE feedback_backfill_status ADD COLUMN prior_records jsonb, ADD COLUMN refetched_at timestamptz, ADD COLUMN row_id bigint;

ALTER TABLE feedback_backfill_status DROP CONSTRAINT feedback_backfill_status_prior_check;

ALTER TABLE feedback_backfill_status ADD CONSTRAINT feedback_backfill_status_prior_check CHECK (prior IN ('absent', 'null', 'records') AND (prior = 'records') = (prior_records IS NOT NULL)) NOT VALID;

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
               CASE WHEN f.rec ->> 'created_at' ~ '^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}' THEN (f.rec ->> 'created_at')::timestamptz END AS created_at,
               CASE WHEN f.rec ->> 'modified_at' ~ '^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}' THEN (f.rec ->> 'modified_at')::timestamptz END AS modified_at,
               f.rec AS record,
               COALESCE(f.rec -> 'feedback_source' ->> 'type', f.rec ->> 'feedback_source_type') AS source_type,
               CASE WHEN f.rec ? 'feedback_source_type' AND NOT f.rec ? 'feedback_source' THEN 'extractor'
                    ELSE 'backfill' END AS written_by
        FROM runs AS r
        CROSS JOIN LATERAL jsonb_array_elements(
            CASE WHEN jsonb_typeof(r.data -> 'feedback_records') = 'array' THEN r.data -> 'feedback_records' END
        ) WITH ORDINALITY AS f (rec, ord);

COMMIT;

SET lock_timeout = '5s';

SET statement_timeout = 0;

ALTER TABLE feedback_backfill_status VALIDATE CONSTRAINT feedback_backfill_status_prior_check;

CREATE STATISTICS IF NOT EXISTS runs_feedback_pending_stx ON (COALESCE(jsonb_typeof(data -> 'feedback_records'), 'null')) FROM runs;

-- if runs_feedback_promised_idx exists with pg_index.indisvalid = false (an interrupted build), first: DROP INDEX CONCURRENTLY runs_feedback_promised_idx;

CREATE INDEX CONCURRENTLY IF NOT EXISTS runs_feedback_promised_idx ON runs (run_date, id) WHERE data @? '$.feedback_stats.* ? (@.n > 0)';

-- if runs_feedback_extractor_idx exists with pg_index.indisvalid = false (an interrupted build), first: DROP INDEX CONCURRENTLY runs_feedback_extractor_idx;

CREATE INDEX CONCURRENTLY IF NOT EXISTS runs_feedback_extractor_idx ON runs (run_date, id) WHERE (data -> 'feedback_records') @? '$[*].feedback_source_type';

-- if runs_feedback_missing_idx exists with pg_index.indisvalid = false (an interrupted build), first: DROP INDEX CONCURRENTLY runs_feedback_missing_idx;

CREATE INDEX CONCURRENTLY IF NOT EXISTS runs_feedback_missing_idx ON runs (run_date, id) WHERE COALESCE(jsonb_typeof(data -> 'feedback_records'), 'null') = 'null' AND data @? '$.feedback_stats.* ? (@.n > 0)';

-- if feedback_backfill_status_ledger_idx exists with pg_index.indisvalid = false (an interrupted build), first: DROP INDEX CONCURRENTLY feedback_backfill_status_ledger_idx;

CREATE INDEX CONCURRENTLY IF NOT EXISTS feedback_backfill_status_ledger_idx ON feedback_backfill_status (run_date, row_id) WHERE records_md5 IS NOT NULL;

RESET statement_timeout;

RESET lock_timeout;

BEGIN;

UPDATE feedback_backfill_alembic_version SET version_num='fb0005' WHERE feedback_backfill_alembic_version.version_num = 'fb0004';

COMMIT;

BEGIN;

-- Running upgrade fb0005 -> fb0006

SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

CREATE TABLE feedback_backfill_settled (
            run_date date PRIMARY KEY,
            id_bound bigint NOT NULL,
            invocation_id bigint,
            settled_at timestamptz NOT NULL DEFAULT now()
        );

COMMIT;

SET lock_timeout = '5s';

SET statement_timeout = 0;

-- if feedback_backfill_status_unpromised_idx exists with pg_index.indisvalid = false (an interrupted build), first: DROP INDEX CONCURRENTLY feedback_backfill_status_unpromised_idx;

CREATE INDEX CONCURRENTLY IF NOT EXISTS feedback_backfill_status_unpromised_idx ON feedback_backfill_status (run_date, row_id) WHERE records_md5 IS NOT NULL AND stats_count = 0;

RESET statement_timeout;

RESET lock_timeout;

BEGIN;

UPDATE feedback_backfill_alembic_version SET version_num='fb0006' WHERE feedback_backfill_alembic_version.version_num = 'fb0005';

COMMIT;

BEGIN;

-- Running upgrade fb0006 -> fb0007

SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

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
        );

CREATE INDEX feedback_backfill_listing_project_idx ON feedback_backfill_listing (project, id);

CREATE TABLE feedback_backfill_staged (
            record_id text PRIMARY KEY,
            run_id text NOT NULL,
            session_id text NOT NULL,
            created_at timestamptz,
            listing_id bigint NOT NULL,
            -- the record as JSON text, exactly as listed: jsonb cannot hold \u0000 or a lone
            -- surrogate, and such a record must reach the apply phase (which fails its run
            -- `unstorable`, as the runs strategy does), not sink its slice
            record text NOT NULL
        );

CREATE INDEX feedback_backfill_staged_run_idx ON feedback_backfill_staged (run_id);

CREATE INDEX feedback_backfill_staged_session_idx ON feedback_backfill_staged (session_id, created_at);

ALTER TABLE feedback_backfill_invocations ADD COLUMN strategy text, ADD COLUMN requests_saved bigint NOT NULL DEFAULT 0;

UPDATE feedback_backfill_alembic_version SET version_num='fb0007' WHERE feedback_backfill_alembic_version.version_num = 'fb0006';

COMMIT;

BEGIN;

-- Running upgrade fb0007 -> fb0008

SET LOCAL lock_timeout = '5s';

SET LOCAL statement_timeout = '60s';

ALTER TABLE feedback_backfill_settled ADD COLUMN empty jsonb NOT NULL DEFAULT '{}'::jsonb;

COMMIT;

SET lock_timeout = '5s';

SET statement_timeout = 0;

-- if runs_feedback_unprovable_idx exists with pg_index.indisvalid = false (an interrupted build), first: DROP INDEX CONCURRENTLY runs_feedback_unprovable_idx;

CREATE INDEX CONCURRENTLY IF NOT EXISTS runs_feedback_unprovable_idx ON runs (run_date, id) WHERE COALESCE(jsonb_typeof(data -> 'feedback_records'), 'null') = 'null' AND (jsonb_typeof(data) <> 'object' OR run_id !~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$');

RESET statement_timeout;

RESET lock_timeout;

BEGIN;

UPDATE feedback_backfill_alembic_version SET version_num='fb0008' WHERE feedback_backfill_alembic_version.version_num = 'fb0007';

COMMIT;

BEGIN;

-- Running upgrade fb0008 -> fb0009

COMMIT;

SET lock_timeout = '5s';

SET statement_timeout = 0;

-- if runs_feedback_pending_project_idx exists with pg_index.indisvalid = false (an interrupted build), first: DROP INDEX CONCURRENTLY runs_feedback_pending_project_idx;

CREATE INDEX CONCURRENTLY IF NOT EXISTS runs_feedback_pending_project_idx ON runs (run_date, project, id) WHERE COALESCE(jsonb_typeof(data -> 'feedback_records'), 'null') = 'null' AND mod(id, 1) = 0;

RESET statement_timeout;

RESET lock_timeout;

BEGIN;

UPDATE feedback_backfill_alembic_version SET version_num='fb0009' WHERE feedback_backfill_alembic_version.version_num = 'fb0008';

COMMIT;

