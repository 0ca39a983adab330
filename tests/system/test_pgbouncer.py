"""The backfill behind a real PgBouncer (Debian's 1.18) in transaction pooling.

A pool of two server connections per database, shared with other clients: consecutive
transactions of one client land on either, and whatever a client leaves on a server
connection (a prepared statement, a SET, a session advisory lock) reaches the next one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from pytest_postgresql.executors import PostgreSQLExecutor

from backfill.sandbox.embedded import RUN_AS, free_port
from backfill.sandbox.fake_langsmith import FakeLangSmith

from ..helpers import invocations, raw_rows, seed, status, wait_for
from ..integration.test_faults import KEY, assert_exact, tripwire

pytestmark = pytest.mark.slow

#: BACKFILL_LEASE_SECONDS for these tests (60 by default): a killed run blocks the next one this
#: long at most; long enough for a second command to start (and be refused) meanwhile.
LEASE_S = 10


def _pgbouncer() -> str:
    found = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None)
    if not found:
        pytest.fail("pgbouncer not found: scripts/setup installs it (apt-get install pgbouncer)")
    return found


class Bouncer:
    """pgbouncer in the foreground, as an unprivileged user, in front of the test server."""

    def __init__(self, server: PostgreSQLExecutor, mode: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self.port = free_port()
        (self.root / "userlist.txt").write_text('"postgres" ""\n')
        (self.root / "pgbouncer.ini").write_text(
            "\n".join(
                [
                    "[databases]",
                    f"* = host={server.host} port={server.port}",
                    "[pgbouncer]",
                    "listen_addr = 127.0.0.1",
                    f"listen_port = {self.port}",
                    "unix_socket_dir =",
                    "auth_type = trust",
                    f"auth_file = {self.root / 'userlist.txt'}",
                    f"pool_mode = {mode}",
                    "default_pool_size = 2",
                    "max_client_conn = 200",
                    f"logfile = {self.root / 'pgbouncer.log'}",
                    f"pidfile = {self.root / 'pgbouncer.pid'}",
                    "",
                ]
            )
        )
        cmd = [_pgbouncer(), str(self.root / "pgbouncer.ini")]
        if os.geteuid() == 0:  # pgbouncer refuses to run as root
            shutil.chown(self.root, user=RUN_AS)
            for f in self.root.iterdir():
                shutil.chown(f, user=RUN_AS)
            cmd = ["runuser", "-u", RUN_AS, "--", *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/")
        wait_for(self._accepts, 20, "pgbouncer to accept connections")

    def _accepts(self) -> bool:
        try:
            psycopg.connect(self.url("postgres"), connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            assert self.proc.poll() is None, f"pgbouncer exited: {self.proc.stderr.read()!r}"  # type: ignore[union-attr]
            return False

    def url(self, dsn_or_db: str) -> str:
        """The same database through the pool."""
        if "://" not in dsn_or_db:
            return f"postgresql://postgres@127.0.0.1:{self.port}/{dsn_or_db}"
        parts = urlsplit(dsn_or_db)
        return urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{self.port}"))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def bouncer(postgresql_proc: PostgreSQLExecutor) -> Iterator[Bouncer]:
    b = Bouncer(postgresql_proc, "transaction")
    try:
        yield b
    finally:
        b.stop()


def cli(
    url: str, fake: FakeLangSmith, *args: str, command: str = "run", lease_s: int = LEASE_S
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "LANGSMITH_API_KEY": KEY,
        "LANGSMITH_ENDPOINT": fake.url,
        "LANGSMITH_CONFIG_FILE": os.devnull,
        "BACKFILL_LEASE_SECONDS": str(lease_s),
    }
    extra = ["--delay-ms", "0", "--batch-size", "10", "--no-progress"] if command == "run" else []
    return subprocess.Popen(
        [sys.executable, "-m", "backfill", command, *extra, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


class OtherClients:
    """Clients of the same pool doing short transactions all along (as the extractor would)."""

    def __init__(self, url: str, n: int = 3) -> None:
        self.url, self.stop, self.errors, self.done = url, threading.Event(), [], 0
        self.threads = [threading.Thread(target=self._loop) for _ in range(n)]

    def _loop(self) -> None:
        try:
            with psycopg.connect(self.url, prepare_threshold=None) as conn:
                while not self.stop.is_set():
                    conn.execute("SELECT count(*) FROM runs WHERE run_date IS NOT NULL").fetchone()
                    conn.commit()
                    self.done += 1
                    time.sleep(0.002)
        except psycopg.Error as exc:  # pragma: no cover - reported by the test
            self.errors.append(str(exc))

    def __enter__(self) -> OtherClients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def probe(url: str) -> list[dict[str, object]]:
    """What each server connection of the pool carries: two clients in a transaction at
    once take both server connections of the pool (default_pool_size = 2)."""
    conns = [psycopg.connect(url, prepare_threshold=None) for _ in range(2)]
    try:
        seen = []
        for conn in conns:  # each holds its server connection until the rollback below
            seen.append(
                {
                    "backend": conn.execute("SELECT pg_backend_pid()").fetchone()[0],  # type: ignore[index]
                    "lock_timeout": conn.execute("SHOW lock_timeout").fetchone()[0],  # type: ignore[index]
                    "statement_timeout": conn.execute("SHOW statement_timeout").fetchone()[0],  # type: ignore[index]
                    "prepared": conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0],  # type: ignore[index]
                    "advisory": conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[0],  # type: ignore[index]
                }
            )
        return seen
    finally:
        for conn in conns:
            conn.close()


def test_three_sequential_runs_while_other_clients_use_the_pool(dsn, bouncer):
    ids = seed(dsn, 60, days=1)
    before = raw_rows(dsn)
    url = bouncer.url(dsn)
    with FakeLangSmith(api_key=KEY) as fake, OtherClients(url) as others:
        for _ in range(3):  # consecutive runs used to fail every other time ("_pg3_0" already exists)
            code, err = finish(cli(url, fake, "--limit", "20"))
            assert code == 0, err
            assert "examined 20 row(s)" in err
        assert others.errors == [] and others.done > 0
        assert_exact(dsn, fake, before)
    assert len(status(dsn)) == len(ids)
    assert [i["outcome"] for i in invocations(dsn)] == ["completed"] * 3
    # the pool's server connections carry nothing of ours: settings at their defaults, no
    # prepared statement, no advisory lock
    for conn in probe(url):
        assert (conn["lock_timeout"], conn["statement_timeout"], conn["prepared"], conn["advisory"]) == ("0", "0", 0, 0)


def test_two_concurrent_runs_never_both_enrich(dsn, bouncer):
    ids = seed(dsn, 40, days=1)
    before = raw_rows(dsn)
    url = bouncer.url(dsn)
    asked, release = threading.Event(), threading.Event()
    # the first run is held inside its first API call (lease taken, nothing written yet)
    with FakeLangSmith(api_key=KEY, feedback=tripwire(ids[0], lambda: (asked.set(), release.wait(30)))) as fake:
        first = cli(url, fake)
        try:
            assert asked.wait(30), "the first run never asked the API"
            code, err = finish(cli(url, fake))
        finally:
            release.set()
        assert code == 1, err
        last = err.strip().splitlines()[-1]
        assert last.startswith(
            "backfill: error: another backfill command holds the lease on this database: `backfill run` on "
        ), err
        assert "Traceback" not in err
        code1, err1 = finish(first)
        assert code1 == 0, err1
        assert_exact(dsn, fake, before)
    # one invocation enriched everything, each row examined once: never two writers
    assert [i["outcome"] for i in invocations(dsn)] == ["completed"]
    assert {s["attempts"] for s in status(dsn).values()} == {1}


def status_json(url: str, fake: FakeLangSmith) -> dict:
    proc = cli(url, fake, "--json", command="status")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return json.loads(out)


class KillInThirdBatch:
    """kill -9 a run while the API holds its third batch's request unanswered."""

    def __init__(self) -> None:
        self.held, self.release = threading.Event(), threading.Event()

    def hold(self) -> None:  # the tripwire's action, in the fake's handler thread
        self.held.set()
        self.release.wait(30)

    def run(self, url: str, fake: FakeLangSmith) -> subprocess.Popen[str]:
        victim = cli(url, fake)
        try:
            assert self.held.wait(30), "the run never reached its third batch"
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
        finally:
            self.release.set()
        return victim


def test_a_killed_run_blocks_the_next_one_only_until_its_lease_expires(dsn, bouncer):
    ids = seed(dsn, 50, days=1)
    before = raw_rows(dsn)
    url = bouncer.url(dsn)
    kill = KillInThirdBatch()
    with FakeLangSmith(api_key=KEY, feedback=tripwire(ids[25], kill.hold)) as fake:
        victim = kill.run(url, fake)
        killed_at = time.monotonic()
        # as if the run had been killed on another machine: its pid cannot be checked from here
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE feedback_backfill_lease SET hostname = 'another-host'")
        # at once: the lease is still the killed run's
        code, err = finish(cli(url, fake))
        assert code == 1 and "holds the lease on this database: `backfill run`" in err, err
        held = status_json(url, fake)["runs"]
        assert time.monotonic() - killed_at < LEASE_S, "too slow to observe the live lease; raise LEASE_S"
        assert held["lease"]["state"] == "held" and held["lease"]["pid"] == victim.pid
        assert held["last"]["state"] == "running"
        # within the lease's lifetime it expires, and `backfill status` says so
        wait_for(
            lambda: status_json(url, fake)["runs"]["lease"]["state"] == "expired",
            LEASE_S + 10,
            "the killed run's lease to expire",
            interval=0.25,
        )
        code, err = finish(cli(url, fake))
        assert code == 0, err
        assert_exact(dsn, fake, before)
    after = status_json(url, fake)["runs"]
    assert after["lease"]["state"] == "released" and after["last"]["state"] == "finished"
    # the killed invocation stays unfinished (as status reports it), the next one completed
    assert [i["outcome"] for i in invocations(dsn)][-1] == "completed"
    for conn in probe(url):
        assert (conn["lock_timeout"], conn["statement_timeout"], conn["prepared"], conn["advisory"]) == ("0", "0", 0, 0)


def test_a_run_killed_on_this_host_is_taken_over_at_once(dsn, bouncer):
    """Its pid is gone: the next run need not wait for the lease to expire."""
    ids = seed(dsn, 50, days=1)
    before = raw_rows(dsn)
    url = bouncer.url(dsn)
    kill = KillInThirdBatch()
    with FakeLangSmith(api_key=KEY, feedback=tripwire(ids[25], kill.hold)) as fake:
        kill.run(url, fake)
        killed_at = time.monotonic()
        code, err = finish(cli(url, fake))
        assert code == 0, err
        assert time.monotonic() - killed_at < LEASE_S, "the next run waited for the lease to expire"
        assert_exact(dsn, fake, before)
    assert status_json(url, fake)["runs"]["lease"]["state"] == "released"
    assert [i["outcome"] for i in invocations(dsn)][-2:] == [None, "completed"]


def test_revert_through_the_pool_takes_the_lease_as_revert(dsn, bouncer):
    """revert/reset/verify --fix hold the same lease: a run meanwhile is refused, naming them."""
    seed(dsn, 20, days=1)
    url = bouncer.url(dsn)
    with FakeLangSmith(api_key=KEY) as fake:
        code, err = finish(cli(url, fake))
        assert code == 0, err
        code, err = finish(cli(url, fake, "--all", "--yes", command="revert"))
        assert code == 0, err
        assert "restored" in err
        lease = status_json(url, fake)["runs"]["lease"]
        assert (lease["command"], lease["state"]) == ("revert", "released")


def test_the_lease_outlives_api_waits_longer_than_its_lifetime(dsn, bouncer):
    """The heartbeat renews it while the run waits on the API (here 3 lease lifetimes)."""
    ids = seed(dsn, 20, days=1)
    before = raw_rows(dsn)
    url = bouncer.url(dsn)
    short = 2
    asked, release = threading.Event(), threading.Event()
    with FakeLangSmith(api_key=KEY, feedback=tripwire(ids[0], lambda: (asked.set(), release.wait(30)))) as fake:
        first = cli(url, fake, lease_s=short)
        try:
            assert asked.wait(30), "the first run never asked the API"
            time.sleep(3 * short)  # without a heartbeat the lease would have expired twice over
            code, err = finish(cli(url, fake, lease_s=short))
        finally:
            release.set()
        assert code == 1 and "holds the lease on this database: `backfill run`" in err, err
        code1, err1 = finish(first)
        assert code1 == 0, err1
        assert_exact(dsn, fake, before)
    assert [i["outcome"] for i in invocations(dsn)] == ["completed"]


def test_a_run_whose_lease_was_taken_over_writes_nothing_more(dsn, bouncer):
    """A heartbeat too late (simulated: another holder takes the row): the next write
    transaction finds the lease gone, inside itself, and stops before writing."""
    ids = seed(dsn, 30, days=1)
    url = bouncer.url(dsn)
    asked, release = threading.Event(), threading.Event()
    with FakeLangSmith(api_key=KEY, feedback=tripwire(ids[10], lambda: (asked.set(), release.wait(30)))) as fake:
        run = cli(url, fake)  # batches of 10: the first is written, the second waits on the API
        try:
            assert asked.wait(30), "the run never reached its second batch"
            # fetch ahead sends batch 2's request while batch 1 is being written: take the
            # lease once batch 1 is committed, so that the write refused is batch 2's
            wait_for(lambda: len(status(dsn)) == 10, 30, "the first batch's checkpoint")
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(
                    "UPDATE feedback_backfill_lease SET holder = 'intruder', command = 'revert',"
                    " expires_at = now() + interval '1 hour'"
                )
        finally:
            release.set()
        code, err = finish(run)
    assert code == 1, err
    assert err.strip().splitlines()[-1] == (
        "backfill: error: This command's lease expired and another backfill command took it over: stopped before"
        " writing the batch in flight (nothing of it was written); run the command again once the other one is done."
    )
    assert len(status(dsn)) == 10  # the first batch only
    assert invocations(dsn)[-1]["outcome"] == "error"


def test_session_pooling_works_too(dsn, postgresql_proc):
    seed(dsn, 20, days=1)
    before = raw_rows(dsn)
    pool = Bouncer(postgresql_proc, "session")
    try:
        url = pool.url(dsn)
        with FakeLangSmith(api_key=KEY) as fake:
            for _ in range(2):
                code, err = finish(cli(url, fake))
                assert code == 0, err
            assert_exact(dsn, fake, before)
            assert status_json(url, fake)["runs"]["lease"]["state"] == "released"
    finally:
        pool.stop()
