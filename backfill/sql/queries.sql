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
-- How many rows of one day of the window the walk will visit (progress bar, --dry-run).
SELECT count(*) AS pending
FROM runs AS r
WHERE COALESCE(jsonb_typeof(r.data -> 'feedback_records'), 'null') = 'null'
  AND r.run_date = %(day)s
  AND (%(projects)s::text[] IS NULL OR r.project = ANY(%(projects)s::text[]))
  AND NOT EXISTS (
      SELECT 1 FROM feedback_backfill_status AS s
      WHERE s.run_id = r.run_id
        AND (s.state = 'invalid'
             OR (s.state = 'failed' AND s.attempts >= %(max_attempts)s)
             -- no feedback then, and its feedback_stats still promise none (a verdict entered
             -- after the run was first examined reaches feedback_stats on the next upsert)
             OR (s.state = 'no_feedback' AND NOT r.data @? '$.feedback_stats.* ? (@.n > 0)')));

-- count_refetch --
-- How many rows of one day a `backfill run --refetch` pass has left (see walk_refetch).
SELECT count(*) AS pending
FROM feedback_backfill_status AS s
JOIN runs AS r ON r.run_id = s.run_id
WHERE s.run_date = %(day)s
  AND (s.state IN ('done', 'no_feedback') OR s.records_md5 IS NOT NULL)
  AND s.updated_at < %(refetch_since)s
  AND (%(projects)s::text[] IS NULL OR r.project = ANY(%(projects)s::text[]));

-- last_refetch --
-- The latest --refetch invocation: if it did not finish, the next one resumes its pass.
SELECT i.outcome, i.params ->> 'refetch_since' AS since
FROM feedback_backfill_invocations AS i
WHERE i.params ->> 'refetch' = 'true'
ORDER BY i.id DESC
LIMIT 1;

-- now --
-- The database's clock (checkpoint timestamps are the database's).
SELECT now() AS now;

-- walk_batch --
-- The next batch of one day's rows lacking feedback records, in keyset order on id; the
-- runner walks the window's days in order. The first predicate is, word for word, the one
-- of the partial index runs_feedback_pending_idx (run_date, id): each batch is one index
-- range scan (run_date = day, id > after) resuming where the previous one stopped.
-- Enriched rows leave that index; rows found without feedback stay in it (we do not
-- rewrite them), so one invocation passes over each of them once, checked through the
-- status table's primary key: a statement never scans more than one day of them.
SELECT r.id, r.run_id, r.run_date, jsonb_typeof(r.data) AS data_type,
       r.data -> 'feedback_stats' AS feedback_stats,
       COALESCE((SELECT s.attempts FROM feedback_backfill_status AS s WHERE s.run_id = r.run_id), 0) AS attempts
FROM runs AS r
WHERE COALESCE(jsonb_typeof(r.data -> 'feedback_records'), 'null') = 'null'
  AND r.run_date = %(day)s
  AND r.id > %(after_id)s::integer
  AND (%(projects)s::text[] IS NULL OR r.project = ANY(%(projects)s::text[]))
  AND NOT EXISTS (
      SELECT 1 FROM feedback_backfill_status AS s
      WHERE s.run_id = r.run_id
        AND (s.state = 'invalid'
             OR (s.state = 'failed' AND s.attempts >= %(max_attempts)s)
             -- no feedback then, and its feedback_stats still promise none (a verdict entered
             -- after the run was first examined reaches feedback_stats on the next upsert)
             OR (s.state = 'no_feedback' AND NOT r.data @? '$.feedback_stats.* ? (@.n > 0)')))
ORDER BY r.id
LIMIT %(batch_size)s;

-- workspace_probe_runs --
-- The wrong-workspace probe (runner._check_workspace): the window's newest runs whose
-- feedback_stats count records, newest day first. New feedback is the least likely to
-- have expired or been deleted in LangSmith, so a key that gets nothing for these is the
-- wrong key. A backward scan of the app's idx_runs_run_date that stops at %(n)s matches
-- (about one run in three has feedback); run only when a batch looks suspicious.
SELECT r.run_id
FROM runs AS r
WHERE r.run_date >= %(since)s AND r.run_date < %(until)s
  AND (%(projects)s::text[] IS NULL OR r.project = ANY(%(projects)s::text[]))
  AND r.data @? '$.feedback_stats.* ? (@.n > 0)'
ORDER BY r.run_date DESC, r.id DESC
LIMIT %(n)s;

-- lock_rows --
-- Lock the rows about to be patched, skipping any that another writer (the extractor's
-- upsert) holds right now: we never wait on the app, never make it wait behind a queue of
-- our lock waits, and cannot deadlock with it. A skipped row is patched by the next run.
SELECT r.id, r.run_id FROM runs AS r WHERE r.run_id = ANY(%(run_ids)s::text[]) ORDER BY r.id FOR UPDATE SKIP LOCKED;

-- patch_batch --
-- Add feedback_records to each row in place, in one statement. `data || ...` is computed
-- from the row version the UPDATE locks, so an upsert committed meanwhile is kept; a row
-- that got feedback_records meanwhile is left alone (the predicate is re-checked).
-- Returns, for `backfill revert`, whether the key was there (as JSON null) before, and
-- md5 of what we wrote. `before` reads the rows lock_rows has just locked: current.
-- Rows are addressed by primary key (%(ids)s, from lock_rows), and the "still lacking"
-- re-check is deliberately NOT written as the partial index's predicate: written the same,
-- it lets the planner probe runs_feedback_pending_idx (run_date, id) by id alone, a scan of
-- the whole index per row.
WITH patch AS (
    SELECT p.id, p.records
    FROM jsonb_to_recordset(%(patch)s::jsonb) AS p(id integer, records jsonb)
), before AS (
    SELECT r.id, CASE WHEN r.data ? 'feedback_records' THEN 'null' ELSE 'absent' END AS prior
    FROM runs AS r WHERE r.id = ANY(%(ids)s::integer[])
)
UPDATE runs AS r
SET data = r.data || jsonb_build_object('feedback_records', p.records)
FROM patch AS p JOIN before AS b ON b.id = p.id
WHERE r.id = ANY(%(ids)s::integer[]) AND r.id = p.id
  AND jsonb_typeof(r.data) = 'object'
  AND (NOT r.data ? 'feedback_records' OR r.data -> 'feedback_records' = 'null'::jsonb)
RETURNING r.run_id, b.prior, md5((r.data -> 'feedback_records')::text) AS records_md5;

-- walk_refetch --
-- `backfill run --refetch`: the next batch of rows of the window already examined (done, no
-- feedback, or holding the partial records of a mismatch) and not refetched since
-- %(refetch_since)s, one day at a time in keyset order on id.
SELECT r.id, r.run_id, r.run_date, jsonb_typeof(r.data) AS data_type,
       r.data -> 'feedback_stats' AS feedback_stats, s.attempts
FROM feedback_backfill_status AS s
JOIN runs AS r ON r.run_id = s.run_id
WHERE s.run_date = %(day)s
  AND (s.state IN ('done', 'no_feedback') OR s.records_md5 IS NOT NULL)
  AND s.updated_at < %(refetch_since)s
  AND r.id > %(after_id)s::integer
  AND (%(projects)s::text[] IS NULL OR r.project = ANY(%(projects)s::text[]))
ORDER BY r.id
LIMIT %(batch_size)s;

-- patch_refetch --
-- Replace feedback_records in place, only where they are still the ones we wrote (md5 as
-- recorded) or absent/null: records the extractor wrote itself are never overwritten.
-- Returns every row that holds our records afterwards, rewritten or already identical.
WITH patch AS (
    SELECT p.id, p.records
    FROM jsonb_to_recordset(%(patch)s::jsonb) AS p(id integer, records jsonb)
), before AS (
    SELECT r.id, r.run_id, md5((r.data -> 'feedback_records')::text) AS current_md5,
           COALESCE(s.prior, CASE WHEN r.data ? 'feedback_records' THEN 'null' ELSE 'absent' END) AS prior,
           s.records_md5
    FROM runs AS r
    LEFT JOIN feedback_backfill_status AS s ON s.run_id = r.run_id
    WHERE r.id = ANY(%(ids)s::integer[])
), ours AS (
    SELECT b.id, b.run_id, b.prior, b.current_md5, md5(p.records::text) AS new_md5, p.records
    FROM before AS b JOIN runs AS r ON r.id = b.id JOIN patch AS p ON p.id = b.id
    WHERE jsonb_typeof(r.data) = 'object'
      -- "absent or null", not in the partial index's words (see patch_batch)
      AND (NOT r.data ? 'feedback_records' OR r.data -> 'feedback_records' = 'null'::jsonb
           OR b.current_md5 = b.records_md5)
), changed AS (
    -- rows whose records did not change are not rewritten (no WAL, no bloat, no GIN churn)
    UPDATE runs AS r
    SET data = r.data || jsonb_build_object('feedback_records', o.records)
    FROM ours AS o
    WHERE r.id = ANY(%(ids)s::integer[]) AND r.id = o.id AND o.new_md5 IS DISTINCT FROM o.current_md5
    RETURNING r.id
)
SELECT o.run_id, o.prior, o.new_md5 AS records_md5
FROM ours AS o;

-- checkpoint --
-- Record what the batch found for each run; attempts counts examinations. A --refetch that
-- wrote nothing (mismatch, API error, no feedback) to a row still holding our records keeps
-- the row's state and count (it is as it was) and only records the error.
INSERT INTO feedback_backfill_status AS s
    (run_id, run_date, state, reason, attempts, records, stats_count, prior, records_md5,
     last_error, invocation_id)
SELECT c.run_id, c.run_date, c.state, c.reason, 1, c.records, c.stats_count, c.prior, c.records_md5,
       c.last_error, %(invocation_id)s
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS c(run_id text, run_date date, state text, reason text, records bigint, stats_count bigint,
          prior text, records_md5 text, last_error text)
ON CONFLICT (run_id) DO UPDATE
SET run_date = EXCLUDED.run_date,
    state = CASE WHEN %(refetch)s AND EXCLUDED.records_md5 IS NULL AND s.records_md5 IS NOT NULL
                 THEN s.state ELSE EXCLUDED.state END,
    reason = CASE WHEN %(refetch)s AND EXCLUDED.records_md5 IS NULL AND s.records_md5 IS NOT NULL
                  THEN s.reason ELSE EXCLUDED.reason END,
    attempts = s.attempts + 1,
    records = CASE WHEN %(refetch)s AND EXCLUDED.records_md5 IS NULL AND s.records_md5 IS NOT NULL
                   THEN s.records ELSE EXCLUDED.records END,
    stats_count = EXCLUDED.stats_count,
    -- the ledger of what we wrote survives a later failed or refetched examination
    prior = COALESCE(EXCLUDED.prior, s.prior),
    records_md5 = COALESCE(EXCLUDED.records_md5, s.records_md5),
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
    rate_limit_wait_s = rate_limit_wait_s + %(rate_limit_wait_s)s,
    outage_wait_s = outage_wait_s + %(outage_wait_s)s,
    heartbeat_at = now()
WHERE id = %(invocation_id)s;

-- finish_invocation --
-- Close an invocation with its outcome.
UPDATE feedback_backfill_invocations
SET finished_at = now(), heartbeat_at = now(), outcome = %(outcome)s, message = %(message)s,
    api_requests = api_requests + %(api_requests)s,
    api_errors = api_errors + %(api_errors)s,
    rate_limit_wait_s = rate_limit_wait_s + %(rate_limit_wait_s)s,
    outage_wait_s = outage_wait_s + %(outage_wait_s)s
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
       i.rows_failed, i.records_stored, i.api_requests, i.api_errors,
       i.rate_limit_wait_s, i.outage_wait_s
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

-- =====================================================================================
-- Operations (backfill/operations.py): verify, retry, reset, revert.
-- =====================================================================================

-- ledger_days --
-- The run_dates of the window that hold checkpoint rows (revert and reset work a day at a
-- time, so that each transaction stays short on a large table).
SELECT DISTINCT s.run_date
FROM feedback_backfill_status AS s
WHERE s.run_date >= %(since)s AND s.run_date < %(until)s
ORDER BY s.run_date;

-- revert_count --
-- How many rows of the window still hold the feedback_records we wrote (what revert undoes).
SELECT count(*) AS rows
FROM feedback_backfill_status AS s
JOIN runs AS r ON r.run_id = s.run_id
WHERE s.run_date >= %(since)s AND s.run_date < %(until)s
  AND s.records_md5 IS NOT NULL
  AND md5((r.data -> 'feedback_records')::text) = s.records_md5;

-- revert_day --
-- Restore each row of a day that still holds our records to what it was: key absent, or
-- JSON null as older extractors wrote it. Records someone else wrote (md5 differs) stay.
UPDATE runs AS r
SET data = CASE WHEN s.prior = 'null' THEN jsonb_set(r.data, '{feedback_records}', 'null'::jsonb)
                ELSE r.data - 'feedback_records' END
FROM feedback_backfill_status AS s
WHERE s.run_id = r.run_id
  AND s.run_date = %(day)s
  AND s.records_md5 IS NOT NULL
  AND md5((r.data -> 'feedback_records')::text) = s.records_md5
RETURNING r.run_id;

-- forget_day --
-- Forget the checkpoint of a day; with %(keep_ledger)s, keep the rows of runs whose records
-- we wrote (reset keeps them, so that revert still knows what is ours).
DELETE FROM feedback_backfill_status AS s
WHERE s.run_date = %(day)s
  AND NOT (%(keep_ledger)s AND s.records_md5 IS NOT NULL);

-- reset_count --
-- How many checkpoint rows `backfill reset` would forget in the window.
SELECT count(*) AS rows
FROM feedback_backfill_status AS s
WHERE s.run_date >= %(since)s AND s.run_date < %(until)s
  AND s.records_md5 IS NULL;

-- retry_failed --
-- Give failed runs of the window their attempts back, so that the next run tries them again.
UPDATE feedback_backfill_status AS s
SET attempts = 0, updated_at = now()
WHERE s.state = 'failed'
  AND s.run_date >= %(since)s AND s.run_date < %(until)s
  AND (%(reason)s::text IS NULL OR s.reason = %(reason)s::text)
RETURNING s.run_id;

-- verify_sample --
-- Run ids of enriched runs of the window, at random (all when %(sample)s is NULL): drawn
-- from the narrow status table alone, so that no document is read to pick the sample.
SELECT s.run_id
FROM feedback_backfill_status AS s
WHERE s.run_date >= %(since)s AND s.run_date < %(until)s
  AND s.records_md5 IS NOT NULL
ORDER BY random()
LIMIT %(sample)s;

-- verify_rows --
-- The stored records of a chunk of the sample, where they are still the ones we wrote.
SELECT r.id, r.run_id, r.run_date, jsonb_typeof(r.data) AS data_type,
       r.data -> 'feedback_stats' AS feedback_stats, r.data -> 'feedback_records' AS stored
FROM feedback_backfill_status AS s
JOIN runs AS r ON r.run_id = s.run_id
WHERE s.run_id = ANY(%(run_ids)s::text[])
  AND md5((r.data -> 'feedback_records')::text) = s.records_md5;
