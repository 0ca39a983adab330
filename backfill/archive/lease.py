"""The one-writer guarantee: a lease row of ``feedback_backfill_lease``, taken, renewed and released
in short transactions on a connection of its own (no session advisory lock: PgBouncer in
transaction pooling keeps no session state)."""

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

from backfill.archive.gateway import Gateway, connect, wrap_exceptions
from backfill.config import Database
from backfill.errors import AlreadyRunning, ConfigError, DatabaseError, LeaseLost
from backfill.sql import QUERIES

#: The one lease of a database: held by `backfill run`, `verify --fix`, `revert` and `reset`.
LEASE_NAME = "runner"
#: Seconds a lease lives without a heartbeat: a killed holder blocks the next command at
#: most this long. BACKFILL_LEASE_SECONDS overrides it (the PgBouncer tests use a few seconds).
LEASE_SECONDS = 60.0
LEASE_ENV = "BACKFILL_LEASE_SECONDS"
#: application_name of the lease's own connection (heartbeat), beside the work's "feedback-backfill".
LEASE_APP = "feedback-backfill-lease"


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
