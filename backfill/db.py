"""The one gateway to PostgreSQL: connections, named queries, and psycopg errors made ours."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from .config import Database
from .errors import DatabaseError, NotMigrated, redact
from .sql import QUERIES

#: pg_advisory_lock key held by a running `backfill run` ("fbbackfl" in ASCII).
RUNNER_LOCK_KEY = 0x6662_6261_636B_666C

#: Errors after which a short write transaction is simply tried again.
RETRYABLE = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.LockNotAvailable,
    psycopg.errors.SerializationFailure,
)

__all__ = ["Gateway", "Jsonb", "connect", "RUNNER_LOCK_KEY", "RETRYABLE"]


@contextlib.contextmanager
def wrap_exceptions(database: Database) -> Iterator[None]:
    """Turn psycopg errors into DatabaseError with a one-line, password-free message."""
    try:
        yield
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseError(redact(f"database error: {first}", [database.password])) from None


class Gateway:
    """A psycopg connection plus the named queries of ``sql/queries.sql``."""

    def __init__(self, conn: psycopg.Connection[dict[str, Any]], database: Database) -> None:
        self.conn = conn
        self.database = database

    def execute(self, name: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a named query; return its rows (empty for statements without any)."""
        with wrap_exceptions(self.database):
            cur = self.conn.execute(QUERIES[name], params or {})
            return cur.fetchall() if cur.description else []

    def rowcount(self, name: str, params: dict[str, Any] | None = None) -> int:
        """Run a named statement; return how many rows it affected."""
        with wrap_exceptions(self.database):
            return self.conn.execute(QUERIES[name], params or {}).rowcount

    def one(self, name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        rows = self.execute(name, params)
        return rows[0]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with wrap_exceptions(self.database), self.conn.transaction():
            yield

    def require_schema(self) -> None:
        if not self.one("check_schema")["migrated"]:
            raise NotMigrated()
        self.commit()

    def commit(self) -> None:
        with wrap_exceptions(self.database):
            self.conn.commit()

    def rollback(self) -> None:
        with wrap_exceptions(self.database):
            self.conn.rollback()

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self.conn.close()


def connect(
    database: Database,
    *,
    lock_timeout: str = "5s",
    statement_timeout: str = "60s",
    connect_timeout: int = 10,
) -> Gateway:
    """Open a connection with this tool's session settings (autocommit off)."""
    try:
        conn = psycopg.connect(
            database.url,
            row_factory=dict_row,
            connect_timeout=connect_timeout,
            application_name="feedback-backfill",
        )
    except psycopg.Error as exc:
        text = " ".join(str(exc).split())
        raise DatabaseError(
            redact(f"cannot connect to the database (check DATABASE_URL): {text}", [database.password])
        ) from None
    gw = Gateway(conn, database)
    gw.execute(
        "session_settings",
        {"lock_timeout": lock_timeout, "statement_timeout": statement_timeout},
    )
    conn.commit()
    return gw
