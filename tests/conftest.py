"""A real, throwaway PostgreSQL (pytest-postgresql) and per-test databases from templates.

The suite is in layers, one directory each:

* ``unit``: pure logic, in-process, no server and no socket (the whole layer in seconds);
* ``component``: the LangSmith side (``backfill.langsmith``) and its fake over real HTTP;
* ``integration``: the library and the CLI on a real PostgreSQL and the fake;
* ``system``: the tool as processes (signals, kill -9, PgBouncer, the demo, the bench
  commands), marked ``slow``;

and at the top, checks of the repository itself (lint, docs). ``scripts/test --fast`` runs
unit and component: those two never start PostgreSQL (``pytest_collection_modifyitems``).

As root (CI), the server runs as the unprivileged user ``postgres`` through
tests/pg_ctl_as_postgres, because initdb and pg_ctl refuse to run as root.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pytest_postgresql import factories
from pytest_postgresql.executors import PostgreSQLExecutor

from backfill.config import Database
from backfill.errors import ConfigError
from backfill.operations import migrate
from backfill.sandbox import app_schema
from backfill.sandbox.embedded import find_bindir

HERE = Path(__file__).resolve().parent
APP_SCHEMA = app_schema()

#: Everything the toolkit (or the langsmith SDK) reads from the environment.
OUR_ENV = ("DATABASE_URL", "LANGSMITH_", "LANGCHAIN_", "PG", "BACKFILL_")


#: Why PostgreSQL cannot be started, if it cannot (the unit and component layers need none).
NO_SERVER: list[str] = []
#: The layers that run without PostgreSQL (``scripts/test --fast``, on any machine).
SERVER_FREE = ("unit", "component")


def _pg_ctl() -> str:
    try:
        real = str(find_bindir() / "pg_ctl")  # the demo's lookup: $PG_CTL, PATH, newest Debian
    except ConfigError as exc:
        NO_SERVER.append(str(exc))
        return "pg_ctl"
    if os.geteuid() != 0:
        return real
    os.environ["REAL_PG_CTL"] = real
    return str(HERE / "pg_ctl_as_postgres")


postgresql_proc = factories.postgresql_proc(executable=_pg_ctl(), host="127.0.0.1", port=None)


def pytest_configure(config: pytest.Config) -> None:
    """A base temporary directory of this session's own (unless --basetemp is given).

    pytest numbers sessions' directories under one root and removes all but the newest three
    when a session starts: a second test session on the machine (another checkout, a bench)
    would delete the data directory of our running PostgreSQL from under it.
    """
    if config.option.basetemp is None:
        base = Path(tempfile.mkdtemp(prefix="feedback-backfill-tests-"))
        base.chmod(0o711)  # the server runs as `postgres` (as root) and must reach its datadir
        config.option.basetemp = str(base)
        config.stash[_OWN_BASETEMP] = base


def pytest_unconfigure(config: pytest.Config) -> None:
    base = config.stash.get(_OWN_BASETEMP, None)
    if base is not None:
        shutil.rmtree(base, ignore_errors=True)


_OWN_BASETEMP = pytest.StashKey[Path]()


def _needs_server(item: pytest.Item) -> bool:
    return "postgresql_proc" in getattr(item, "fixturenames", ())


def _layer(item: pytest.Item) -> str | None:
    path = Path(item.path)
    return path.relative_to(HERE).parts[0] if path.is_relative_to(HERE) else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A server-free layer's test that asks for PostgreSQL is refused (it belongs in
    integration); without server binaries, stop at once with the reason, unless no test
    needs a server."""
    misplaced = [item.nodeid for item in items if _layer(item) in SERVER_FREE and _needs_server(item)]
    if misplaced:
        raise pytest.UsageError(
            f"tests in {' and '.join(SERVER_FREE)} run without PostgreSQL, but these ask for it"
            f" (move them to tests/integration): {', '.join(misplaced)}"
        )
    if NO_SERVER and any(_needs_server(item) for item in items):
        pytest.exit(NO_SERVER[0], returncode=4)


def _dsn(proc: PostgreSQLExecutor, dbname: str) -> str:
    return f"postgresql://{proc.user}@{proc.host}:{proc.port}/{dbname}"


def _admin(proc: PostgreSQLExecutor) -> psycopg.Connection:
    return psycopg.connect(_dsn(proc, "postgres"), autocommit=True)


@pytest.fixture(scope="session")
def pg_templates(postgresql_proc: PostgreSQLExecutor) -> dict[str, str]:
    """Two template databases: the app's archive as deployed, and the same after our upgrade."""
    with _admin(postgresql_proc) as admin:
        for name in ("tmpl_app", "tmpl_migrated"):
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {name}")
            with psycopg.connect(_dsn(postgresql_proc, name), autocommit=True) as conn:
                conn.execute(APP_SCHEMA)
    migrate.upgrade(Database(_dsn(postgresql_proc, "tmpl_migrated")))
    return {"app": "tmpl_app", "migrated": "tmpl_migrated"}


def _fresh_db(proc: PostgreSQLExecutor, template: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with _admin(proc) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    try:
        yield _dsn(proc, name)
    finally:
        with _admin(proc) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def app_dsn(postgresql_proc: PostgreSQLExecutor, pg_templates: dict[str, str]) -> Iterator[str]:
    """A fresh database holding the app's schema only (before `alembic upgrade head`)."""
    yield from _fresh_db(postgresql_proc, pg_templates["app"])


@pytest.fixture
def dsn(postgresql_proc: PostgreSQLExecutor, pg_templates: dict[str, str]) -> Iterator[str]:
    """A fresh database with the app's schema and our migrations applied."""
    yield from _fresh_db(postgresql_proc, pg_templates["migrated"])


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's shell must not leak into the tests."""
    for name in list(os.environ):
        if name.startswith(OUR_ENV) and name not in ("PG_CTL",):
            monkeypatch.delenv(name)
    # The SDK must not find a CLI profile either.
    monkeypatch.setenv("LANGSMITH_CONFIG_FILE", os.devnull)
