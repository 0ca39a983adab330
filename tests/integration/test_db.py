"""`backfill db` as a DBA who installed the tool meets it, secrets in every URL shape, and
least privilege said in words."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from backfill.sandbox.fake_langsmith import FakeLangSmith

from ..helpers import psql, raw_rows, seed, status

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def backfill(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed `backfill` command, from ``cwd`` (not the checkout)."""
    return subprocess.run(
        [str(BIN / "backfill"), *args],
        env={**os.environ, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def alembic(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("alembic", path=str(BIN)) or "alembic"
    return subprocess.run(
        [exe, *args], cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120
    )


def tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'feedback_backfill%'").fetchall()
    return {r[0] for r in rows} - {"feedback_backfill_alembic_version"}


OURS = {
    "feedback_backfill_status",
    "feedback_backfill_invocations",
    "feedback_backfill_lease",
    "feedback_backfill_settled",
    "feedback_backfill_listing",
    "feedback_backfill_staged",
}


def test_db_upgrade_current_downgrade_from_any_directory(app_dsn, tmp_path):
    env = {"DATABASE_URL": app_dsn}
    up = backfill("db", "upgrade", env=env, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert up.stdout == ""
    # Alembic's own INFO lines, on stderr: the DBA sees what it did
    assert "INFO  [alembic.runtime.migration] Running upgrade  -> fb0001, " in up.stderr
    assert "INFO  [alembic.runtime.migration] Running upgrade fb0003 -> fb0004, " in up.stderr
    assert up.stderr.splitlines()[-1] == "database at fb0009 (head)"
    assert tables(app_dsn) == OURS
    assert backfill("db", "current", env=env, cwd=tmp_path).stdout.strip() == "fb0009 (head)"
    down = backfill("db", "downgrade", "base", env=env, cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert "Running downgrade fb0001 -> , " in down.stderr
    assert down.stderr.splitlines()[-1] == "database at base: none of our revisions applied"
    assert tables(app_dsn) == set()
    assert backfill("db", "current", env=env, cwd=tmp_path).stdout.strip() == ""
    again = backfill("db", "upgrade", "fb0002", env=env, cwd=tmp_path)
    assert again.returncode == 0 and "fb0002 -> fb0003" not in again.stderr
    assert again.stderr.splitlines()[-1] == "database at fb0002 (head is fb0009)"
    assert backfill("db", "current", env=env, cwd=tmp_path).stdout.strip() == "fb0002"


def test_the_checkout_alembic_says_what_it_does(app_dsn):
    done = alembic("upgrade", "head", env={"DATABASE_URL": app_dsn})
    assert done.returncode == 0, done.stderr
    assert "INFO  [alembic.runtime.migration] Running upgrade  -> fb0001, " in done.stderr


def test_sql_output_is_the_checkouts_and_the_shipped_schema(tmp_path):
    up = backfill("db", "upgrade", "--sql", cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert up.stdout == alembic("upgrade", "head", "--sql").stdout
    assert up.stdout == backfill("db", "schema", cwd=tmp_path).stdout == (ROOT / "sql" / "schema.sql").read_text()
    down = backfill("db", "downgrade", "base", "--sql", cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert down.stdout == alembic("downgrade", "fb0009:base", "--sql").stdout
    assert "DROP TABLE feedback_backfill_lease" in down.stdout


def test_history_lists_the_revisions(tmp_path):
    out = backfill("db", "history", cwd=tmp_path)
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert lines[0].startswith("fb0008 -> fb0009 (feedback_backfill) (head), ")
    assert lines[-1].startswith("<base> -> fb0001 ")


def test_db_commands_fail_in_one_line(tmp_path):
    missing = backfill("db", "upgrade", cwd=tmp_path, env={"DATABASE_URL": ""})
    assert missing.returncode == 1
    assert missing.stderr == (
        "backfill: error: no database configured: set DATABASE_URL=postgresql://user@host:port/dbname, the password"
        " in ~/.pgpass or PGPASSWORD (or libpq's PGHOST/PGDATABASE/PGUSER variables)\n"
    )
    refused = backfill("db", "upgrade", env={"DATABASE_URL": "postgresql://me:pw-Zq81x@127.0.0.1:1/db"})
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert refused.stderr.startswith("backfill: error: database error: ") and "pw-Zq81x" not in refused.stderr
    no_role = backfill("db", "grants", "")
    assert no_role.returncode == 2
    assert no_role.stderr == "backfill: error: ROLE must be a role name (at most 63 bytes, no control characters)\n"


# least privilege


@pytest.fixture
def runner_role(dsn: str):
    """A login role created and granted by `backfill db grants ROLE --create-role | psql`, and
    nothing else, in a database whose public schema is closed to PUBLIC."""
    grants = backfill("db", "grants", "backfill_runner", "--create-role")
    assert grants.returncode == 0 and 'TO "backfill_runner";' in grants.stdout
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS backfill_runner")
        conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
    applied = psql(dsn, grants.stdout)
    assert applied.returncode == 0 and applied.stderr == "", applied.stderr
    try:
        yield dsn.replace("postgresql://postgres@", "postgresql://backfill_runner@")
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP OWNED BY backfill_runner")
            conn.execute("DROP ROLE backfill_runner")


def test_grants_is_a_psql_script_that_stops_at_the_first_error(dsn):
    script = backfill("db", "grants", "backfill_ghost")
    assert script.returncode == 0
    assert script.stdout.splitlines()[0] == "\\set ON_ERROR_STOP on"
    applied = psql(dsn, script.stdout)
    assert applied.returncode == 3  # psql: a script stopped by ON_ERROR_STOP
    assert applied.stderr == 'ERROR:  role "backfill_ghost" does not exist\n'  # the first GRANT's, then nothing


def test_grants_create_role_sets_no_password_and_is_safe_to_apply_twice(dsn, runner_role):
    script = backfill("db", "grants", "backfill_runner", "--create-role").stdout
    assert script.splitlines()[:8] == [
        "\\set ON_ERROR_STOP on",
        "SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'backfill_runner') AS backfill_create_role \\gset",
        "\\if :backfill_create_role",
        'CREATE ROLE "backfill_runner" LOGIN;',
        "\\else",
        "\\echo 'the role exists: not created, granted all the same'",
        "\\endif",
        '-- then: \\password "backfill_runner"   (in psql, as a role with CREATEROLE; or peer/certificate auth)',
    ]
    assert "PASSWORD" not in script.upper().replace("\\PASSWORD", "")
    with psycopg.connect(dsn) as conn:
        role = conn.execute("SELECT rolcanlogin, rolpassword FROM pg_authid WHERE rolname = 'backfill_runner'")
        assert role.fetchone() == (True, None)
    again = psql(dsn, script)  # the role exists: granted again, not created
    assert (again.returncode, again.stderr) == (0, "")
    assert again.stdout == "the role exists: not created, granted all the same\n"


def test_the_role_of_grants_create_role_runs_check_run_status_verify_and_db_current(dsn, runner_role):
    seed(dsn, 20, days=1)
    with FakeLangSmith(api_key="k") as fake:
        env = {"DATABASE_URL": runner_role, "LANGSMITH_API_KEY": "k", "LANGSMITH_ENDPOINT": fake.url}
        check = backfill("check", "--since", "14d", "--delay-ms", "0", env=env)
        assert check.returncode == 0, check.stdout + check.stderr
        levels = {line[6:18].strip(): line[:5].strip() for line in check.stdout.splitlines()[1:-1]}
        assert levels == {
            "database": "OK",
            "schema": "OK",
            "app schema": "OK",
            "can run": "OK",
            "can status": "OK",
            "can verify": "OK",
            "can revert": "WARN",  # the owner's command by design: no DELETE for the runner
            "pooler": "OK",
            "api": "OK",
            "pending": "OK",
            "duration": "OK",
            "growth": "OK",
            "retention": "OK",
        }, check.stdout
        ran = backfill("run", "--since", "14d", "--delay-ms", "0", "--no-progress", env=env)
        assert ran.returncode == 0, ran.stderr
        verified = backfill("verify", "--since", "14d", "--delay-ms", "0", env=env)
        assert verified.returncode == 0, verified.stdout + verified.stderr
    assert {s["state"] for s in status(dsn).values()} <= {"done", "no_feedback"} and len(status(dsn)) == 20
    shown = backfill("status", "--since", "14d", env={"DATABASE_URL": runner_role})
    assert shown.returncode == 0, shown.stderr
    current = backfill("db", "current", env={"DATABASE_URL": runner_role})
    assert (current.returncode, current.stdout, current.stderr) == (0, "fb0009 (head)\n", "")


OWNER_DELETES = "DELETE on feedback_backfill_status and DELETE on feedback_backfill_settled"


@pytest.mark.parametrize(
    ("command", "needs"),
    [
        (["revert", "--all", "--yes"], OWNER_DELETES),
        (["reset", "--since", "14d", "--yes"], OWNER_DELETES),
    ],
)
def test_owner_commands_as_the_runner_role_say_so_and_change_nothing(dsn, runner_role, command, needs):
    seed(dsn, 20, days=1)
    with FakeLangSmith(api_key="k") as fake:
        env = {"DATABASE_URL": runner_role, "LANGSMITH_API_KEY": "k", "LANGSMITH_ENDPOINT": fake.url}
        ran = backfill("run", "--delay-ms", "0", "--no-progress", env=env)  # the runner role runs the backfill
        assert ran.returncode == 0, ran.stderr
    before, checkpoint = raw_rows(dsn), status(dsn)
    refused = backfill(*command, env={"DATABASE_URL": runner_role})
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"backfill: error: `backfill {command[0]}` needs {needs}, which role backfill_runner lacks: run it as the"
        " owner of the backfill tables (the role that ran `backfill db upgrade`); the runner role is deliberately"
        " not granted DELETE. Nothing was changed"
    ]
    assert raw_rows(dsn) == before and status(dsn) == checkpoint
    # as the owner it works, and status names who held the lease last
    done = backfill(*command, env={"DATABASE_URL": dsn})
    assert done.returncode == 0, done.stderr
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT command FROM feedback_backfill_lease").fetchone() == (command[0],)


# secrets: whatever the shape of the URL, no output holds the password or a piece of it


def pieces(secret: str, n: int = 4) -> set[str]:
    return {secret[i : i + n] for i in range(len(secret) - n + 1)}


def assert_hidden(secret: str, *outputs: str) -> None:
    text = "\n".join(outputs)
    leaked = sorted(p for p in pieces(secret) if p in text)
    assert not leaked, f"pieces of the password were printed: {leaked}\n{text}"


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("Se%40kr%zzet", "holds a % that starts no %XX escape"),  # an invalid %-escape
        ("Qdor&3@Wx9!", "holds an unencoded reserved character"),  # an unencoded @
        ("ab/cd3fgh&K", "holds an unencoded reserved character"),  # an unencoded /
        ("Hx#fr4g-mnt", "holds an unencoded reserved character"),  # an unencoded #
    ],
)
def test_malformed_urls_never_show_the_password(app_dsn, password, message):
    port = app_dsn.rsplit(":", 1)[1].split("/")[0]
    url = f"postgresql://someone:{password}@127.0.0.1:{port}/archive"
    outs = []
    for args in (["status"], ["run", "--dry-run"], ["db", "upgrade"], ["db", "current"]):
        done = backfill(*args, env={"DATABASE_URL": url})
        assert done.returncode == 1, done
        assert done.stderr.strip().splitlines()[-1].startswith("backfill: error: DATABASE_URL: ")
        assert message in done.stderr
        outs += [done.stdout, done.stderr]
    checkout = alembic("upgrade", "head", env={"DATABASE_URL": url})
    assert checkout.returncode == 1 and checkout.stderr.startswith("FAILED: DATABASE_URL: "), checkout.stderr
    assert_hidden(password, *outs, checkout.stdout, checkout.stderr)


def test_passwords_from_pgpassword_pgpass_and_service_files_are_never_shown(tmp_path):
    """libpq's own sources of a password, against a server that is not there (port 1)."""
    secret = "Pg-Env-S3cret-771"
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:1:*:someone:{secret}\n")
    passfile.chmod(0o600)
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[archive]\nhost=127.0.0.1\nport=1\ndbname=archive\nuser=someone\npassword={secret}\n")
    shapes = [
        {"DATABASE_URL": "postgresql://someone@127.0.0.1:1/archive", "PGPASSWORD": secret},
        {"DATABASE_URL": "postgresql://someone@127.0.0.1:1/archive", "PGPASSFILE": str(passfile)},
        {"DATABASE_URL": "", "PGSERVICEFILE": str(services), "PGSERVICE": "archive"},
    ]
    for env in shapes:
        for args in (["status"], ["db", "upgrade"]):
            done = backfill(*args, env=env)
            assert done.returncode == 1, (env, done)
            assert len(done.stderr.strip().splitlines()) == 1, done.stderr
            assert_hidden(secret, done.stdout, done.stderr)


def test_a_service_file_is_enough_to_reach_the_archive(dsn, tmp_path):
    parts = dsn.split("://", 1)[1]
    user, rest = parts.split("@", 1)
    hostport, dbname = rest.split("/", 1)
    host, port = hostport.split(":")
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[archive]\nhost={host}\nport={port}\ndbname={dbname}\nuser={user}\npassword=unused-Pw-9\n")
    done = backfill("status", env={"DATABASE_URL": "", "PGSERVICEFILE": str(services), "PGSERVICE": "archive"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("feedback-backfill: run_date ")


def test_a_released_lease_reads_released_every_time(dsn):
    """release() sets expiry and heartbeat from one clock reading: two readings of
    clock_timestamp() in one UPDATE differ by microseconds, and `backfill status` said "expired"."""
    from backfill.archive.lease import Lease
    from backfill.config import Database

    states = []
    for _ in range(30):
        Lease.take(Database(dsn), "run", seconds=30).release()
        with psycopg.connect(dsn) as conn:
            states.append(conn.execute("SELECT expires_at = heartbeat_at FROM feedback_backfill_lease").fetchone()[0])
    assert states == [True] * 30
