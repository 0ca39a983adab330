"""`backfill check`: the pre-flight, against the real PostgreSQL, the fake LangSmith and PgBouncer."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from typer.testing import CliRunner

from backfill.cli import app
from backfill.sandbox.fake_langsmith import FakeLangSmith

from ..helpers import apply_grants, invocations, raw_rows, seed, status
from ..system.test_pgbouncer import bouncer  # noqa: F401  (the module's PgBouncer fixture)

KEY = "lsv2_check_secret_key_7f3a"


@pytest.fixture
def fake() -> Iterator[FakeLangSmith]:
    with FakeLangSmith(api_key=KEY) as server:
        yield server


def check(url: str, fake: FakeLangSmith, *args: str, key: str = KEY) -> tuple[int, list[str]]:
    result = CliRunner().invoke(
        app,
        ["check", *args],
        env={"DATABASE_URL": url, "LANGSMITH_API_KEY": key, "LANGSMITH_ENDPOINT": fake.url},
    )
    assert "Traceback" not in result.output + result.stderr
    return result.exit_code, result.stdout.splitlines()


def item(lines: list[str], name: str) -> str:
    """The one line of check item ``name`` (level first)."""
    found = [line for line in lines if line[6:].startswith(name + " ")]
    assert len(found) == 1, lines
    return found[0]


def pending_in_db(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT count(*) FROM runs WHERE COALESCE(jsonb_typeof(data -> 'feedback_records'), 'null') = 'null'"
        ).fetchone()[0]


def test_healthy_setup_exit_0_with_pending_count_and_estimates(dsn, fake):
    seed(dsn, 250, days=5)
    before = raw_rows(dsn)
    code, lines = check(dsn, fake, "--since", "14d", "--delay-ms", "500")
    assert code == 0, lines
    assert lines[0].startswith("backfill check: run_date ")
    for name in ("database", "schema", "app schema", "can run", "can status", "can verify", "can revert"):
        assert item(lines, name).startswith("OK "), lines
    assert item(lines, "pooler").startswith("OK    pooler       none: connected straight to PostgreSQL")
    api = item(lines, "api")
    assert api.startswith("OK    api          LANGSMITH_API_KEY (...7f3a) accepted at " + fake.url)
    assert "workspace right: 5 of the window's 5 newest runs promising records" in api
    pending = pending_in_db(dsn)
    assert pending == 250
    assert item(lines, "pending") == (
        f"OK    pending      {pending} row(s) to examine: {math.ceil(pending / 100)} request(s) of at most 100 run ids,"
        " packed by the records their feedback_stats promise (a run with over 100 records needs more)"
    )
    # 3 requests x 500 ms
    assert item(lines, "duration").startswith("OK    duration     at least 2s at --delay-ms 500")
    growth = item(lines, "growth")
    with psycopg.connect(dsn) as conn:
        promised = conn.execute("SELECT count(*) FROM runs WHERE data @? '$.feedback_stats.* ? (@.n > 0)'").fetchone()[
            0
        ]
    assert f"for {promised} row(s) whose feedback_stats promise records" in growth
    assert "average API answer of 5 probed run(s) (JSON)" in growth  # nothing stored yet
    assert item(lines, "retention") == "OK    retention    no day 12+ days old with pending rows"
    assert lines[-1] == "check: OK (0 failed, 0 warning(s), 13 ok)"
    # it wrote nothing
    assert raw_rows(dsn) == before and status(dsn) == {} and invocations(dsn) == []
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM feedback_backfill_lease").fetchone()[0] == 0


def test_json_and_stored_sizes_after_a_run(dsn, fake):
    seed(dsn, 60, days=3)
    result = CliRunner().invoke(
        app,
        ["run", "--delay-ms", "0", "--limit", "30", "--no-progress"],
        env={"DATABASE_URL": dsn, "LANGSMITH_API_KEY": KEY, "LANGSMITH_ENDPOINT": fake.url},
    )
    assert result.exit_code == 0, result.stderr
    code, lines = check(dsn, fake, "--json", "--batch-size", "7")
    assert code == 0
    got = json.loads("\n".join(lines))
    examined = status(dsn)
    assert len(examined) == 30 and {s["state"] for s in examined.values()} <= {"done", "no_feedback"}
    assert got["estimates"]["pending"] == 60 - len(examined)  # rows never examined: the walk's rows
    assert got["estimates"]["requests"] == math.ceil(30 / 7)
    with psycopg.connect(dsn) as conn:
        avg = conn.execute(
            "SELECT avg(pg_column_size(r.data -> 'feedback_records'))::float8 FROM runs AS r"
            " JOIN feedback_backfill_status AS s USING (run_id) WHERE s.state = 'done'"
        ).fetchone()[0]
    assert got["estimates"]["records_bytes_per_row"] == round(avg)
    assert got["estimates"]["how"].startswith("average of ")
    assert got["status"] in ("OK", "WARN") and got["exit_code"] == 0


def test_wrong_key_fails_naming_the_key(dsn, fake):
    seed(dsn, 20)
    code, lines = check(dsn, fake, key="lsv2_somebody_elses_key_9q9q")
    assert code == 1
    fails = [line for line in lines if line.startswith("FAIL ")]
    assert fails == [
        f"FAIL  api          LangSmith at {fake.url} refused LANGSMITH_API_KEY (...9q9q) (401/403): check"
        " LANGSMITH_API_KEY and LANGSMITH_WORKSPACE_ID"
    ]
    assert "lsv2_somebody" not in "\n".join(lines)  # the key itself is never printed
    assert lines[-1] == "check: FAIL (1 failed, 0 warning(s), 12 ok)"


def test_key_of_another_workspace_fails(dsn, fake):
    seed(dsn, 30)
    fake.empty_all = True  # a key of another workspace: [] for every run
    code, lines = check(dsn, fake)
    assert code == 1
    api = item(lines, "api")
    assert api.startswith(
        "FAIL  api          LANGSMITH_API_KEY (...7f3a) gets no feedback for 5 of the window's 5 newest runs"
    )
    assert "LANGSMITH_WORKSPACE_ID" in api


def test_missing_schema_fails(app_dsn, fake):
    seed(app_dsn, 10)
    code, lines = check(app_dsn, fake)
    assert code == 1
    assert item(lines, "schema") == (
        "FAIL  schema       our tables are missing: run `backfill db upgrade` (straight to the server, not through"
        " a pooler)"
    )
    assert item(lines, "database").startswith("OK ")
    # without our tables, `run` lacks them all
    assert item(lines, "can run").startswith("FAIL  can run      role postgres lacks")
    assert item(lines, "api").endswith(
        "the workspace was not probed: our tables are missing, so no run of the window could be asked for"
    )


def test_our_revision_in_the_apps_alembic_version_fails(dsn, fake):
    seed(dsn, 10)
    with psycopg.connect(dsn) as conn:
        # as if someone had run our migrations with Alembic's default version table
        conn.execute("INSERT INTO alembic_version VALUES ('fb0003')")
    code, lines = check(dsn, fake)
    assert code == 1
    assert item(lines, "app schema").startswith(
        "FAIL  app schema   the app's alembic_version holds our revision fb0003: our migrations were run with the"
        " default version table"
    )


@pytest.fixture
def limited_role(dsn: str) -> Iterator[tuple[str, str]]:
    """A login role granted sql/grants.sql minus UPDATE on runs."""
    role = f"runner_{uuid.uuid4().hex[:8]}"
    dbname = dsn.rsplit("/", 1)[1]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT CONNECT ON DATABASE {dbname} TO {role}")
    apply_grants(dsn, role)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"REVOKE UPDATE ON runs FROM {role}")
    try:
        yield role, dsn.replace("postgresql://postgres@", f"postgresql://{role}@")
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_role_without_update_on_runs_fails(dsn, fake, limited_role):
    role, url = limited_role
    seed(dsn, 20)
    code, lines = check(url, fake)
    assert code == 1
    assert item(lines, "can run") == f"FAIL  can run      role {role} lacks UPDATE (data) on runs for `backfill run`"
    assert item(lines, "can status").startswith("OK ")
    assert item(lines, "can revert").startswith(
        f"WARN  can revert   role {role} lacks UPDATE (data) on runs, DELETE on feedback_backfill_status"
    )
    assert [line[6:].split("  ")[0] for line in lines if line.startswith("FAIL ")] == ["can run"]


def test_runner_role_of_grants_sql_passes_run_and_warns_for_revert(dsn, fake, limited_role):
    role, url = limited_role
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"GRANT UPDATE (data) ON runs TO {role}")
    seed(dsn, 20)
    code, lines = check(url, fake)
    assert code == 0, lines
    assert item(lines, "can run").startswith("OK ")
    revert = item(lines, "can revert")
    assert revert.startswith(f"WARN  can revert   role {role} lacks DELETE on feedback_backfill_status")
    assert item(lines, "schema").startswith("OK    schema       ours at fb0009 (head)")
    assert item(lines, "api").startswith("OK ") and item(lines, "pending").startswith("OK    pending      20 row(s)")
    # a role that may not read our version table: the schema cannot be confirmed
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"REVOKE SELECT ON feedback_backfill_alembic_version FROM {role}")
    code, lines = check(url, fake)
    assert code == 0, lines
    assert item(lines, "schema").startswith(
        f"WARN  schema       our tables exist; role {role} may not read feedback_backfill_alembic_version"
    )


def test_pgbouncer_is_detected_in_transaction_pooling(dsn, fake, bouncer):  # noqa: F811
    seed(dsn, 20)
    code, lines = check(bouncer.url(dsn), fake)
    assert code == 0, lines
    pooler = item(lines, "pooler")
    assert pooler.startswith(f"OK    pooler       PgBouncer in front (port {bouncer.port} -> server port ")
    assert "transaction pooling: safe for run/status/verify/revert" in pooler
    assert "run `backfill db upgrade` straight to the server" in pooler


def test_unreachable_database_fails_in_one_line(fake):
    code, lines = check("postgresql://nobody@127.0.0.1:1/nothing", fake)
    assert code == 1
    assert item(lines, "database").startswith("FAIL  database     cannot connect to the database")
    # the key is still tried; the workspace is not, and the line says why (not "no run promises records")
    assert item(lines, "api") == (
        f"WARN  api          LANGSMITH_API_KEY (...7f3a) accepted at {fake.url}; the workspace was not probed: the"
        " database could not be read, so no run of the window could be asked for"
    )


def test_an_endpoint_that_never_answers_failed_one_time():
    """check asks once (no retries): the count is in the singular."""
    result = CliRunner().invoke(
        app,
        ["check"],
        env={
            "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/nothing",
            "LANGSMITH_API_KEY": KEY,
            "LANGSMITH_ENDPOINT": "http://127.0.0.1:9",
        },
    )
    api = item(result.stdout.splitlines(), "api")
    assert api.startswith("FAIL  api          LangSmith at http://127.0.0.1:9 does not answer: ")
    assert "failed 1 time in a row (connection failed);" in api and "1 times" not in api


def test_bad_options_are_usage_errors():
    result = CliRunner().invoke(app, ["check", "--delay-ms", "-5"], env={"DATABASE_URL": "postgresql://x@h/db"})
    assert result.exit_code == 2
    assert result.stderr.strip() == "backfill: error: --delay-ms must be 0 or more"


def test_role_without_select_or_update_on_the_staged_records_cannot_run(dsn, fake, limited_role):
    """The project strategy reads its staged records and replaces a copy listed again (ON CONFLICT DO UPDATE)."""
    role, url = limited_role
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"GRANT UPDATE (data) ON runs TO {role}")
        conn.execute(f"REVOKE SELECT, UPDATE ON feedback_backfill_staged FROM {role}")
    seed(dsn, 20)
    code, lines = check(url, fake)
    assert code == 1
    assert item(lines, "can run") == (
        f"FAIL  can run      role {role} lacks SELECT on feedback_backfill_staged, UPDATE on feedback_backfill_staged"
        " for `backfill run`"
    )
