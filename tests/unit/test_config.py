"""Parsing the window and intervals: pure functions, no database, no API."""

from __future__ import annotations

import datetime as dt

import pytest

from backfill.config import Database, LangSmith, Window, parse_interval
from backfill.errors import ConfigError, UsageError

TODAY = dt.date(2026, 11, 29)


@pytest.mark.parametrize(
    ("since", "until", "first", "end"),
    [
        ("14d", None, dt.date(2026, 11, 16), dt.date(2026, 11, 30)),  # today and the 13 days before
        ("1d", None, TODAY, dt.date(2026, 11, 30)),
        ("2w", None, dt.date(2026, 11, 16), dt.date(2026, 11, 30)),
        ("2026-11-01", "2026-11-03", dt.date(2026, 11, 1), dt.date(2026, 11, 3)),  # --until exclusive
        (" 14D ", "2d", dt.date(2026, 11, 16), dt.date(2026, 11, 28)),  # 2d: two days ago, exclusive
    ],
)
def test_window_parse(since, until, first, end):
    window = Window.parse(since, until, today=TODAY)
    assert (window.since, window.until, window.projects) == (first, end, ())
    assert window.days == (end - first).days


def test_window_describe_names_the_last_day_and_projects():
    window = Window.parse("3d", projects=["a", "b"], today=TODAY)
    assert window.describe() == "run_date 2026-11-27 .. 2026-11-29 inclusive in a, b"


@pytest.mark.parametrize(
    ("since", "until", "message"),
    [
        ("0d", None, "--since must be a positive duration like 14d, 36h or 2w, got '0d'"),
        ("-3d", None, "--since must be a positive duration like 14d, 36h or 2w, got '-3d'"),
        ("yesterday", None, "--since must be a duration like 14d, 36h, 2w or a date like 2026-11-15, got 'yesterday'"),
        ("2026-11-10", "2026-11-10", "empty window: --until 2026-11-10 is not after --since 2026-11-10"),
        ("2026-11-10", "5x", "--until must be a duration like 14d, 36h, 2w or a date like 2026-11-15, got '5x'"),
    ],
)
def test_window_parse_refuses_bad_input_in_one_line(since, until, message):
    with pytest.raises(UsageError) as err:
        Window.parse(since, until, today=TODAY)
    assert str(err.value) == message


def test_window_refuses_an_empty_project():
    with pytest.raises(UsageError, match="--project must not be empty"):
        Window.parse("14d", projects=[" "], today=TODAY)


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600), ("2.5", 2.5), (" 10 S ", 10)])
def test_parse_interval(text, seconds):
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["0s", "", "5d", "-1m", "m"])
def test_parse_interval_refuses(text):
    with pytest.raises(UsageError, match="--interval must be a positive duration like 30s, 5m or 1h"):
        parse_interval(text)


def test_database_url_forms(monkeypatch):
    for name in ("DATABASE_URL", "PGHOST", "PGDATABASE", "PGSERVICE", "PGPORT", "PGUSER", "PGPASSWORD"):
        monkeypatch.delenv(name, raising=False)
    assert Database.from_env("postgresql+psycopg://u:p@h/db").url == "postgresql://u:p@h/db"
    assert Database.from_env("postgres://u:p%40ss@h/db").password == "p@ss"
    assert Database("postgresql://u:p@h/db").sqlalchemy_url == "postgresql+psycopg://u:p@h/db"
    with pytest.raises(ConfigError, match="^DATABASE_URL must look like postgresql://"):
        Database.from_env("mysql://u@h/db")
    with pytest.raises(ConfigError, match="^no database configured"):
        Database.from_env()
    monkeypatch.setenv("PGHOST", "/run/postgresql")
    assert Database.from_env().url == ""


def test_langsmith_settings(monkeypatch):
    for name in ("LANGSMITH_API_KEY", "LANGCHAIN_API_KEY", "LANGSMITH_ENDPOINT", "LANGCHAIN_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("LANGSMITH_WORKSPACE_ID", raising=False)
    monkeypatch.delenv("LANGCHAIN_WORKSPACE_ID", raising=False)
    with pytest.raises(ConfigError, match="^no LangSmith API key"):
        LangSmith.from_env()
    monkeypatch.setenv("LANGCHAIN_API_KEY", " k ")
    settings = LangSmith.from_env(endpoint="http://127.0.0.1:9/")
    assert (settings.api_key, settings.endpoint, settings.workspace_id) == ("k", "http://127.0.0.1:9", None)
    assert "k" not in repr(settings).replace("workspace_id", "").replace("endpoint", "")
    with pytest.raises(ConfigError, match="LANGSMITH_ENDPOINT must be an http"):
        LangSmith.from_env(endpoint="ftp://x")
