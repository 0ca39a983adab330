-- The application's archive exactly as deployed: its `runs` table and indexes at the app's own
-- Alembic revision 9405a9ff216f, recorded in alembic_version below. Used by `backfill demo`, the
-- tests and the benchmarks to build the database the extractor left; `backfill` never runs it.
CREATE TABLE runs (
  id SERIAL PRIMARY KEY, run_id VARCHAR(255) NOT NULL UNIQUE, trace_id VARCHAR(255) NOT NULL,
  project VARCHAR(255) NOT NULL, run_date DATE NOT NULL, data JSONB NOT NULL,
  created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
  CONSTRAINT check_run_id_matches CHECK (data->>'run_id' = run_id),
  CONSTRAINT check_trace_id_matches CHECK (data->>'trace_id' = trace_id),
  CONSTRAINT check_project_matches CHECK (data->>'project' = project),
  CONSTRAINT check_run_date_matches CHECK ((data->>'run_date')::date = run_date));
CREATE INDEX idx_runs_run_id ON runs (run_id);
CREATE INDEX idx_runs_trace_id ON runs (trace_id);
CREATE INDEX idx_runs_project ON runs (project);
CREATE INDEX idx_runs_run_date ON runs (run_date);
CREATE INDEX idx_runs_project_date ON runs (project, run_date);
CREATE TABLE alembic_version (
  version_num VARCHAR(32) NOT NULL, CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num));
INSERT INTO alembic_version (version_num) VALUES ('9405a9ff216f');
