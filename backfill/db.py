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
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from .config import Database
from .errors import AlreadyRunning, ConfigError, DatabaseError, Interrupted, LeaseLost, NotMigrated, redact
from .sql import QUERIES

#: The one lease of a database: held by `backfill run`, `verify --fix`, `revert` and `reset`.
LEASE_NAME = "runner"
#: Seconds a lease lives without a heartbeat: a killed holder blocks the next command at
#: most this long. BACKFILL_LEASE_SECONDS overrides it (the PgBouncer tests use a few seconds).
LEASE_SECONDS = 60.0
LEASE_ENV = "BACKFILL_LEASE_SECONDS"
#: application_name of the lease's own connection (heartbeat), beside the work's "feedback-backfill".
LEASE_APP = "feedback-backfill-lease"

#: Planner settings run before a named query, for the rest of its transaction (blocks of
#: queries.sql; the walk's reads are transactions of their own). walk_batch is a keyset read
#: whose only sound plan is an ordered index range scan that stops after the batch:
#: "keyset_plan" rules out the bitmap scan of the rest of the day plus a sort, per batch, that
#: the planner picks when it expects few rows to lack records (fb0005's statistics not yet
#: analyzed), most of all with --project or a project strategy's filter (figure 7's trace
#: archive at 100 k runs, pg_stat_statements: 14.8 against 1.0 ms per read; quadratic in a
#: day's rows).
#: "filter_cost" makes count_pending's filters on documents look as costly as their detoast.
PLANNER: dict[str, tuple[str, ...]] = {"walk_batch": ("keyset_plan",), "count_pending": ("filter_cost",)}

#: Errors after which a short write transaction is simply tried again.
RETRYABLE = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.LockNotAvailable,
    psycopg.errors.SerializationFailure,
)

__all__ = ["Gateway", "Jsonb", "Lease", "connect", "lease_seconds", "LEASE_NAME", "LEASE_SECONDS", "RETRYABLE"]


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
        self.lease: Lease | None = None
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


def lease_seconds() -> float:
    """The lease's lifetime: BACKFILL_LEASE_SECONDS, else 60 s."""
    text = os.environ.get(LEASE_ENV, "").strip()
    if not text:
        return LEASE_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 1 <= value <= 3600:
        raise ConfigError(f"{LEASE_ENV} must be a number of seconds between 1 and 3600, got {text!r}")
    return value


@dataclass
class Lease:
    """This process's hold on the database's one lease (``feedback_backfill_lease``).

    Taken with ``Lease.take`` (AlreadyRunning when another holder's lease is alive), renewed
    every ``seconds / 4`` by a heartbeat thread on its own connection (each renewal a short
    transaction, so it works through PgBouncer and through API waits of many minutes), and
    checked by every write transaction of the holder's gateway: ``check`` renews the lease
    in that same transaction, row-locking it until commit, so a takeover can only happen
    between two of our transactions, after which our next one fails (LeaseLost) before it
    writes. A killed holder's lease expires after ``seconds``.
    """

    database: Database
    command: str
    seconds: float
    holder: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}")
    invocation_id: int | None = None
    _gw: Gateway | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @classmethod
    def take(cls, database: Database, command: str, seconds: float | None = None) -> Lease:
        """Take the lease for ``command`` ("run", "revert", ...) and start its heartbeat."""
        lease = cls(database, command, seconds if seconds is not None else lease_seconds())
        gw = lease._connect()
        try:
            taken = lease._try(gw, None)
            if not taken:
                holder = gw.execute("lease_holder", {"name": LEASE_NAME})
                gw.commit()
                dead = _dead_here(holder[0]) if holder else None
                taken = dead is not None and lease._try(gw, dead)
            if not taken:
                raise AlreadyRunning(_held_message(gw.execute("lease_holder", {"name": LEASE_NAME})))
        except BaseException:
            gw.close()
            raise
        lease._gw = gw
        lease._thread = threading.Thread(target=lease._beat, name="backfill-lease-heartbeat", daemon=True)
        lease._thread.start()
        return lease

    def _try(self, gw: Gateway, dead_holder: str | None) -> bool:
        params = self._params(pid=os.getpid(), hostname=socket.gethostname(), dead_holder=dead_holder)
        try:
            taken = bool(gw.execute("lease_take", params))
            gw.commit()
            return taken
        except DatabaseError as exc:
            gw.rollback()
            # its holder is writing right now (its transaction locks the row): it is alive
            if not isinstance(exc.__context__, psycopg.errors.LockNotAvailable):
                raise
            return False

    def _params(self, **extra: Any) -> dict[str, Any]:
        return {
            "name": LEASE_NAME,
            "holder": self.holder,
            "command": self.command,
            "seconds": self.seconds,
            "invocation_id": self.invocation_id,
            **extra,
        }

    def _connect(self) -> Gateway:
        # its own name in pg_stat_activity: the lease's connection, apart from the work's
        return connect(self.database, lock_timeout="2s", statement_timeout="10s", application_name=LEASE_APP)

    def check(self, gw: Gateway) -> None:
        """Inside a write transaction of ``gw``: renew the lease, or raise LeaseLost."""
        with wrap_exceptions(gw.database):
            held = gw.conn.execute(QUERIES["lease_renew"], self._params()).fetchall()
        if not held:
            raise LeaseLost()

    def _beat(self) -> None:
        while not self._stop.wait(max(self.seconds / 4, 0.2)):
            try:
                if self._gw is None:
                    self._gw = self._connect()
                renewed = self._gw.execute("lease_renew", self._params())
                self._gw.commit()
                if not renewed:
                    return  # expired and taken over: the holder's next write fails with LeaseLost
            except DatabaseError:
                # the database is unreachable: try again next beat; meanwhile the lease ages
                if self._gw is not None:
                    self._gw.close()
                self._gw = None

    def release(self) -> None:
        """Stop the heartbeat and let the lease go at once (it expires anyway if this fails)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for _ in range(2):  # its connection may have been cut: then once more on a new one
            try:
                self._gw = self._gw or self._connect()
                self._gw.rollback()
                self._gw.execute("lease_release", self._params())
                self._gw.commit()
                break
            except DatabaseError:
                if self._gw is not None:
                    self._gw.close()
                self._gw = None
        if self._gw is not None:
            self._gw.close()
            self._gw = None


@contextlib.contextmanager
def holding(gw: Gateway, command: str) -> Iterator[Lease]:
    """Hold the lease for ``command`` while the block runs; ``gw``'s write transactions check it."""
    lease = Lease.take(gw.database, command)
    gw.lease = lease
    try:
        yield lease
    finally:
        gw.lease = None
        lease.release()


def _dead_here(row: dict[str, Any]) -> str | None:
    """The holder token of a live lease whose process, on this host, no longer exists (kill -9).

    Only a certainty counts: another host, a pid that exists (or that we may not signal), or a
    reused pid all mean "wait for the expiry". Were the host name shared by two machines and
    a live holder taken for dead, its next write would still fail (LeaseLost) before writing.
    """
    if not row["alive"] or row["hostname"] != socket.gethostname() or row["pid"] == os.getpid():
        return None
    try:
        os.kill(row["pid"], 0)
    except ProcessLookupError:
        return str(row["holder"])
    except OSError:  # PermissionError: it exists, as another user
        return None
    return None


def _held_message(rows: list[dict[str, Any]]) -> str:
    """Who holds the lease, in one line (the error a second command prints)."""
    if not rows:
        return "another backfill command holds the lease on this database; wait for it or stop it"
    r = rows[0]
    return (
        f"another backfill command holds the lease on this database: `backfill {r['command']}` on {r['hostname']}"
        f" (pid {r['pid']}), since {r['acquired_at']:%Y-%m-%d %H:%M:%S%z}, last heartbeat"
        f" {r['heartbeat_age_s']:.0f}s ago; wait for it or stop it (a killed holder's lease expires"
        f" {r['expires_in_s']:.0f}s from now)"
    )
