"""Alembic environment for feedback-backfill's own objects, beside the app's history.

- Our history is kept in ``feedback_backfill_alembic_version``: the app's ``alembic_version``
  (holding a revision we do not know) is never read nor touched.
- One transaction per migration: the index revision commits what precedes it and builds
  its indexes CONCURRENTLY outside any transaction (``autocommit_block``).
- Tests (and programs) pass a live connection in ``config.attributes["connection"]``.
- Alembic says what it does ("Running upgrade  -> fb0001, ..." on stderr): from alembic.ini's
  logging in a checkout, or, for `backfill db` (a Config built in code), when asked.
- Errors are one line, without the password, and exit 1 (no traceback).
"""

from __future__ import annotations

import sys
from logging.config import fileConfig
from typing import NoReturn

from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from alembic import context
from backfill.alembic import TABLES, VERSION_TABLE
from backfill.config import Database
from backfill.errors import BackfillError, redact
from backfill.operations.migrate import log_to_stderr


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Autogenerate sees only our objects, so it never proposes to drop the app's."""
    return type_ != "table" or name in TABLES


def _configure(**kwargs: object) -> None:
    context.configure(
        version_table=VERSION_TABLE,
        transaction_per_migration=True,
        include_name=include_name,
        **kwargs,  # type: ignore[arg-type]
    )


def _fail(message: str) -> NoReturn:
    """One line on stderr and exit 1, as the `backfill` command does (no traceback)."""
    print(f"FAILED: {message}", file=sys.stderr)
    raise SystemExit(1)


def _database() -> Database:
    try:
        return Database.from_env()
    except BackfillError as exc:
        _fail(str(exc))


def run_migrations_offline() -> None:
    """``alembic upgrade head --sql``: emit reviewable SQL instead of running it."""
    url = context.config.attributes.get("offline_url") or (
        Database.from_env().sqlalchemy_url if _has_db_env() else "postgresql+psycopg://"
    )
    _configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _has_db_env() -> bool:
    try:
        Database.from_env()
    except BackfillError:
        return False
    return True


def _run(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    database = _database()
    try:
        engine = create_engine(database.sqlalchemy_url, poolclass=pool.NullPool)
    except (SQLAlchemyError, ValueError) as exc:  # e.g. a port that is not a number
        _fail(redact(f"DATABASE_URL is not usable: {exc}", database.secrets()))
    try:
        with engine.connect() as conn:
            _run(conn)
    except SQLAlchemyError as exc:
        line = " ".join(str(getattr(exc, "orig", None) or exc).split())
        _fail(redact(line, database.secrets()))
    finally:
        engine.dispose()


if context.config.config_file_name is not None:
    # `alembic ...` in a checkout: alembic.ini's loggers (alembic at INFO, on stderr)
    fileConfig(context.config.config_file_name, disable_existing_loggers=False)
elif context.config.attributes.get("log"):
    log_to_stderr()

if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
