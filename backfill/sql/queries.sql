-- Every statement feedback-backfill runs against the archive, by name.
-- Loaded once by backfill/sql/__init__.py; parameters are %(name)s (psycopg).
-- A block starts with a line "-- name --", then a one-line description.

-- check_schema --
-- Do our tables exist? (NULL means `alembic upgrade head` has not been run.)
SELECT to_regclass('feedback_backfill_status') IS NOT NULL
   AND to_regclass('feedback_backfill_invocations') IS NOT NULL AS migrated;

-- session_settings --
-- Keep our locks short: give up waiting for a row lock rather than queue behind the app.
SELECT set_config('lock_timeout', %(lock_timeout)s, false),
       set_config('statement_timeout', %(statement_timeout)s, false),
       set_config('application_name', 'feedback-backfill', false);

-- try_runner_lock --
-- One `backfill run` at a time per database: a session advisory lock, released when the
-- connection ends however the process ends (kill -9 included). `backfill status` reads it.
SELECT pg_try_advisory_lock(%(lock_key)s) AS acquired;

-- release_runner_lock --
-- Release the runner lock (also released by closing the connection).
SELECT pg_advisory_unlock(%(lock_key)s);

-- count_pending --
-- How many rows of the window the walk will visit (for the progress bar and --dry-run).
SELECT count(*) AS pending
FROM runs AS r
WHERE COALESCE(jsonb_typeof(r.data -> 'feedback_records'), 'null') = 'null'
  AND r.run_date >= %(since)s AND r.run_date < %(until)s
  AND (%(projects)s::text[] IS NULL OR r.project = ANY(%(projects)s::text[]))
  AND NOT EXISTS (
      SELECT 1 FROM feedback_backfill_status AS s
      WHERE s.run_id = r.run_id
        AND (s.state IN ('no_feedback', 'invalid')
             OR (s.state = 'failed' AND s.attempts >= %(max_attempts)s)));

-- walk_batch --
-- The next batch of rows lacking feedback records, in keyset order (run_date, id).
-- The first predicate is, word for word, the one of the partial index
-- runs_feedback_pending_idx (run_date, id): each batch is one short index range scan,
-- however large the table and however much of it is already enriched.
SELECT r.id, r.run_id, r.run_date, jsonb_typeof(r.data) AS data_type,
       r.data -> 'feedback_stats' AS feedback_stats
FROM runs AS r
WHERE COALESCE(jsonb_typeof(r.data -> 'feedback_records'), 'null') = 'null'
  AND r.run_date >= %(since)s AND r.run_date < %(until)s
  AND (r.run_date, r.id) > (%(after_date)s::date, %(after_id)s::integer)
  AND (%(projects)s::text[] IS NULL OR r.project = ANY(%(projects)s::text[]))
  AND NOT EXISTS (
      SELECT 1 FROM feedback_backfill_status AS s
      WHERE s.run_id = r.run_id
        AND (s.state IN ('no_feedback', 'invalid')
             OR (s.state = 'failed' AND s.attempts >= %(max_attempts)s)))
ORDER BY r.run_date, r.id
LIMIT %(batch_size)s;

-- lock_rows --
-- Lock the rows about to be patched in id order, so that two writers locking several rows
-- (us and the extractor's upserts) take them in the same order and cannot deadlock on them.
SELECT r.id FROM runs AS r WHERE r.run_id = ANY(%(run_ids)s::text[]) ORDER BY r.id FOR UPDATE;

-- patch_batch --
-- Add feedback_records to each row in place, in one statement. `data || ...` is computed
-- from the row version the UPDATE locks, so an upsert committed meanwhile is kept; a row
-- that got feedback_records meanwhile is left alone (the predicate is re-checked).
WITH patch AS (
    SELECT p.run_id, p.records
    FROM jsonb_to_recordset(%(patch)s::jsonb) AS p(run_id text, records jsonb)
)
UPDATE runs AS r
SET data = r.data || jsonb_build_object('feedback_records', p.records)
FROM patch AS p
WHERE r.run_id = p.run_id
  AND jsonb_typeof(r.data) = 'object'
  AND COALESCE(jsonb_typeof(r.data -> 'feedback_records'), 'null') = 'null'
RETURNING r.run_id;

-- checkpoint --
-- Record what the batch found for each run; attempts counts examinations.
INSERT INTO feedback_backfill_status AS s
    (run_id, run_date, state, reason, attempts, records, stats_count, last_error, invocation_id)
SELECT c.run_id, c.run_date, c.state, c.reason, 1, c.records, c.stats_count, c.last_error, %(invocation_id)s
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS c(run_id text, run_date date, state text, reason text, records bigint, stats_count bigint,
          last_error text)
ON CONFLICT (run_id) DO UPDATE
SET run_date = EXCLUDED.run_date,
    state = EXCLUDED.state,
    reason = EXCLUDED.reason,
    attempts = s.attempts + 1,
    records = EXCLUDED.records,
    stats_count = EXCLUDED.stats_count,
    last_error = EXCLUDED.last_error,
    invocation_id = EXCLUDED.invocation_id,
    updated_at = now();

-- start_invocation --
-- Record a `backfill run` invocation and its parameters.
INSERT INTO feedback_backfill_invocations (params, rows_pending_at_start)
VALUES (%(params)s, %(pending)s)
RETURNING id;

-- count_invocation --
-- Add a batch's figures to its invocation, in the batch's own transaction.
UPDATE feedback_backfill_invocations
SET rows_examined = rows_examined + %(examined)s,
    rows_enriched = rows_enriched + %(enriched)s,
    rows_no_feedback = rows_no_feedback + %(no_feedback)s,
    rows_failed = rows_failed + %(failed)s,
    records_stored = records_stored + %(records)s,
    api_requests = api_requests + %(api_requests)s,
    api_errors = api_errors + %(api_errors)s,
    heartbeat_at = now()
WHERE id = %(invocation_id)s;

-- finish_invocation --
-- Close an invocation with its outcome.
UPDATE feedback_backfill_invocations
SET finished_at = now(), heartbeat_at = now(), outcome = %(outcome)s, message = %(message)s,
    api_requests = api_requests + %(api_requests)s,
    api_errors = api_errors + %(api_errors)s
WHERE id = %(invocation_id)s;

-- =====================================================================================
-- `backfill status` (backfill/status.py): read-only, from indexes, never runs.data.
-- The report a DBA reads and a monitor parses; it calls no API and writes nothing.
-- =====================================================================================

-- status_snapshot --
-- All the report's queries see one snapshot (a `backfill run` may be writing meanwhile).
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;

-- status_runs_by_day --
-- Rows of the window per run_date: an index-only scan of idx_runs_run_date (or, with
-- --project, of idx_runs_project_date). No row is read, let alone its data.
SELECT r.run_date, count(*)::bigint AS total
FROM runs AS r
WHERE r.run_date >= %(since)s AND r.run_date < %(until)s
  AND (%(projects)s::text[] IS NULL OR r.project = ANY(%(projects)s::text[]))
GROUP BY r.run_date
ORDER BY r.run_date;

-- status_checkpoint_by_day --
-- The checkpoint of the window per day, state and reason: from
-- feedback_backfill_status_date_state_idx alone (its INCLUDE columns hold every figure),
-- or a scan of the narrow status table when the window spans most of it.
SELECT s.run_date, s.state, s.reason,
       count(*)::bigint AS n,
       sum(s.attempts)::bigint AS attempts,
       count(*) FILTER (WHERE s.attempts >= %(max_attempts)s)::bigint AS at_max_attempts,
       sum(s.records)::bigint AS records,
       count(*) FILTER (WHERE s.stats_count > 0)::bigint AS promised,
       count(*) FILTER (WHERE s.stats_count > 0 AND s.state = 'done' AND s.records > 0)::bigint
           AS delivered
FROM feedback_backfill_status AS s
WHERE s.run_date >= %(since)s AND s.run_date < %(until)s
GROUP BY s.run_date, s.state, s.reason
ORDER BY s.run_date, s.state, s.reason;

-- status_checkpoint_by_day_projects --
-- The same with --project: the checkpoint has no project column, so its rows are matched
-- to the projects' runs of the window (a hash semi-join; runs.data is still never read).
-- A separate statement, not "projects IS NULL OR EXISTS": the OR would keep the planner
-- from turning EXISTS into a join, and run one index probe per status row.
SELECT s.run_date, s.state, s.reason,
       count(*)::bigint AS n,
       sum(s.attempts)::bigint AS attempts,
       count(*) FILTER (WHERE s.attempts >= %(max_attempts)s)::bigint AS at_max_attempts,
       sum(s.records)::bigint AS records,
       count(*) FILTER (WHERE s.stats_count > 0)::bigint AS promised,
       count(*) FILTER (WHERE s.stats_count > 0 AND s.state = 'done' AND s.records > 0)::bigint
           AS delivered
FROM feedback_backfill_status AS s
WHERE s.run_date >= %(since)s AND s.run_date < %(until)s
  AND EXISTS (
      SELECT 1 FROM runs AS r
      WHERE r.run_id = s.run_id
        AND r.project = ANY(%(projects)s::text[])
        AND r.run_date >= %(since)s AND r.run_date < %(until)s)
GROUP BY s.run_date, s.state, s.reason
ORDER BY s.run_date, s.state, s.reason;

-- status_invocations --
-- Every `backfill run` (one row each: a small table), oldest first.
SELECT i.id, i.started_at, i.heartbeat_at, i.finished_at, i.outcome, i.message, i.params,
       i.rows_pending_at_start, i.rows_examined, i.rows_enriched, i.rows_no_feedback,
       i.rows_failed, i.records_stored, i.api_requests, i.api_errors
FROM feedback_backfill_invocations AS i
ORDER BY i.id;

-- status_runner_lock --
-- Which backend, if any, holds the runner lock of this database (see try_runner_lock):
-- pg_locks shows a bigint advisory key as classid (high 32 bits), objid (low), objsubid 1.
SELECT (SELECT l.pid
        FROM pg_locks AS l
        WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
          AND l.database = (SELECT d.oid FROM pg_database AS d WHERE d.datname = current_database())
          AND ((l.classid::bigint << 32) | l.objid::bigint) = %(lock_key)s
        LIMIT 1) AS runner_pid,
       now() AS as_of;
