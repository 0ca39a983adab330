-- Every statement feedback-backfill runs against the archive, by name.
-- Loaded once by backfill/sql/__init__.py; parameters are %(name)s (psycopg).
-- A block starts with a line "-- name --", then a one-line description.

-- check_schema --
-- Do our tables exist? (NULL means `backfill db upgrade` / `alembic upgrade head` has not been run;
-- a database at an older revision lacks the later tables: it would fail mid-run otherwise.)
SELECT to_regclass('feedback_backfill_status') IS NOT NULL
   AND to_regclass('feedback_backfill_invocations') IS NOT NULL
   AND to_regclass('feedback_backfill_lease') IS NOT NULL
   AND to_regclass('feedback_backfill_settled') IS NOT NULL
   AND to_regclass('feedback_backfill_listing') IS NOT NULL
   AND to_regclass('feedback_backfill_staged') IS NOT NULL
   -- fb0008's column: a database at fb0007 has every table and would fail at the first mark
   AND EXISTS (SELECT 1 FROM pg_attribute AS a
               WHERE a.attrelid = to_regclass('feedback_backfill_settled') AND a.attname = 'empty'
                 AND NOT a.attisdropped) AS migrated;

-- transaction_settings --
-- The first statements of each of our transactions (bound client-side: SET takes no server
-- parameters). SET LOCAL ends with the transaction: behind PgBouncer in transaction pooling
-- a session SET would stay on the server connection and reach the pool's next client.
-- lock_timeout: give up waiting for a row lock rather than queue behind the app.
SET LOCAL lock_timeout = %(lock_timeout)s;
SET LOCAL statement_timeout = %(statement_timeout)s;

-- toast_compression --
-- At connect: do our transactions compress the documents they write with lz4 (toast_lz4)?
-- Only where the server offers it (PostgreSQL 14+, built with lz4) and nobody chose a method:
-- default_toast_compression is at its built-in default (a choice in postgresql.conf, ALTER
-- SYSTEM, ALTER ROLE/DATABASE ... SET is kept). A column given its own method (ALTER TABLE
-- ... SET COMPRESSION) keeps it whatever this says. No row (PostgreSQL 13): false.
SELECT COALESCE(bool_or(s.source = 'default' AND s.setting = 'pglz' AND 'lz4' = ANY(s.enumvals)), false) AS lz4
FROM pg_settings AS s
WHERE s.name = 'default_toast_compression';

-- toast_lz4 --
-- Appended to transaction_settings where toast_compression said so. Each enriched document is
-- compressed anew when written (a new TOAST value), and lz4 costs the backend a small part
-- of what pglz does (docs/benchmarks.md). Reading is transparent: a column holds values of
-- both methods.
SET LOCAL default_toast_compression = 'lz4';

-- generic_plan --
-- Before a read that gateway.PLANNER names it for, for the rest of its transaction (none by
-- default; bench/prepare_bench.py compares it). Without statistics for the "lacks
-- feedback_records" expression the walk was planned generically; fb0005's extended
-- statistics made the custom plan the ordered scan of runs_feedback_pending_idx, and the
-- generic one worse on large tables.
SET LOCAL plan_cache_mode = force_generic_plan;

-- keyset_plan --
-- Before walk_batch (gateway.PLANNER), for the rest of its transaction: no bitmap scan. A bitmap
-- scan loses the index order, so each batch would read and sort the rest of the day; the
-- planner picks it when it expects few rows of the day to lack records (fb0005's statistics
-- not analyzed yet: autovacuum analyzes a large archive only after a tenth of it changed)
-- and the more so with a project filter. The ordered range scan of runs_feedback_pending_idx
-- stops after the batch whatever the statistics say.
SET LOCAL enable_bitmapscan = off;

-- filter_cost --
-- Before count_pending (gateway.PLANNER), for the rest of its transaction: operators cost ten
-- times the default. A function of a document (here: does it lack feedback_records?)
-- detoasts it, which the default cost does not see; priced so, the planner prefers the
-- partial index whose predicate it need not evaluate to runs_pkey plus that filter on every
-- row (a detoast per row).
SET LOCAL cpu_operator_cost = 0.025;

-- lease_take --
-- Take the database's one lease (feedback_backfill_lease) unless another holder's is alive.
-- One `backfill run` (or revert, reset, verify --fix) at a time: a row of our own table, not a
-- session advisory lock, which PgBouncer in transaction pooling grants to every client sharing
-- the server connection and keeps there after a kill. An expired lease (its holder killed or
-- cut off for longer than its lifetime), a released one, or %(dead_holder)s (a holder of this
-- host whose process no longer exists) is taken over. While its holder is
-- inside a write transaction the row is locked: this waits at most lock_timeout, then fails.
INSERT INTO feedback_backfill_lease AS l
    (name, holder, command, hostname, pid, invocation_id, acquired_at, heartbeat_at, expires_at)
VALUES (%(name)s, %(holder)s, %(command)s, %(hostname)s, %(pid)s, NULL, clock_timestamp(), clock_timestamp(),
        clock_timestamp() + make_interval(secs => %(seconds)s))
ON CONFLICT (name) DO UPDATE
SET holder = EXCLUDED.holder, command = EXCLUDED.command, hostname = EXCLUDED.hostname, pid = EXCLUDED.pid,
    invocation_id = NULL, acquired_at = EXCLUDED.acquired_at, heartbeat_at = EXCLUDED.heartbeat_at,
    expires_at = EXCLUDED.expires_at
WHERE l.expires_at <= clock_timestamp()
   -- a holder on this host whose process is gone (kill -9): no need to wait for its expiry
   OR l.holder = %(dead_holder)s::text
RETURNING l.holder;

-- lease_renew --
-- Renew our lease (the heartbeat, and the first statement of each write transaction of its
-- holder, which keeps the row locked until that transaction ends): no row means it expired
-- and another holder took it over, and the holder must not write.
UPDATE feedback_backfill_lease AS l
SET heartbeat_at = clock_timestamp(),
    expires_at = clock_timestamp() + make_interval(secs => %(seconds)s),
    invocation_id = COALESCE(%(invocation_id)s::bigint, l.invocation_id)
WHERE l.name = %(name)s AND l.holder = %(holder)s AND l.expires_at > clock_timestamp()
RETURNING l.expires_at;

-- lease_release --
-- Let our lease go at once; the row stays (released: expires_at = heartbeat_at) so that
-- `backfill status` can say who held it last. One clock reading for both columns: two calls of
-- clock_timestamp() differ by microseconds on a loaded server, and the lease then read "expired".
UPDATE feedback_backfill_lease AS l
SET heartbeat_at = c.now, expires_at = c.now
FROM (SELECT clock_timestamp() AS now) AS c
WHERE l.name = %(name)s AND l.holder = %(holder)s;

-- lease_holder --
-- Who holds the lease, for the one-line message of a command that could not take it.
SELECT l.holder, l.command, l.hostname, l.pid, l.acquired_at,
       l.expires_at > clock_timestamp() AS alive,
       extract(epoch FROM clock_timestamp() - l.heartbeat_at)::float8 AS heartbeat_age_s,
       greatest(extract(epoch FROM l.expires_at - clock_timestamp()), 0)::float8 AS expires_in_s
FROM feedback_backfill_lease AS l
WHERE l.name = %(name)s;

-- count_pending --
-- How many rows of one day of the window, above the day's settled mark (%(mark)s, 0 if
-- none), the walk will visit (progress bar, --dry-run, `backfill check`); count_settled
-- counts those below it. One row per project (strategy.figures reads them; the rest, their
-- sum). With the mark alone the planner reads the whole day through idx_runs_run_date (it
-- cannot tell that a day's ids above the mark are few); bounded above too, by the day's
-- highest id lacking records (a backward probe of runs_feedback_pending_idx), it takes that
-- range of runs_feedback_pending_idx, empty on a settled day, and never evaluates "lacks
-- records" on a document: gateway.PLANNER runs it after filter_cost, without which, on an
-- analyzed archive, it took runs_pkey and evaluated it on every row (a detoast each).
SELECT r.project, count(*) AS pending
FROM runs AS r
WHERE COALESCE(jsonb_typeof(r.data -> 'feedback_records'), 'null') = 'null'
  AND r.run_date = %(day)s
  AND r.id > %(mark)s::integer
  AND r.id <= (
      SELECT max(t.id) FROM runs AS t
      WHERE COALESCE(jsonb_typeof(t.data -> 'feedback_records'), 'null') = 'null' AND t.run_date = %(day)s)
  AND (%(projects)s::text[] IS NULL OR r.project = ANY(%(projects)s::text[]))
  AND NOT EXISTS (
      SELECT 1 FROM feedback_backfill_status AS s
      WHERE s.run_id = r.run_id
        AND (s.state = 'invalid'
             OR (s.state = 'failed' AND s.attempts >= %(max_attempts)s)
             -- no feedback then, and its feedback_stats still promise none (a verdict entered
             -- after the run was first examined reaches feedback_stats on the next upsert)
             OR (s.state = 'no_feedback' AND NOT r.data @? '$.feedback_stats.* ? (@.n > 0)')))
GROUP BY r.project;

-- count_refetch --
-- How many rows of one day a `backfill run --refetch` pass has left (see walk_refetch), per project.
SELECT todo.project, count(*) AS pending
FROM (
    SELECT r.id, r.project
    FROM feedback_backfill_status AS s
    JOIN runs AS r ON r.run_id = s.run_id
    WHERE s.run_date = %(day)s
      AND (s.state IN ('done', 'no_feedback') OR s.records_md5 IS NOT NULL)
      AND (s.refetched_at IS NULL OR s.refetched_at < %(refetch_since)s)
      AND (%(projects)s::text[] IS NULL OR r.project = ANY(%(projects)s::text[]))
    UNION
    SELECT r.id, r.project
    FROM runs AS r
    LEFT JOIN feedback_backfill_status AS s ON s.run_id = r.run_id
    WHERE %(replace_extractor)s
      AND (r.data -> 'feedback_records') @? '$[*].feedback_source_type'
      AND r.run_date = %(day)s
      AND (s.refetched_at IS NULL OR s.refetched_at < %(refetch_since)s)
      AND (%(projects)s::text[] IS NULL OR r.project = ANY(%(projects)s::text[]))
    UNION
    -- examined without feedback although without a checkpoint row (walk_refetch)
    SELECT r.id, r.project
    FROM runs AS r
    WHERE COALESCE(jsonb_typeof(r.data -> 'feedback_records'), 'null') = 'null'
      AND r.run_date = %(day)s AND r.id <= %(mark)s::integer
      AND NOT EXISTS (SELECT 1 FROM feedback_backfill_status AS s WHERE s.run_id = r.run_id)
      AND (%(projects)s::text[] IS NULL OR r.project = ANY(%(projects)s::text[]))
) AS todo
GROUP BY todo.project;

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
-- rewrite them), so a walk passes over each of them once, checked through the status
-- table's primary key: a statement never scans more than one day of them. On a day marked
-- settled (feedback_backfill_settled) the walk starts above the mark (%(after_id)s is at
-- least the mark): below it, walk_settled reads the few rows that can have changed.
-- Each document is detoasted once, and only for the rows returned: the batch is chosen with
-- r.data passed up as it is stored (a TOAST pointer, even through a sort), and above the
-- LIMIT the LATERAL subquery (kept apart by OFFSET 0) reads it once as `#> '{}'`, an empty
-- path, which returns the decompressed value itself whatever its type (`|| '{}'`, as in
-- patch_batch, would turn a scalar into an array). Read as two functions of r.data, each
-- would fetch and decompress the whole document.
SELECT w.id, w.run_id, w.run_date, jsonb_typeof(d.doc) AS data_type, d.doc -> 'feedback_stats' AS feedback_stats,
       w.attempts
FROM (
    SELECT r.id, r.run_id, r.run_date, r.data,
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
    LIMIT %(batch_size)s
) AS w
CROSS JOIN LATERAL (SELECT w.data #> '{}'::text[] AS doc OFFSET 0) AS d
ORDER BY w.id;

-- settled_marks --
-- The window's settled marks (feedback_backfill_settled, fb0006): on each of these days a
-- complete walk checkpointed every row lacking records up to id_bound.
SELECT m.run_date, m.id_bound
FROM feedback_backfill_settled AS m
WHERE m.run_date >= %(since)s AND m.run_date < %(until)s;

-- walk_settled --
-- The next batch of one day's rows at or below its settled mark that the walk must examine
-- again: walk_batch's own predicates, restricted to the only rows that can have changed
-- since the day was settled, each found through a small index instead of the day's rows
-- without feedback: rows whose feedback_stats now promise records and that lack them
-- (runs_feedback_missing_idx, predicate word for word), failed rows with attempts left
-- (feedback_backfill_status_date_state_idx; `backfill retry` gives them back), and rows
-- we enriched that lack records again (the extractor re-archived them): those whose
-- feedback_stats promise records are among the first; those we enriched although their
-- feedback_stats promised nothing come from feedback_backfill_status_unpromised_idx
-- (fb0006, predicate word for word), probed in runs_feedback_pending_idx; rows checkpointed
-- before fb0005 have no row_id and are matched by run_id. Not the whole ledger: merged
-- with the day's rows lacking records it would cost what the mark saves. Rows archived
-- into the day later have higher ids (SERIAL) and are above the mark; reset and revert
-- delete the marks. Each document is detoasted once, above the LIMIT (see walk_batch): the
-- ids found are sorted, and anything computed below the sort is computed for each of them.
SELECT w.id, w.run_id, w.run_date, jsonb_typeof(d.doc) AS data_type, d.doc -> 'feedback_stats' AS feedback_stats,
       w.attempts
FROM (
    SELECT r.id, r.run_id, r.run_date, r.data,
           COALESCE((SELECT s.attempts FROM feedback_backfill_status AS s WHERE s.run_id = r.run_id), 0) AS attempts
    FROM runs AS r
    WHERE r.id IN (
          SELECT m.id FROM runs AS m
          WHERE COALESCE(jsonb_typeof(m.data -> 'feedback_records'), 'null') = 'null'
            AND m.data @? '$.feedback_stats.* ? (@.n > 0)'
            AND m.run_date = %(day)s AND m.id > %(after_id)s::integer AND m.id <= %(mark)s::integer
          UNION ALL
          SELECT f.id FROM feedback_backfill_status AS s JOIN runs AS f ON f.run_id = s.run_id
          WHERE s.run_date = %(day)s AND s.state = 'failed' AND s.attempts < %(max_attempts)s
          UNION ALL
          SELECT l.id FROM feedback_backfill_status AS s JOIN runs AS l ON l.run_date = s.run_date AND l.id = s.row_id
          WHERE s.records_md5 IS NOT NULL AND s.stats_count = 0 AND s.run_date = %(day)s
            AND COALESCE(jsonb_typeof(l.data -> 'feedback_records'), 'null') = 'null'
            AND l.run_date = %(day)s AND l.id > %(after_id)s::integer AND l.id <= %(mark)s::integer
          UNION ALL
          SELECT o.id FROM feedback_backfill_status AS s JOIN runs AS o ON o.run_id = s.run_id
          WHERE s.records_md5 IS NOT NULL AND s.row_id IS NULL AND s.run_date = %(day)s
          UNION ALL
          -- rows with records a project's listing staged (staged_rows; none without a listing):
          -- a late record of a row settled without a checkpoint row (walk_candidates)
          SELECT p.id FROM runs AS p
          WHERE COALESCE(jsonb_typeof(p.data -> 'feedback_records'), 'null') = 'null'
            AND p.run_date = %(day)s AND p.id = ANY(%(staged)s::integer[])
            AND p.id > %(after_id)s::integer AND p.id <= %(mark)s::integer)
      AND COALESCE(jsonb_typeof(r.data -> 'feedback_records'), 'null') = 'null'
      AND r.run_date = %(day)s
      AND r.id > %(after_id)s::integer AND r.id <= %(mark)s::integer
      AND (%(projects)s::text[] IS NULL OR r.project = ANY(%(projects)s::text[]))
      AND NOT EXISTS (
          SELECT 1 FROM feedback_backfill_status AS s
          WHERE s.run_id = r.run_id
            AND (s.state = 'invalid'
                 OR (s.state = 'failed' AND s.attempts >= %(max_attempts)s)
                 OR (s.state = 'no_feedback' AND NOT r.data @? '$.feedback_stats.* ? (@.n > 0)')))
    ORDER BY r.id
    LIMIT %(batch_size)s
) AS w
CROSS JOIN LATERAL (SELECT w.data #> '{}'::text[] AS doc OFFSET 0) AS d
ORDER BY w.id;

-- count_settled --
-- How many rows of one day at or below its settled mark the walk will visit (walk_settled's rows), per project.
SELECT r.project, count(*) AS pending
FROM runs AS r
WHERE r.id IN (
      SELECT m.id FROM runs AS m
      WHERE COALESCE(jsonb_typeof(m.data -> 'feedback_records'), 'null') = 'null'
        AND m.data @? '$.feedback_stats.* ? (@.n > 0)'
        AND m.run_date = %(day)s AND m.id <= %(mark)s::integer
      UNION ALL
      SELECT f.id FROM feedback_backfill_status AS s JOIN runs AS f ON f.run_id = s.run_id
      WHERE s.run_date = %(day)s AND s.state = 'failed' AND s.attempts < %(max_attempts)s
      UNION ALL
      SELECT l.id FROM feedback_backfill_status AS s JOIN runs AS l ON l.run_date = s.run_date AND l.id = s.row_id
      WHERE s.records_md5 IS NOT NULL AND s.stats_count = 0 AND s.run_date = %(day)s
        AND COALESCE(jsonb_typeof(l.data -> 'feedback_records'), 'null') = 'null'
        AND l.run_date = %(day)s AND l.id <= %(mark)s::integer
      UNION ALL
      SELECT o.id FROM feedback_backfill_status AS s JOIN runs AS o ON o.run_id = s.run_id
      WHERE s.records_md5 IS NOT NULL AND s.row_id IS NULL AND s.run_date = %(day)s)
  AND COALESCE(jsonb_typeof(r.data -> 'feedback_records'), 'null') = 'null'
  AND r.run_date = %(day)s AND r.id <= %(mark)s::integer
  AND (%(projects)s::text[] IS NULL OR r.project = ANY(%(projects)s::text[]))
  AND NOT EXISTS (
      SELECT 1 FROM feedback_backfill_status AS s
      WHERE s.run_id = r.run_id
        AND (s.state = 'invalid'
             OR (s.state = 'failed' AND s.attempts >= %(max_attempts)s)
             OR (s.state = 'no_feedback' AND NOT r.data @? '$.feedback_stats.* ? (@.n > 0)')))
GROUP BY r.project;

-- staged_rows --
-- The rows of the window whose runs have records staged by a project's listing (its
-- session), as (run_date, id): resolved once per apply (a probe of runs' run_id index per
-- staged run, so it costs what the records cost), then given to each day's walk_candidates.
SELECT DISTINCT r.run_date, r.id
FROM feedback_backfill_staged AS s
JOIN runs AS r ON r.run_id = s.run_id
WHERE s.session_id = %(session_id)s
  AND r.run_date >= %(since)s AND r.run_date < %(until)s
  AND (%(projects)s::text[] IS NULL OR r.project = ANY(%(projects)s::text[]))
ORDER BY r.run_date, r.id;

-- walk_candidates --
-- The ids of one day's rows that a project's apply visits once its listing is complete and
-- checked (backfill.domain.settling: the others are settled by the mark, not written):
-- rows with staged records (%(staged)s, from staged_rows), rows whose feedback_stats promise
-- records (runs_feedback_missing_idx), rows examined before that walk_batch would visit again
-- (failed with attempts left; enriched by us and lacking records again, as in walk_settled),
-- and rows no listing can prove empty (runs_feedback_unprovable_idx, fb0008, predicate word
-- for word): each branch an index, none a document, whatever the mark (a late record below
-- it is found). Read whole, ids only; walk_rows then reads them a batch at a time.
SELECT r.id
FROM runs AS r
WHERE r.id IN (
      SELECT p.id FROM runs AS p
      WHERE COALESCE(jsonb_typeof(p.data -> 'feedback_records'), 'null') = 'null'
        AND p.run_date = %(day)s AND p.id = ANY(%(staged)s::integer[])
      UNION ALL
      SELECT m.id FROM runs AS m
      WHERE COALESCE(jsonb_typeof(m.data -> 'feedback_records'), 'null') = 'null'
        AND m.data @? '$.feedback_stats.* ? (@.n > 0)'
        AND m.run_date = %(day)s
      UNION ALL
      SELECT f.id FROM feedback_backfill_status AS s JOIN runs AS f ON f.run_id = s.run_id
      WHERE s.run_date = %(day)s AND s.state = 'failed' AND s.attempts < %(max_attempts)s
      UNION ALL
      SELECT l.id FROM feedback_backfill_status AS s JOIN runs AS l ON l.run_date = s.run_date AND l.id = s.row_id
      WHERE s.records_md5 IS NOT NULL AND s.stats_count = 0 AND s.run_date = %(day)s
        AND COALESCE(jsonb_typeof(l.data -> 'feedback_records'), 'null') = 'null'
        AND l.run_date = %(day)s
      UNION ALL
      SELECT o.id FROM feedback_backfill_status AS s JOIN runs AS o ON o.run_id = s.run_id
      WHERE s.records_md5 IS NOT NULL AND s.row_id IS NULL AND s.run_date = %(day)s
      UNION ALL
      SELECT u.id FROM runs AS u
      WHERE COALESCE(jsonb_typeof(u.data -> 'feedback_records'), 'null') = 'null'
        AND (jsonb_typeof(u.data) <> 'object'
             OR u.run_id !~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$')
        AND u.run_date = %(day)s)
  AND r.run_date = %(day)s
  AND (%(projects)s::text[] IS NULL OR r.project = ANY(%(projects)s::text[]))
ORDER BY r.id;

-- walk_rows --
-- A batch of walk_candidates' rows, as walk_batch returns them: those still lacking records
-- now and not excluded by walk_batch's own rules (invalid, failed without attempts left, no
-- feedback while their feedback_stats promise none). Each document is detoasted once, in the
-- LATERAL subquery kept apart by OFFSET 0 (see walk_batch), and every test reads that copy.
SELECT r.id, r.run_id, r.run_date, jsonb_typeof(d.doc) AS data_type, d.doc -> 'feedback_stats' AS feedback_stats,
       COALESCE(s.attempts, 0) AS attempts
FROM runs AS r
LEFT JOIN feedback_backfill_status AS s ON s.run_id = r.run_id
CROSS JOIN LATERAL (SELECT r.data #> '{}'::text[] AS doc OFFSET 0) AS d
WHERE r.id = ANY(%(ids)s::integer[])
  AND COALESCE(jsonb_typeof(d.doc -> 'feedback_records'), 'null') = 'null'
  AND NOT COALESCE(s.state = 'invalid'
                   OR (s.state = 'failed' AND s.attempts >= %(max_attempts)s)
                   OR (s.state = 'no_feedback' AND NOT d.doc @? '$.feedback_stats.* ? (@.n > 0)'), false)
ORDER BY r.id;

-- horizon_ids --
-- The id bound a walk may mark its days settled up to: the highest id committed now (a
-- backward probe of the primary key). Read before horizon_xid, in its own transaction.
SELECT COALESCE(max(r.id), 0)::bigint AS id_bound FROM runs AS r;

-- horizon_xid --
-- The transactions running right after horizon_ids (their virtual transaction ids; ours
-- excepted). ids are handed out in order (SERIAL), so a row with an id at most the bound
-- that was not committed then belongs to a transaction that had taken that id before the
-- bound was read: it is one of these. Once none of them is left (horizon_closed), every such
-- row is committed or never will be, and a walk reading a day from then on sees all of them.
-- Not a transaction id: a transaction takes its xid at its first write, after nextval, and
-- the snapshot's xmax is one past the latest *completed* xid, so a running transaction whose
-- xid is above every completed one is in neither (CREATE INDEX CONCURRENTLY waits on virtual
-- transaction ids for the same reason). pg_locks is server-wide: right behind PgBouncer too.
SELECT COALESCE(array_agg(l.virtualxid), '{}') AS vxids
FROM pg_locks AS l
WHERE l.locktype = 'virtualxid' AND l.pid IS DISTINCT FROM pg_backend_pid();

-- horizon_closed --
-- Has every transaction of %(vxids)s ended? Asked before a day's first read; until they
-- have, the day gets no mark.
SELECT NOT EXISTS (
    SELECT 1 FROM pg_locks AS l
    WHERE l.locktype = 'virtualxid' AND l.virtualxid = ANY(%(vxids)s::text[])
) AS closed;

-- settle_day --
-- Mark a day settled up to %(id_bound)s, once every row of its walk is checkpointed (in a
-- transaction after the day's last checkpoint: a kill before it leaves no mark, which only
-- costs the next run a full walk of the day). A mark only grows.
INSERT INTO feedback_backfill_settled AS m (run_date, id_bound, invocation_id)
VALUES (%(day)s, %(id_bound)s, %(invocation_id)s)
ON CONFLICT (run_date) DO UPDATE
SET id_bound = GREATEST(m.id_bound, EXCLUDED.id_bound), invocation_id = EXCLUDED.invocation_id,
    settled_at = now();

-- settle_day_proven --
-- settle_day for a day some walk settled by proof (a project's apply: its rows without staged
-- records, promising none, lacking records were neither read nor checkpointed), in the same
-- transaction: the day's rows above the previous mark (%(after_id)s, read by settled_marks in
-- this transaction) and at most %(id_bound)s that lack records and hold no checkpoint row are
-- those rows (every other walk of the day checkpointed each row it read, none skipped),
-- counted per project into the mark's `empty` (fb0008) and returned. Rows at or below the
-- previous mark were counted by the mark that covered them. Counted without visiting them:
-- the rows lacking records per project from a range of runs_feedback_pending_project_idx
-- (fb0009, an index-only scan; `mod(p.id, 1) = 0`, true of every row, is its predicate's: no
-- other query states it, so that no other plan takes that index), less those of them that
-- hold a checkpoint row, found from the status table's rows of the day (the rows some walk read: as many as the records, under
-- the project strategy; MATERIALIZED and LATERAL ... OFFSET 0 keep the plan driven by them:
-- on estimates, the planner drove it from the day's rows lacking records instead), each
-- joined to its run by run_id and kept if a probe of runs_feedback_pending_idx says it lacks
-- records. Never a document; a row not of the day's status rows is never visited. Not exact
-- in one case: a run whose checkpoint row names another run_date than its row does now (the
-- extractor re-archived it under another date) is counted, where a probe by run_id would not.
WITH lacking AS (
    SELECT p.project, count(*)::bigint AS n
    FROM runs AS p
    WHERE COALESCE(jsonb_typeof(p.data -> 'feedback_records'), 'null') = 'null' AND mod(p.id, 1) = 0
      AND p.run_date = %(day)s AND p.id > %(after_id)s::integer AND p.id <= %(id_bound)s::integer
    GROUP BY p.project
), day_status AS MATERIALIZED (
    SELECT s.run_id FROM feedback_backfill_status AS s WHERE s.run_date = %(day)s
), examined AS (
    SELECT r.project, count(*)::bigint AS n
    FROM day_status AS s
    CROSS JOIN LATERAL (
        SELECT r.project FROM runs AS r
        WHERE r.run_id = s.run_id AND r.id > %(after_id)s::integer AND r.id <= %(id_bound)s::integer
          AND EXISTS (SELECT 1 FROM runs AS t
                      WHERE COALESCE(jsonb_typeof(t.data -> 'feedback_records'), 'null') = 'null'
                        AND t.run_date = %(day)s AND t.id = r.id)
        OFFSET 0) AS r
    GROUP BY r.project
), proven AS (
    SELECT l.project, l.n - COALESCE(e.n, 0) AS n
    FROM lacking AS l
    LEFT JOIN examined AS e ON e.project = l.project
    WHERE l.n > COALESCE(e.n, 0)
), counted AS (
    SELECT COALESCE(jsonb_object_agg(p.project, p.n), '{}'::jsonb) AS empty, COALESCE(sum(p.n), 0)::bigint AS n
    FROM proven AS p
), marked AS (
    INSERT INTO feedback_backfill_settled AS m (run_date, id_bound, invocation_id, empty)
    SELECT %(day)s, %(id_bound)s, %(invocation_id)s, c.empty FROM counted AS c
    ON CONFLICT (run_date) DO UPDATE
    SET id_bound = GREATEST(m.id_bound, EXCLUDED.id_bound), invocation_id = EXCLUDED.invocation_id,
        settled_at = now(),
        empty = (SELECT COALESCE(jsonb_object_agg(k.key, COALESCE((m.empty ->> k.key)::bigint, 0)
                                                         + COALESCE((EXCLUDED.empty ->> k.key)::bigint, 0)),
                                 '{}'::jsonb)
                 FROM jsonb_each(m.empty || EXCLUDED.empty) AS k)
    RETURNING m.run_date
)
SELECT c.n AS proven FROM counted AS c, marked;

-- settled_empty_among --
-- Of a batch's rows read at or below their day's mark (%(ids)s), those settled without a
-- checkpoint row (the mark's `empty`): lacking records (runs_feedback_pending_idx, probed)
-- and holding no checkpoint row. Asked in the batch's write transaction before the patch.
SELECT r.run_id
FROM runs AS r
JOIN feedback_backfill_settled AS m ON m.run_date = r.run_date
WHERE r.id = ANY(%(ids)s::integer[]) AND r.id <= m.id_bound
  AND NOT EXISTS (SELECT 1 FROM feedback_backfill_status AS s WHERE s.run_id = r.run_id)
  AND EXISTS (
      SELECT 1 FROM runs AS p
      WHERE COALESCE(jsonb_typeof(p.data -> 'feedback_records'), 'null') = 'null'
        AND p.run_date = r.run_date AND p.id = r.id);

-- settled_examined --
-- Those of them the batch checkpointed (%(run_ids)s) are examined again: off their mark's
-- `empty`, in the checkpoint's transaction, so that a row is counted once (its checkpoint
-- row, or the mark) whatever is killed when.
UPDATE feedback_backfill_settled AS m
SET empty = (SELECT COALESCE(jsonb_object_agg(k.key, GREATEST(k.value::bigint - COALESCE((c.taken ->> k.key)::bigint, 0), 0)),
                             '{}'::jsonb)
             FROM jsonb_each_text(m.empty) AS k)
FROM (
    SELECT t.run_date, jsonb_object_agg(t.project, t.n) AS taken
    FROM (
        SELECT r.run_date, r.project, count(*) AS n
        FROM runs AS r
        WHERE r.run_id = ANY(%(run_ids)s::text[])
        GROUP BY r.run_date, r.project
    ) AS t
    GROUP BY t.run_date
) AS c
WHERE m.run_date = c.run_date;

-- unsettle --
-- Forget the settled marks of the window (reset, revert: the rows they forget or restore
-- lack a checkpoint below the marks), and with them the counts of rows settled without a
-- checkpoint row (`empty`: pending again, as reset makes rows without feedback). Before any
-- checkpoint row is deleted.
DELETE FROM feedback_backfill_settled AS m
WHERE m.run_date >= %(since)s AND m.run_date < %(until)s;

-- listings_retire --
-- Retire the listings of the window's projects (reset, revert, in unsettle's transaction):
-- marked applied and fallen back, the next pass of such a project starts a new listing and
-- drops its staged copies (listing.begin) instead of extending one whose records it wrote.
UPDATE feedback_backfill_listing AS l
SET completed_at = COALESCE(l.completed_at, now()), applied_at = COALESCE(l.applied_at, now()),
    fallback = COALESCE(l.fallback, %(why)s)
WHERE EXISTS (
    SELECT 1 FROM runs AS r
    WHERE r.project = l.project AND r.run_date >= %(since)s AND r.run_date < %(until)s);

-- workspace_probe_runs --
-- The wrong-workspace probe (runner.guard): the window's newest runs whose
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
-- Add feedback_records to each row in place, in one statement. The rows are those lock_rows
-- has just locked (%(ids)s, in this transaction): nobody else can change them before we
-- commit, so each document is read as it is now, and an upsert committed before the lock
-- is kept; a row that got feedback_records meanwhile is left alone (the predicate is
-- re-checked). Returns, for `backfill revert`, whether the key was there (as JSON null)
-- before, and md5 of what we wrote.
-- Each document is detoasted once (`d.data || '{}'`, which returns the decompressed value
-- itself, in a subquery kept apart by OFFSET 0): every function of r.data would otherwise
-- fetch and decompress the whole document again (four times a row).
-- The "still lacking" re-check is deliberately NOT written as the partial index's predicate:
-- written the same, it lets the planner probe runs_feedback_pending_idx (run_date, id) by id
-- alone, a scan of the whole index per row.
WITH patch AS (
    SELECT p.id, p.records
    FROM jsonb_to_recordset(%(patch)s::jsonb) AS p(id integer, records jsonb)
), cur AS (
    SELECT d.id, d.doc, p.records
    FROM (SELECT r.id, r.data || '{}'::jsonb AS doc FROM runs AS r WHERE r.id = ANY(%(ids)s::integer[]) OFFSET 0) AS d
    JOIN patch AS p ON p.id = d.id
    WHERE jsonb_typeof(d.doc) = 'object'
      AND (NOT d.doc ? 'feedback_records' OR d.doc -> 'feedback_records' = 'null'::jsonb)
)
UPDATE runs AS r
SET data = c.doc || jsonb_build_object('feedback_records', c.records)
FROM cur AS c
WHERE r.id = ANY(%(ids)s::integer[]) AND r.id = c.id
RETURNING r.run_id, CASE WHEN c.doc ? 'feedback_records' THEN 'null' ELSE 'absent' END AS prior,
          NULL::text AS prior_records, md5((r.data -> 'feedback_records')::text) AS records_md5;

-- walk_refetch --
-- `backfill run --refetch`: the next batch of rows of the window already examined (done, no
-- feedback, or holding the partial records of a mismatch) and not refetched since
-- %(refetch_since)s, one day at a time in keyset order on id. The pass's progress is its own
-- marker, refetched_at: updated_at moves with every checkpoint and every `backfill retry`.
-- With %(replace_extractor)s (--replace-extractor-records), also the day's rows holding the
-- extractor's reduced records (runs_feedback_extractor_idx, predicate word for word). And the
-- rows a project's apply settled without a checkpoint row (at or below the day's mark
-- %(mark)s, lacking records, no checkpoint row: examined without feedback, so refetched too;
-- each gets its checkpoint row then, which is the pass's progress for them).
-- The union is of ids alone, ordered and cut to the batch before any document is read: with
-- the documents' functions in its branches, every batch detoasted every remaining candidate
-- of the day (twice) to sort and deduplicate them. The batch's rows are then read by primary
-- key, each document detoasted once (see walk_batch).
SELECT r.id, r.run_id, r.run_date, jsonb_typeof(d.doc) AS data_type, d.doc -> 'feedback_stats' AS feedback_stats,
       COALESCE(s.attempts, 0) AS attempts
FROM (
    SELECT r.id
    FROM feedback_backfill_status AS s
    JOIN runs AS r ON r.run_id = s.run_id
    WHERE s.run_date = %(day)s
      AND (s.state IN ('done', 'no_feedback') OR s.records_md5 IS NOT NULL)
      AND (s.refetched_at IS NULL OR s.refetched_at < %(refetch_since)s)
      AND r.id > %(after_id)s::integer
      AND (%(projects)s::text[] IS NULL OR r.project = ANY(%(projects)s::text[]))
    UNION
    SELECT r.id
    FROM runs AS r
    LEFT JOIN feedback_backfill_status AS s ON s.run_id = r.run_id
    WHERE %(replace_extractor)s
      AND (r.data -> 'feedback_records') @? '$[*].feedback_source_type'
      AND r.run_date = %(day)s
      AND r.id > %(after_id)s::integer
      AND (s.refetched_at IS NULL OR s.refetched_at < %(refetch_since)s)
      AND (%(projects)s::text[] IS NULL OR r.project = ANY(%(projects)s::text[]))
    UNION
    SELECT r.id
    FROM runs AS r
    WHERE COALESCE(jsonb_typeof(r.data -> 'feedback_records'), 'null') = 'null'
      AND r.run_date = %(day)s AND r.id <= %(mark)s::integer
      AND r.id > %(after_id)s::integer
      AND NOT EXISTS (SELECT 1 FROM feedback_backfill_status AS s WHERE s.run_id = r.run_id)
      AND (%(projects)s::text[] IS NULL OR r.project = ANY(%(projects)s::text[]))
    ORDER BY id
    LIMIT %(batch_size)s
) AS w
JOIN runs AS r ON r.id = w.id
LEFT JOIN feedback_backfill_status AS s ON s.run_id = r.run_id
CROSS JOIN LATERAL (SELECT r.data #> '{}'::text[] AS doc OFFSET 0) AS d
ORDER BY r.id;

-- patch_refetch --
-- Replace feedback_records in place where they are still the ones we wrote (md5 as recorded)
-- or absent/null. Records someone else wrote are overwritten only on request:
-- %(replace)s = 'extractor' (run --refetch --replace-extractor-records: the extractor's
-- reduced records) or 'any' (verify --fix, for rows changed since we wrote them).
-- The ledger describes the row just before our write: while it still holds our records,
-- what it held before them (the ledger's); otherwise what it holds now (absent, null, or
-- the records we replace, kept in prior_records so that revert restores them exactly).
-- Returns every row that holds our records afterwards, rewritten or already identical.
WITH patch AS (
    SELECT p.id, p.records
    FROM jsonb_to_recordset(%(patch)s::jsonb) AS p(id integer, records jsonb)
), before AS (
    SELECT r.id, r.run_id, r.data -> 'feedback_records' AS current,
           md5((r.data -> 'feedback_records')::text) AS current_md5,
           r.data ? 'feedback_records' AS has_key,
           COALESCE((r.data -> 'feedback_records') @? '$[*].feedback_source_type', false) AS extractor,
           s.prior AS ledger_prior, s.prior_records AS ledger_prior_records, s.records_md5
    FROM runs AS r
    LEFT JOIN feedback_backfill_status AS s ON s.run_id = r.run_id
    WHERE r.id = ANY(%(ids)s::integer[])
), ours AS (
    SELECT b.id, b.run_id,
           CASE WHEN b.current_md5 = b.records_md5 THEN b.ledger_prior
                WHEN NOT b.has_key THEN 'absent'
                WHEN b.current = 'null'::jsonb THEN 'null'
                ELSE 'records' END AS prior,
           CASE WHEN b.current_md5 = b.records_md5 THEN b.ledger_prior_records
                WHEN b.has_key AND b.current <> 'null'::jsonb THEN b.current END AS prior_records,
           b.current_md5, md5(p.records::text) AS new_md5, p.records
    FROM before AS b JOIN runs AS r ON r.id = b.id JOIN patch AS p ON p.id = b.id
    WHERE jsonb_typeof(r.data) = 'object'
      -- "absent or null", not in the partial index's words (see patch_batch)
      AND (NOT r.data ? 'feedback_records' OR r.data -> 'feedback_records' = 'null'::jsonb
           OR b.current_md5 = b.records_md5
           OR (%(replace)s::text = 'extractor' AND b.extractor)
           OR %(replace)s::text = 'any')
), changed AS (
    -- rows whose records did not change are not rewritten (no WAL, no bloat, no GIN churn)
    UPDATE runs AS r
    SET data = r.data || jsonb_build_object('feedback_records', o.records)
    FROM ours AS o
    WHERE r.id = ANY(%(ids)s::integer[]) AND r.id = o.id AND o.new_md5 IS DISTINCT FROM o.current_md5
    RETURNING r.id
)
-- prior_records as jsonb's own text, so that it goes back into the ledger exactly (a trip
-- through Python floats could change a number's digits)
SELECT o.run_id, o.prior, o.prior_records::text AS prior_records, o.new_md5 AS records_md5
FROM ours AS o;

-- checkpoint --
-- Record what the batch found for each run; attempts counts examinations. A --refetch that
-- wrote nothing (mismatch, API error, no feedback) to a row still holding our records keeps
-- the row's state and count (it is as it was) and only records the error.
INSERT INTO feedback_backfill_status AS s
    (run_id, run_date, state, reason, attempts, records, stats_count, prior, prior_records, records_md5,
     last_error, invocation_id, row_id, refetched_at)
SELECT c.run_id, c.run_date, c.state, c.reason, 1, c.records, c.stats_count, c.prior, c.prior_records::jsonb,
       c.records_md5, c.last_error, %(invocation_id)s, c.row_id, CASE WHEN %(refetch)s THEN now() END
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS c(run_id text, run_date date, state text, reason text, records bigint, stats_count bigint,
          prior text, prior_records text, records_md5 text, last_error text, row_id integer)
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
    -- the ledger of what we wrote survives a later failed examination; a write brings its own
    -- (the patch computed it from the row just before the write), prior_records included
    prior = COALESCE(EXCLUDED.prior, s.prior),
    prior_records = CASE WHEN EXCLUDED.prior IS NOT NULL THEN EXCLUDED.prior_records ELSE s.prior_records END,
    records_md5 = COALESCE(EXCLUDED.records_md5, s.records_md5),
    last_error = EXCLUDED.last_error,
    invocation_id = EXCLUDED.invocation_id,
    row_id = COALESCE(EXCLUDED.row_id, s.row_id),
    -- the --refetch pass's own progress marker (see walk_refetch)
    refetched_at = COALESCE(EXCLUDED.refetched_at, s.refetched_at),
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
-- `backfill status` (backfill/archive/status.py; rendered by backfill/report/): read-only, from indexes, never runs.data.
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

-- status_data_by_day --
-- What the rows of the window hold now, per day, as (figure, run_date, n), counted from the
-- partial indexes of runs (run_date, id) alone: never a document. Each predicate is, word
-- for word, its index's (runs_feedback_pending_idx: lacking records; _promised_idx:
-- feedback_stats count records; _missing_idx: both; _extractor_idx: the extractor's reduced
-- records). The checkpoint's ledger joins them on (run_date, row_id), runs.id when we
-- checkpointed the row (the extractor's upsert keeps it): both sides are read in that order
-- from their indexes and merged. Status rows written before fb0005 have no row_id and are
-- matched by run_id instead (a probe of runs' unique index and a heap visit each, not data).
-- With --project the runs' index entries are filtered by runs.project (a heap visit each,
-- never data): written `project || ''` so that the planner cannot take the project's rows
-- from idx_runs_project and test each document against the predicates instead.
SELECT 'lacking' AS figure, r.run_date, count(*)::bigint AS n
FROM runs AS r
WHERE COALESCE(jsonb_typeof(r.data -> 'feedback_records'), 'null') = 'null'
  AND r.run_date >= %(since)s AND r.run_date < %(until)s
  AND (%(projects)s::text[] IS NULL OR r.project || '' = ANY(%(projects)s::text[]))
GROUP BY r.run_date
UNION ALL
SELECT 'promised', r.run_date, count(*)
FROM runs AS r
WHERE r.data @? '$.feedback_stats.* ? (@.n > 0)'
  AND r.run_date >= %(since)s AND r.run_date < %(until)s
  AND (%(projects)s::text[] IS NULL OR r.project || '' = ANY(%(projects)s::text[]))
GROUP BY r.run_date
UNION ALL
SELECT 'promised_lacking', r.run_date, count(*)
FROM runs AS r
WHERE COALESCE(jsonb_typeof(r.data -> 'feedback_records'), 'null') = 'null'
  AND r.data @? '$.feedback_stats.* ? (@.n > 0)'
  AND r.run_date >= %(since)s AND r.run_date < %(until)s
  AND (%(projects)s::text[] IS NULL OR r.project || '' = ANY(%(projects)s::text[]))
GROUP BY r.run_date
UNION ALL
SELECT 'extractor_records', r.run_date, count(*)
FROM runs AS r
WHERE (r.data -> 'feedback_records') @? '$[*].feedback_source_type'
  AND r.run_date >= %(since)s AND r.run_date < %(until)s
  AND (%(projects)s::text[] IS NULL OR r.project || '' = ANY(%(projects)s::text[]))
GROUP BY r.run_date
UNION ALL
SELECT 'ledger', s.run_date, count(*)
FROM feedback_backfill_status AS s
WHERE s.records_md5 IS NOT NULL
  AND s.run_date >= %(since)s AND s.run_date < %(until)s
  AND (%(projects)s::text[] IS NULL
       OR EXISTS (SELECT 1 FROM runs AS r WHERE r.id = s.row_id AND r.project = ANY(%(projects)s::text[]))
       OR (s.row_id IS NULL
           AND EXISTS (SELECT 1 FROM runs AS r WHERE r.run_id = s.run_id AND r.project = ANY(%(projects)s::text[]))))
GROUP BY s.run_date
UNION ALL
SELECT 'lacking_now', s.run_date, count(*)
FROM feedback_backfill_status AS s
JOIN runs AS r ON r.run_date = s.run_date AND r.id = s.row_id
WHERE s.records_md5 IS NOT NULL
  AND s.run_date >= %(since)s AND s.run_date < %(until)s
  AND COALESCE(jsonb_typeof(r.data -> 'feedback_records'), 'null') = 'null'
  AND r.run_date >= %(since)s AND r.run_date < %(until)s
  AND (%(projects)s::text[] IS NULL OR r.project || '' = ANY(%(projects)s::text[]))
GROUP BY s.run_date
UNION ALL
SELECT 'ledger_extractor', s.run_date, count(*)
FROM feedback_backfill_status AS s
JOIN runs AS r ON r.run_date = s.run_date AND r.id = s.row_id
WHERE s.records_md5 IS NOT NULL
  AND s.run_date >= %(since)s AND s.run_date < %(until)s
  AND (r.data -> 'feedback_records') @? '$[*].feedback_source_type'
  AND r.run_date >= %(since)s AND r.run_date < %(until)s
  AND (%(projects)s::text[] IS NULL OR r.project || '' = ANY(%(projects)s::text[]))
GROUP BY s.run_date
UNION ALL
-- status rows checkpointed before fb0005 (no row_id), lacking records or the extractor's now
SELECT CASE WHEN COALESCE(jsonb_typeof(r.data -> 'feedback_records'), 'null') = 'null'
            THEN 'lacking_now' ELSE 'ledger_extractor' END, s.run_date, count(*)
FROM feedback_backfill_status AS s
JOIN runs AS r ON r.run_id = s.run_id
WHERE s.records_md5 IS NOT NULL AND s.row_id IS NULL
  AND s.run_date >= %(since)s AND s.run_date < %(until)s
  AND (COALESCE(jsonb_typeof(r.data -> 'feedback_records'), 'null') = 'null'
       OR (r.data -> 'feedback_records') @? '$[*].feedback_source_type')
  AND (%(projects)s::text[] IS NULL OR r.project || '' = ANY(%(projects)s::text[]))
GROUP BY 1, s.run_date;

-- status_settled_empty --
-- Rows settled without a checkpoint row (examined without feedback by a project's apply),
-- per day: the marks' `empty` counts (fb0008), a row per day of our narrow table.
SELECT m.run_date, COALESCE(sum(e.value::bigint), 0)::bigint AS n
FROM feedback_backfill_settled AS m
CROSS JOIN LATERAL jsonb_each_text(m.empty) AS e
WHERE m.run_date >= %(since)s AND m.run_date < %(until)s
  AND (%(projects)s::text[] IS NULL OR e.key = ANY(%(projects)s::text[]))
GROUP BY m.run_date;

-- status_settings --
-- For the report's read-only transaction only (set_config local: nothing outlives it, as
-- PgBouncer's transaction pooling requires). JIT compiling its coarse estimates costs more
-- than the queries (seconds on 1 M rows). Every figure is meant to come from an index; a
-- sequential scan of runs would test each document against the partial indexes' predicates
-- (the planner prefers it on a small table, and with --project over heap visits for the
-- project of each index entry): sequential scans are priced out.
SELECT set_config('jit', 'off', true), set_config('enable_seqscan', 'off', true);

-- status_invocations --
-- Every `backfill run` (one row each: a small table), oldest first.
SELECT i.id, i.started_at, i.heartbeat_at, i.finished_at, i.outcome, i.message, i.params,
       i.rows_pending_at_start, i.rows_examined, i.rows_enriched, i.rows_no_feedback,
       i.rows_failed, i.records_stored, i.api_requests, i.api_errors,
       i.rate_limit_wait_s, i.outage_wait_s, i.strategy, i.requests_saved
FROM feedback_backfill_invocations AS i
ORDER BY i.id;

-- status_lease --
-- The lease (see lease_take): who holds or last held it, and whether it is alive at the
-- snapshot's clock; released when its expiry was set to its last heartbeat.
-- One row always (as_of is the report's clock); the lease's columns are NULL if never taken.
SELECT now() AS as_of, l.command, l.hostname, l.pid, l.invocation_id, l.acquired_at, l.heartbeat_at,
       l.expires_at, l.expires_at > now() AS alive, l.expires_at <= l.heartbeat_at AS released
FROM (SELECT 1) AS one
LEFT JOIN feedback_backfill_lease AS l ON l.name = %(name)s;

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
-- Restore each row of a day that still holds our records to what it held just before our
-- write: key absent, JSON null as the extractor's older path writes it, or the records we
-- replaced (the extractor's reduced ones), exactly as they were. Records someone else wrote
-- since (md5 differs) stay.
UPDATE runs AS r
SET data = CASE WHEN s.prior = 'null' THEN jsonb_set(r.data, '{feedback_records}', 'null'::jsonb)
                WHEN s.prior = 'records' THEN jsonb_set(r.data, '{feedback_records}', s.prior_records)
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
-- The stored records of a chunk of the sample, and whether they are still the ones we wrote
-- (md5 as in the ledger); if not, whether they vanished or the extractor's records replaced them.
-- Each document is detoasted once (see walk_batch), not once for each of these six functions of it.
SELECT r.id, r.run_id, r.run_date, jsonb_typeof(d.doc) AS data_type,
       d.doc -> 'feedback_stats' AS feedback_stats, d.doc -> 'feedback_records' AS stored,
       md5((d.doc -> 'feedback_records')::text) IS NOT DISTINCT FROM s.records_md5 AS ours,
       COALESCE(jsonb_typeof(d.doc -> 'feedback_records'), 'null') = 'null' AS vanished,
       COALESCE((d.doc -> 'feedback_records') @? '$[*].feedback_source_type', false) AS extractor
FROM feedback_backfill_status AS s
JOIN runs AS r ON r.run_id = s.run_id
CROSS JOIN LATERAL (SELECT r.data #> '{}'::text[] AS doc OFFSET 0) AS d
WHERE s.run_id = ANY(%(run_ids)s::text[]);

-- =====================================================================================
-- The pre-flight (backfill/check.py): `backfill check` writes nothing; each of its reads
-- runs in a transaction made READ ONLY by check_read_only, then rolled back.
-- =====================================================================================

-- check_read_only --
-- The first statement after transaction_settings: a read-only transaction (SET takes no
-- snapshot, so it may still follow SET LOCAL); nothing of it outlives the transaction.
SET TRANSACTION READ ONLY;

-- check_server --
-- Who and where we are, as the server sees it. inet_server_port() is the port of the
-- server's own socket: a different port than the one we connected to means a pooler or a
-- proxy in between (NULL over a Unix socket).
SELECT current_user AS role, current_database() AS dbname, inet_server_port() AS server_port,
       current_setting('server_version') AS server_version, pg_backend_pid() AS backend_pid,
       to_regclass('feedback_backfill_alembic_version') IS NOT NULL AS ours_table,
       has_table_privilege(to_regclass('feedback_backfill_alembic_version'), 'SELECT') AS ours_readable,
       to_regclass('alembic_version') IS NOT NULL AS app_table,
       has_table_privilege(to_regclass('alembic_version'), 'SELECT') AS app_readable;

-- check_backend_pid --
-- The server process of this transaction: two of our connections sharing one means
-- transaction pooling (check.py's pool-mode probe).
SELECT pg_backend_pid() AS backend_pid;

-- check_our_version --
-- Our Alembic revision (only asked when feedback_backfill_alembic_version exists).
SELECT version_num FROM feedback_backfill_alembic_version;

-- check_app_version --
-- The app's own Alembic revision(s) (only asked when alembic_version exists): ours must
-- never be there.
SELECT version_num FROM alembic_version;

-- check_privileges --
-- What the current role may do, from the catalog (has_*_privilege), not by trying. A table
-- that does not exist gives NULL (to_regclass is NULL; the functions are strict). Also asked
-- by `revert`/`reset` before anything changes: they delete checkpoint rows, which
-- sql/grants.sql deliberately does not grant the runner role.
SELECT current_user AS role,
       has_table_privilege(to_regclass('runs'), 'SELECT') AS runs_select,
       has_column_privilege(to_regclass('runs'), 'data', 'UPDATE') AS runs_update_data,
       has_table_privilege(to_regclass('feedback_backfill_status'), 'SELECT') AS status_select,
       has_table_privilege(to_regclass('feedback_backfill_status'), 'INSERT') AS status_insert,
       has_table_privilege(to_regclass('feedback_backfill_status'), 'UPDATE') AS status_update,
       has_table_privilege(to_regclass('feedback_backfill_status'), 'DELETE') AS status_delete,
       has_table_privilege(to_regclass('feedback_backfill_invocations'), 'SELECT') AS invocations_select,
       has_table_privilege(to_regclass('feedback_backfill_invocations'), 'INSERT') AS invocations_insert,
       has_table_privilege(to_regclass('feedback_backfill_invocations'), 'UPDATE') AS invocations_update,
       has_table_privilege(to_regclass('feedback_backfill_lease'), 'SELECT') AS lease_select,
       has_table_privilege(to_regclass('feedback_backfill_lease'), 'INSERT') AS lease_insert,
       has_table_privilege(to_regclass('feedback_backfill_lease'), 'UPDATE') AS lease_update,
       has_table_privilege(to_regclass('feedback_backfill_settled'), 'SELECT') AS settled_select,
       has_table_privilege(to_regclass('feedback_backfill_settled'), 'INSERT') AS settled_insert,
       has_table_privilege(to_regclass('feedback_backfill_settled'), 'UPDATE') AS settled_update,
       has_table_privilege(to_regclass('feedback_backfill_settled'), 'DELETE') AS settled_delete,
       has_table_privilege(to_regclass('feedback_backfill_listing'), 'SELECT') AS listing_select,
       has_table_privilege(to_regclass('feedback_backfill_listing'), 'INSERT') AS listing_insert,
       has_table_privilege(to_regclass('feedback_backfill_listing'), 'UPDATE') AS listing_update,
       has_table_privilege(to_regclass('feedback_backfill_staged'), 'SELECT') AS staged_select,
       has_table_privilege(to_regclass('feedback_backfill_staged'), 'INSERT') AS staged_insert,
       has_table_privilege(to_regclass('feedback_backfill_staged'), 'UPDATE') AS staged_update,
       has_table_privilege(to_regclass('feedback_backfill_staged'), 'DELETE') AS staged_delete;

-- check_stored_size --
-- Average size of the feedback_records we stored (jsonb, before TOAST compression) and of
-- those rows' whole documents as stored, over a sample of up to 1000 enriched rows of the window.
SELECT count(*)::bigint AS n,
       avg(pg_column_size(r.data -> 'feedback_records'))::float8 AS records_bytes,
       avg(pg_column_size(r.data))::float8 AS document_bytes
FROM (
    SELECT s.run_id FROM feedback_backfill_status AS s
    WHERE s.state = 'done' AND s.run_date >= %(since)s AND s.run_date < %(until)s
    LIMIT 1000
) AS s
JOIN runs AS r ON r.run_id = s.run_id;

-- check_pending_size --
-- Average stored size (pg_column_size: after TOAST compression) of the documents the run
-- will rewrite: a sample of up to 1000 of the window's rows whose feedback_stats promise
-- records and that lack them (runs_feedback_promised_idx's rows).
SELECT count(*)::bigint AS n, avg(pg_column_size(r.data))::float8 AS document_bytes
FROM (
    SELECT r.data FROM runs AS r
    WHERE r.run_date >= %(since)s AND r.run_date < %(until)s
      AND (%(projects)s::text[] IS NULL OR r.project = ANY(%(projects)s::text[]))
      AND COALESCE(jsonb_typeof(r.data -> 'feedback_records'), 'null') = 'null'
      AND r.data @? '$.feedback_stats.* ? (@.n > 0)'
    LIMIT 1000
) AS r;

-- =====================================================================================
-- `backfill run --strategy auto|project` (backfill/archive/planning.py, staging.py; backfill/runner/listing.py, project.py): a
-- project's run-level feedback listed by creation time, staged in feedback_backfill_staged,
-- then applied to the window's rows by the walk, the patch and the checkpoint above.
-- =====================================================================================

-- strategy_rows --
-- Rows of the window per project (auto's choice): an index-only scan of idx_runs_project_date.
SELECT r.project, count(*)::bigint AS rows
FROM runs AS r
WHERE r.run_date >= %(since)s AND r.run_date < %(until)s
  AND (%(projects)s::text[] IS NULL OR r.project = ANY(%(projects)s::text[]))
GROUP BY r.project
ORDER BY r.project;

-- strategy_promising --
-- Rows of the window whose feedback_stats promise records, per project, and those of them
-- lacking records, without reading a document: runs_feedback_promised_idx's and
-- runs_feedback_missing_idx's rows (predicates word for word), each read for its project
-- only. Each promises at least one record: enough for auto to rule a listing out before
-- strategy_promised reads the documents (strategy.figures).
SELECT c.project, sum(c.promising)::bigint AS promising, sum(c.lacking)::bigint AS promising_lacking
FROM (
    SELECT r.project, 1 AS promising, 0 AS lacking
    FROM runs AS r
    WHERE r.data @? '$.feedback_stats.* ? (@.n > 0)'
      AND r.run_date >= %(since)s AND r.run_date < %(until)s
      AND (%(projects)s::text[] IS NULL OR r.project = ANY(%(projects)s::text[]))
    UNION ALL
    SELECT r.project, 0, 1
    FROM runs AS r
    WHERE COALESCE(jsonb_typeof(r.data -> 'feedback_records'), 'null') = 'null'
      AND r.data @? '$.feedback_stats.* ? (@.n > 0)'
      AND r.run_date >= %(since)s AND r.run_date < %(until)s
      AND (%(projects)s::text[] IS NULL OR r.project = ANY(%(projects)s::text[]))
) AS c
GROUP BY c.project;

-- strategy_promised --
-- Records the window's feedback_stats promise, per project, and those of rows still lacking
-- records: runs_feedback_promised_idx's rows (predicate word for word), the only documents
-- read (about one row in twenty on a trace-shaped archive).
SELECT r.project, count(*)::bigint AS promising,
       COALESCE(sum(p.n), 0)::bigint AS promised,
       COALESCE(sum(p.n) FILTER (WHERE COALESCE(jsonb_typeof(r.data -> 'feedback_records'), 'null') = 'null'), 0)
           ::bigint AS promised_lacking
FROM runs AS r
CROSS JOIN LATERAL (
    SELECT sum(floor(v::text::numeric)) AS n FROM jsonb_path_query(r.data, '$.feedback_stats.*.n ? (@ > 0)') AS v
) AS p
WHERE r.data @? '$.feedback_stats.* ? (@.n > 0)'
  AND r.run_date >= %(since)s AND r.run_date < %(until)s
  AND (%(projects)s::text[] IS NULL OR r.project = ANY(%(projects)s::text[]))
GROUP BY r.project;

-- project_session_ids --
-- The project's id in LangSmith (its tracer session) as the extractor archived it: the
-- session_id of a few of the window's rows (idx_runs_project_date; 50 documents at most).
SELECT DISTINCT f.session_id
FROM (
    SELECT r.data ->> 'session_id' AS session_id
    FROM runs AS r
    WHERE r.project = %(project)s AND r.run_date >= %(since)s AND r.run_date < %(until)s
    LIMIT 50
) AS f
WHERE f.session_id IS NOT NULL;

-- listing_latest --
-- The project's latest listing: resumed when unfinished, extended by the next pass when done.
SELECT l.id, l.project, l.session_id, l.listed_from, l.listed_to, l.listed_until, l.records, l.requests,
       l.completed_at, l.applied_at, l.fallback, l.invocation_id
FROM feedback_backfill_listing AS l
WHERE l.project = %(project)s
ORDER BY l.id DESC
LIMIT 1;

-- listing_start --
-- A new listing of a project: records created from %(listed_from)s up to %(listed_to)s (the
-- moment the pass began), listed from %(listed_until)s on (earlier ones are staged already).
INSERT INTO feedback_backfill_listing (invocation_id, project, session_id, listed_from, listed_to, listed_until)
VALUES (%(invocation_id)s, %(project)s, %(session_id)s, %(listed_from)s, %(listed_to)s, %(listed_until)s)
RETURNING id, project, session_id, listed_from, listed_to, listed_until, records, requests,
          completed_at, applied_at, fallback, invocation_id;

-- staged_clear --
-- A listing that starts afresh drops what earlier listings of the project staged.
DELETE FROM feedback_backfill_staged AS s WHERE s.session_id = %(session_id)s;

-- staged_prune --
-- A listing that extends the previous one drops staged records created before the window began.
DELETE FROM feedback_backfill_staged AS s WHERE s.session_id = %(session_id)s AND s.created_at < %(before)s;

-- stage_records --
-- Stage one slice's records (deduplicated by record id; a record listed again replaces its copy).
INSERT INTO feedback_backfill_staged AS s (record_id, run_id, session_id, created_at, listing_id, record)
SELECT c.record_id, c.run_id, c.session_id, c.created_at, %(listing_id)s, c.record
FROM jsonb_to_recordset(%(records)s::jsonb)
     AS c(record_id text, run_id text, session_id text, created_at timestamptz, record text)
ON CONFLICT (record_id) DO UPDATE
SET run_id = EXCLUDED.run_id, session_id = EXCLUDED.session_id, created_at = EXCLUDED.created_at,
    listing_id = EXCLUDED.listing_id, record = EXCLUDED.record;

-- listing_progress --
-- A slice is staged: the listing resumes after it (in the slice's own transaction).
UPDATE feedback_backfill_listing
SET listed_until = %(listed_until)s, records = records + %(records)s, requests = requests + %(requests)s
WHERE id = %(listing_id)s;

-- listing_done --
-- The listing reached its end (the apply phase comes next), or fell back to the runs strategy.
UPDATE feedback_backfill_listing
SET completed_at = COALESCE(completed_at, now()), fallback = COALESCE(%(fallback)s, fallback),
    requests = requests + %(requests)s
WHERE id = %(listing_id)s;

-- listing_applied --
-- Every row of the window has been through the apply phase (or the fallback's walk).
UPDATE feedback_backfill_listing SET applied_at = now() WHERE id = %(listing_id)s;

-- staged_outside --
-- Staged records of the project whose runs are not rows of the window: counted, never written.
SELECT count(*)::bigint AS outside
FROM feedback_backfill_staged AS s
WHERE s.session_id = %(session_id)s
  AND NOT EXISTS (
      SELECT 1 FROM runs AS r
      WHERE r.run_id = s.run_id AND r.run_date >= %(since)s AND r.run_date < %(until)s);

-- staged_for_runs --
-- The staged records of a batch's runs (canonical run ids), for the apply phase, with the
-- listing that staged each (a copy from an earlier listing may be stale).
SELECT s.run_id, s.record, s.listing_id FROM feedback_backfill_staged AS s
WHERE s.run_id = ANY(%(run_ids)s::text[]) AND s.session_id = %(session_id)s
ORDER BY s.run_id, s.record_id;

-- examined_before --
-- The batch's runs that hold a status entry (examined before: re-archived since, or walked
-- again): their staged copies may predate a reviewer's edit, so they are fetched run by run.
SELECT s.run_id FROM feedback_backfill_status AS s WHERE s.run_id = ANY(%(run_ids)s::text[]);

-- sample_runs --
-- The sampled check: up to %(n)s of the window's runs of the project whose feedback_stats
-- promise records, and up to %(n)s with staged records, in an order fixed by %(salt)s.
(SELECT r.run_id FROM runs AS r
 WHERE r.project = %(project)s AND r.run_date >= %(since)s AND r.run_date < %(until)s
   AND r.data @? '$.feedback_stats.* ? (@.n > 0)'
 ORDER BY md5(r.run_id || %(salt)s) LIMIT %(n)s)
UNION
(SELECT r.run_id FROM feedback_backfill_staged AS s JOIN runs AS r ON r.run_id = s.run_id
 WHERE s.session_id = %(session_id)s AND r.project = %(project)s
   AND r.run_date >= %(since)s AND r.run_date < %(until)s
 GROUP BY r.run_id ORDER BY md5(r.run_id || %(salt)s) LIMIT %(n)s);

-- invocation_strategy --
-- What the invocation chose (auto's per-project choice in params), and the requests it saved
-- against the runs strategy's estimate.
UPDATE feedback_backfill_invocations
SET strategy = %(strategy)s, requests_saved = %(requests_saved)s,
    params = params || jsonb_build_object('strategy_choice', %(choice)s::jsonb)
WHERE id = %(invocation_id)s;
