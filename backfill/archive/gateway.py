"""The one gateway to PostgreSQL: connections, named queries, and psycopg errors made ours.

Built to work the same directly, behind PgBouncer in session pooling and in transaction
pooling, where consecutive transactions of one client may run on different server
connections and nothing of a session survives between them:
- no server-side prepared statements (``prepare_threshold=None``);
- settings are ``SET LOCAL`` at the start of each transaction, never left on a connection;
- the one-writer guarantee is a lease, a row of ``feedback_backfill_lease`` taken,
  renewed and released in short transactions (see ``Lease``), not a session advisory lock.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any, Protocol

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from backfill.config import Database
from backfill.errors import DatabaseError, Interrupted, NotMigrated, redact
from backfill.sql import QUERIES

#: Planner settings run before a named query, for the rest of its transaction (blocks of
#: queries.sql; the walk's reads are transactions of their own). walk_batch is a keyset read
#: whose only sound plan is an ordered index range scan that stops after the batch:
#: "keyset_plan" rules out the bitmap scan of the rest of the day plus a sort, per batch, that
#: the planner picks when it expects few rows to lack records (fb0005's statistics not yet
#: analyzed), which is quadratic in a day's rows (docs/benchmarks.md).
#: "filter_cost" makes count_pending's filters on documents look as costly as their detoast.
PLANNER: dict[str, tuple[str, ...]] = {"walk_batch": ("keyset_plan",), "count_pending": ("filter_cost",)}

#: Errors after which a short write transaction is simply tried again.
RETRYABLE = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.LockNotAvailable,
    psycopg.errors.SerializationFailure,
)

__all__ = ["Gateway", "Jsonb", "connect", "RETRYABLE"]


class WriteGuard(Protocol):
    """What a write transaction checks before it commits (the lease: ``archive.lease``)."""

    def check(self, gw: Gateway) -> None: ...


@contextlib.contextmanager
def wrap_exceptions(database: Database) -> Iterator[None]:
    """Turn psycopg errors into DatabaseError with a one-line, password-free message."""
    try:
        yield
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseError(redact(f"database error: {first}", database.secrets())) from None


class Gateway:
    """A psycopg connection plus the named queries of ``sql/queries.sql``."""

    def __init__(
        self, conn: psycopg.Connection[dict[str, Any]], database: Database, settings: dict[str, str] | None = None
    ) -> None:
        self.conn = conn
        self.database = database
        self.settings = settings or {"lock_timeout": "5s", "statement_timeout": "60s"}
        #: The first statements of each transaction: our settings, lz4 where ``toast_compression`` says so.
        self.settings_sql = QUERIES["transaction_settings"]
        #: When set, every ``transaction()`` first proves, inside itself, that it still holds it.
        self.lease: WriteGuard | None = None
        #: When set (a second signal), a ``transaction()`` rolls back instead of committing.
        self.abandon: threading.Event | None = None

    def _begin(self) -> None:
        """Scope our settings to the transaction about to start (SET LOCAL): behind a pool in
        transaction mode a session SET would stay on the server connection for its next client."""
        if self.conn.info.transaction_status == TransactionStatus.IDLE:
            # client-side binding: SET takes no server-side parameters; SET takes no snapshot, so
            # a SET TRANSACTION ISOLATION LEVEL may still follow (the status report's snapshot)
            psycopg.ClientCursor(self.conn).execute(self.settings_sql, self.settings)

    def execute(self, name: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a named query; return its rows (empty for statements without any)."""
        with wrap_exceptions(self.database):
            self._begin()
            for setting in PLANNER.get(name, ()):
                self.conn.execute(QUERIES[setting])
            cur = self.conn.execute(QUERIES[name], params or {})
            return cur.fetchall() if cur.description else []

    def rowcount(self, name: str, params: dict[str, Any] | None = None) -> int:
        """Run a named statement; return how many rows it affected."""
        with wrap_exceptions(self.database):
            self._begin()
            return self.conn.execute(QUERIES[name], params or {}).rowcount

    def one(self, name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        rows = self.execute(name, params)
        return rows[0]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction; under a lease, it writes only while the lease is still ours."""
        with wrap_exceptions(self.database):
            fresh = self.conn.info.transaction_status == TransactionStatus.IDLE
            with self.conn.transaction():
                if fresh:
                    psycopg.ClientCursor(self.conn).execute(self.settings_sql, self.settings)
                if self.lease is not None:
                    self.lease.check(self)
                yield
                if self.abandon is not None and self.abandon.is_set():
                    raise Interrupted("interrupted again: the batch in flight was abandoned")

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

    def cancel(self) -> None:
        """Cancel the statement on the wire, if any (libpq's PQcancel: safe in a signal handler)."""
        with contextlib.suppress(Exception):
            self.conn.cancel()


def connect(
    database: Database,
    *,
    lock_timeout: str = "5s",
    statement_timeout: str = "60s",
    connect_timeout: int = 10,
    prepare: bool = False,
    application_name: str = "feedback-backfill",
) -> Gateway:
    """Open a connection (autocommit off) whose transactions carry this tool's settings.

    ``prepare`` lets psycopg prepare frequent statements server-side (the benchmark's
    comparison only): behind PgBouncer in transaction mode a prepared statement lives on a
    server connection that the next transaction may not get ("_pg3_0" already exists / does
    not exist), so the tool never prepares.
    """
    try:
        conn = psycopg.connect(
            database.url,
            row_factory=dict_row,
            connect_timeout=connect_timeout,
            application_name=application_name,
            prepare_threshold=5 if prepare else None,
        )
    except psycopg.Error as exc:
        text = " ".join(str(exc).split())
        raise DatabaseError(
            redact(f"cannot connect to the database (check DATABASE_URL): {text}", database.secrets())
        ) from None
    gw = Gateway(conn, database, {"lock_timeout": lock_timeout, "statement_timeout": statement_timeout})
    try:
        with wrap_exceptions(database):
            if conn.execute(QUERIES["toast_compression"]).fetchone()["lz4"]:  # type: ignore[index]
                gw.settings_sql += "\n" + QUERIES["toast_lz4"]
            conn.commit()
    except BaseException:
        gw.close()
        raise
    return gw
