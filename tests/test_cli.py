"""`backfill` as a DBA meets it: exit codes and the lines printed."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from backfill.cli import app
from backfill.sandbox.fake_langsmith import FakeLangSmith

from .helpers import seed, status

KEY = "lsv2_cli_secret_key_42"


@pytest.fixture
def cli():
    return CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--since", "yesterday"],
            "--since must be a duration like 14d, 36h, 2w or a date like 2026-11-15, got 'yesterday'",
        ),
        (["--since", "0d"], "--since must be a positive duration like 14d, 36h or 2w, got '0d'"),
        (["--since", "-3d"], "--since must be a positive duration like 14d, 36h or 2w, got '-3d'"),
        (
            ["--since", "2026-11-10", "--until", "2026-11-01"],
            "empty window: --until 2026-11-01 is not after --since 2026-11-10",
        ),
        (["--batch-size", "0"], "--batch-size must be between 1 and 1000"),
        (["--delay-ms", "-1"], "--delay-ms must be 0 or more"),
        (["--max-attempts", "0"], "--max-attempts must be 1 or more"),
        (["--limit", "0"], "--limit must be 1 or more"),
        (["--strategy", "fastest"], "--strategy must be auto, runs or project"),
        (["--strategy", "project", "--limit", "10"], "--limit works with --strategy runs or auto (runs)"),
    ],
)
def test_bad_options_exit_2_with_one_line(cli, args, message):
    result = cli.invoke(app, ["run", *args], env={"DATABASE_URL": "postgresql://x@127.0.0.1:1/x"})
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"backfill: error: {message}"]


def test_non_integer_option_is_a_usage_error(cli):
    result = cli.invoke(app, ["run", "--batch-size", "many"])
    assert result.exit_code == 2
    assert "Invalid value for '--batch-size'" in result.stderr


def test_missing_database_url(cli):
    result = cli.invoke(app, ["run", "--dry-run"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "backfill: error: no database configured: set DATABASE_URL=postgresql://user@host:port/dbname, the"
        " password in ~/.pgpass or PGPASSWORD (or libpq's PGHOST/PGDATABASE/PGUSER variables)"
    ]


def test_unreachable_database_hides_the_password(cli):
    url = "postgresql://me:hunter2-secret@127.0.0.1:1/archive"
    result = cli.invoke(app, ["run", "--dry-run"], env={"DATABASE_URL": url})
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith(
        "backfill: error: cannot connect to the database (check DATABASE_URL): "
    )
    assert "hunter2-secret" not in result.output + result.stderr


def test_malformed_database_url(cli):
    result = cli.invoke(app, ["run", "--dry-run"], env={"DATABASE_URL": "mysql://a:b@c/d"})
    assert result.exit_code == 1
    assert result.stderr.strip() == "backfill: error: DATABASE_URL must look like postgresql://user@host:port/dbname"


def test_missing_api_key(cli, dsn):
    result = cli.invoke(app, ["run"], env={"DATABASE_URL": dsn})
    assert result.exit_code == 1
    assert result.stderr.strip() == "backfill: error: no LangSmith API key: set LANGSMITH_API_KEY (or pass --api-key)"


def test_run_prints_a_summary_and_never_the_key(cli, dsn):
    ids = seed(dsn, 12)
    with FakeLangSmith(api_key=KEY) as fake:
        result = cli.invoke(
            app,
            ["run", "--delay-ms", "0", "--no-progress"],
            env={"DATABASE_URL": dsn, "LANGSMITH_API_KEY": KEY, "LANGSMITH_ENDPOINT": fake.url},
        )
    assert result.exit_code == 0, result.stderr
    err = result.stderr
    assert "examined 12 row(s) of 12 pending" in err
    assert "  API requests 1 (0 failed)" in err
    assert KEY not in result.output + err
    assert len(status(dsn)) == len(ids)


def test_wrong_key_is_one_line_exit_1(cli, dsn):
    seed(dsn, 3)
    with FakeLangSmith(api_key=KEY) as fake:
        result = cli.invoke(
            app,
            ["run", "--delay-ms", "0"],
            env={"DATABASE_URL": dsn, "LANGSMITH_API_KEY": "lsv2_wrong_key_123", "LANGSMITH_ENDPOINT": fake.url},
        )
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "backfill: error: LangSmith refused the API key (HTTP 401): check LANGSMITH_API_KEY and"
        " LANGSMITH_WORKSPACE_ID; no row was marked"
    )
    assert "lsv2_wrong_key_123" not in result.stderr
    assert status(dsn) == {}


def test_unreachable_endpoint(cli, dsn):
    seed(dsn, 3)
    result = cli.invoke(
        app,
        ["run", "--delay-ms", "0"],
        env={"DATABASE_URL": dsn, "LANGSMITH_API_KEY": KEY, "LANGSMITH_ENDPOINT": "http://127.0.0.1:9"},
    )
    assert result.exit_code == 1
    assert "connection failed" in result.stderr and "nothing of the current batch was marked" in result.stderr
    assert status(dsn) == {}


def test_dry_run_lists_rows_on_stdout(cli, dsn):
    ids = seed(dsn, 4, days=1)
    result = cli.invoke(app, ["run", "--dry-run", "--list-runs"], env={"DATABASE_URL": dsn})
    assert result.exit_code == 0
    assert sorted(line.split("\t")[1] for line in result.stdout.splitlines()) == sorted(ids)
    assert all(line.endswith("\tfetch") for line in result.stdout.splitlines())
    assert "dry run: would examine 4 row(s) of 4 pending" in result.stderr


def test_version_and_help(cli):
    assert cli.invoke(app, ["--version"]).stdout.strip() == "feedback-backfill 0.1.0"
    assert "Example:" in cli.invoke(app, ["run", "--help"]).stdout


def test_dry_run_says_the_strategy_and_its_expected_requests(cli, dsn):
    seed(dsn, 4, days=1)
    result = cli.invoke(app, ["run", "--dry-run", "--strategy", "project"], env={"DATABASE_URL": dsn})
    assert result.exit_code == 0
    assert "strategy project: project listing for 1 of 1 project(s), ~" in result.stderr  # the first lines
    assert "  strategy     project listing for 1 of 1 project(s)" in result.stderr  # and the summary
    assert "    proj-a: project, ~" in result.stderr
