"""Output that fits a screen: `status` on a 14-day window, `status --check`'s one line, `run --dry-run`.

Each test counts the lines and reads the words a DBA (or a monitoring plugin) reads.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import psycopg
import pytest
from typer.testing import CliRunner

from backfill.cli import app
from backfill.domain.strategy import AUTO_RULE
from backfill.sandbox.fake_langsmith import FakeLangSmith

from ..helpers import TODAY, seed

KEY = "lsv2_output_key_31337"
UNKNOWN = re.compile(r"FEEDBACK-BACKFILL UNKNOWN - \S.*")


def closed_port_url() -> str:
    """A database URL on a port where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql://backfill@127.0.0.1:{port}/archive"


@pytest.fixture
def fake() -> Iterator[FakeLangSmith]:
    with FakeLangSmith(api_key=KEY) as server:
        yield server


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env=env)


@pytest.fixture
def busy_archive(dsn: str, fake: FakeLangSmith) -> str:
    """14 days of 20 rows, as a DBA meets them mid-backfill: the older days examined, a few runs the
    API keeps failing (in the oldest days: at risk, and alerts), the newest days still pending."""
    ids = seed(dsn, 280, days=14)
    with psycopg.connect(dsn) as conn:
        oldest = [r[0] for r in conn.execute("SELECT run_id FROM runs ORDER BY run_date, id LIMIT 40")]
    for run_id in oldest[::4]:  # 10 runs of the two oldest days
        fake.poison(run_id)
    env = {"DATABASE_URL": dsn, "LANGSMITH_API_KEY": KEY, "LANGSMITH_ENDPOINT": fake.url}
    for limit in ("120", "60"):  # two runs: the last one's throughput is compared with the first's
        result = invoke("run", "--delay-ms", "0", "--no-progress", "--max-attempts", "1", "--limit", limit, env=env)
        assert result.exit_code in (0, 3), result.stderr
    assert len(ids) == 280
    return dsn


def test_status_of_a_14_day_window_fits_a_screen(busy_archive):
    result = invoke("status", "--since", "14d", env={"DATABASE_URL": busy_archive})
    assert result.exit_code == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) <= 30, "\n".join(lines)
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    first = TODAY.toordinal() - 13
    assert lines[0] == (f"feedback-backfill: run_date {TODAY.fromordinal(first)} to {TODAY} inclusive, all projects")
    # one per-day table: a header, the 14 days, a total
    assert sum(line.startswith("run_date ") for line in lines) == 1
    days = [line for line in lines if re.match(r"\d{4}-\d\d-\d\d ", line)]
    assert len(days) == 14
    total = next(line for line in lines if line.startswith("total "))
    assert total.split()[1] == "280"
    # one coverage figure, with its definition; the checkpoint's share is called progress
    assert [line.split()[0] for line in lines if line.startswith(("coverage", "progress"))] == ["progress", "coverage"]
    assert re.search(r"^coverage +\d+\.\d% +\S+ of \S+ rows hold the records their feedback_stats count$",
                     result.stdout, re.M)  # fmt: skip
    assert "feedback coverage rate" not in result.stdout
    assert re.search(
        r"^progress +\d+\.\d% +170 of 280 rows done: enriched, no feedback or invalid$", result.stdout, re.M
    )
    assert re.search(r"^failures  api_error 10 \(10 at max attempts\)$", result.stdout, re.M)
    assert re.search(r"^last run  #2 completed \d{4}-\d\d-\d\d \d\d:\d\d UTC after \d+s$", result.stdout, re.M)
    assert re.search(r"^ETA       100 pending rows: ", result.stdout, re.M)
    assert re.search(r"^CRITICAL  failure rate 5\.6% > 5%$", result.stdout, re.M)
    # "1 rows" as a count, not the tail of a rate such as "1,994.81 rows/s"
    assert re.search(r"(?<![\d,.])1 rows", result.stdout) is None and "(s)" not in result.stdout


def test_status_verbose_and_days_show_more(busy_archive):
    env = {"DATABASE_URL": busy_archive}
    default = invoke("status", env=env).stdout.splitlines()
    verbose = invoke("status", "-v", env=env).stdout.splitlines()
    assert len(verbose) > len(default)
    assert sum(line.startswith("run_date ") for line in verbose) == 2  # the second table: what the rows hold
    assert "Failures by reason        rows  attempts    at max (1)" in verbose
    three = invoke("status", "--days", "3", env=env).stdout.splitlines()
    assert len([line for line in three if re.match(r"\d{4}-\d\d-\d\d ", line)]) == 3
    assert "11 older days with 220 rows, 40 pending: --days 14 or -v shows them" in three
    assert invoke("status", "--days", "0", env=env).exit_code == 2


def test_check_prints_one_line(busy_archive):
    result = invoke("status", "--check", env={"DATABASE_URL": busy_archive})
    assert result.exit_code == 2, result.stdout
    assert result.stderr == ""
    (line,) = result.stdout.splitlines()
    assert line.startswith("FEEDBACK-BACKFILL CRITICAL - failure rate 5.6% > 5%; ")
    assert " | coverage=" in line and " rows=280;;;0 " in line


def test_check_is_unknown_when_the_database_is_down():
    result = invoke("status", "--check", "--database-url", closed_port_url())
    assert result.exit_code == 3
    assert result.stderr == ""
    (line,) = result.stdout.splitlines()
    assert UNKNOWN.fullmatch(line) and line.startswith("FEEDBACK-BACKFILL UNKNOWN - cannot connect to the database")


def test_check_is_unknown_when_not_migrated(app_dsn):
    result = invoke("status", "--check", env={"DATABASE_URL": app_dsn})
    assert (result.exit_code, result.stderr) == (3, "")
    assert result.stdout.splitlines() == [
        "FEEDBACK-BACKFILL UNKNOWN - The backfill tables do not exist: run `backfill db upgrade`"
        " (or `alembic upgrade head` in a checkout) first."
    ]


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ((), "no database configured"),  # no DATABASE_URL: bad configuration
        (("--since", "yesterday"), "--since must be a duration"),
        (("--days", "x"), "Invalid value for '--days'"),  # refused by the parser, before the command
        (("--format", "openmetrics"), "--format openmetrics cannot be combined with --json or --check"),
    ],
)
def test_check_is_unknown_on_bad_configuration(args, why):
    result = invoke("status", "--check", *args)
    assert (result.exit_code, result.stderr) == (3, "")
    (line,) = result.stdout.splitlines()
    assert UNKNOWN.fullmatch(line) and line.startswith(f"FEEDBACK-BACKFILL UNKNOWN - {why}"), line


def test_check_with_json_keeps_stdout_a_json_document():
    result = invoke("status", "--check", "--json", "--database-url", closed_port_url())
    assert result.exit_code == 3 and result.stdout == ""
    assert UNKNOWN.fullmatch(result.stderr.strip())


def test_dry_run_prints_counts_plan_and_estimate_not_run_ids(dsn):
    ids = seed(dsn, 30, days=3)
    result = invoke("run", "--dry-run", "--delay-ms", "500", env={"DATABASE_URL": dsn})
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert not any(run_id in result.stderr for run_id in ids)
    summary = result.stderr[result.stderr.index("dry run: ") :].splitlines()
    assert summary[0].startswith("dry run: would examine 30 row(s) of 30 pending")
    assert summary[1] == "  invalid      0 row(s) would be recorded invalid, without an API call"
    assert summary[2].startswith("  strategy     project listing for 0 of 1 project(s), ~1 request(s) expected")
    assert summary[2].endswith(f"; {AUTO_RULE}")
    assert summary[3].startswith("    proj-a: runs, ~1 request (")
    assert summary[4] == "  estimate     ~1 API request, at least 0s at --delay-ms 500 (the pacing alone)"
    assert len(summary) == 5


def test_dry_run_lists_the_runs_when_asked(dsn):
    ids = seed(dsn, 4, days=1)
    result = invoke("run", "--dry-run", "--list-runs", env={"DATABASE_URL": dsn})
    assert result.exit_code == 0
    assert sorted(line.split("\t")[1] for line in result.stdout.splitlines()) == sorted(ids)
    refused = invoke("run", "--list-runs", env={"DATABASE_URL": dsn})
    assert refused.exit_code == 2 and refused.stderr.strip() == "backfill: error: --list-runs works with --dry-run"


def test_debug_after_the_subcommand_shows_the_traceback():
    url = closed_port_url()
    quiet = invoke("status", "--database-url", url)
    assert quiet.exit_code == 1 and quiet.stderr.startswith("backfill: error: cannot connect to the database")
    for args in (("--debug", "status"), ("status", "--debug"), ("status", "--since", "3d", "--debug")):
        loud = invoke(*args, "--database-url", url)
        assert type(loud.exception).__name__ == "DatabaseError", args  # raised, not turned into one line


def test_a_backfill_variable_sets_an_option_and_the_command_line_wins(dsn):
    seed(dsn, 10, days=1)
    env = {"BACKFILL_DATABASE_URL": dsn, "BACKFILL_DELAY_MS": "250", "BACKFILL_SINCE": "3d"}
    result = invoke("run", "--dry-run", env=env)
    assert result.exit_code == 0, result.stderr
    assert "  estimate     ~1 API request, at least 0s at --delay-ms 250 (the pacing alone)" in result.stderr
    assert f"run_date {TODAY.fromordinal(TODAY.toordinal() - 2)} .. {TODAY}" in result.stderr
    result = invoke("run", "--dry-run", "--delay-ms", "750", env=env)
    assert "at --delay-ms 750 " in result.stderr


def test_no_variable_confirms_a_change(dsn):
    """--yes has no BACKFILL_YES: a variable left in a shell never answers for the DBA."""
    result = invoke("revert", "--since", "3d", env={"DATABASE_URL": dsn, "BACKFILL_YES": "1"})
    assert result.exit_code == 2
    assert "refusing to change the database without confirmation: add --yes" in result.stderr
