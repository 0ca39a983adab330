"""A throwaway PostgreSQL server from the local binaries, for `backfill demo`.

initdb and pg_ctl refuse to run as root: as root, the server runs as the user ``postgres``.
It listens on no TCP address, only on a Unix socket inside its 0700 temporary directory:
with trust authentication, a TCP port on 127.0.0.1 would let any local user in as superuser.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from backfill.errors import ConfigError

RUN_AS = "postgres"


def find_bindir() -> Path:
    """The directory of pg_ctl and initdb: $PG_CTL's, PATH's, or the newest Debian one."""
    found = os.environ.get("PG_CTL") or shutil.which("pg_ctl")
    if not found:
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
        found = candidates[-1] if candidates else None
    if not found:
        raise ConfigError(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install them"
            " (Debian/Ubuntu: apt-get install postgresql) or set PG_CTL=/path/to/pg_ctl"
        )
    return Path(found).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EmbeddedPostgres:
    """initdb + pg_ctl start in a temporary directory; ``stop()`` removes everything."""

    root: Path
    port: int
    bindir: Path

    @property
    def user(self) -> str:
        return RUN_AS if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@/{dbname}?host={self.root}&port={self.port}"

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    def _cmd(self, *args: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", RUN_AS, "--", *args]
        return list(args)

    def _run(self, *args: str) -> None:
        done = subprocess.run(self._cmd(*args), capture_output=True, text=True, cwd="/")
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ConfigError(f"{Path(args[0]).name} failed: {last[0]} (log: {self.root / 'postgres.log'})")

    @classmethod
    def start(cls) -> EmbeddedPostgres:
        bindir = find_bindir()
        root = Path(tempfile.mkdtemp(prefix="feedback-backfill-demo-"))
        pg = cls(root, free_port(), bindir)
        try:
            if os.geteuid() == 0:
                shutil.chown(root, user=RUN_AS)
            pg._run(
                str(bindir / "initdb"), "-D", str(pg.datadir), "-U", pg.user, "--auth=trust", "-E", "UTF8", "--no-sync"
            )
            pg._run(
                str(bindir / "pg_ctl"),
                "-D",
                str(pg.datadir),
                "-l",
                str(root / "postgres.log"),
                "-w",
                "start",
                "-o",
                f"-p {pg.port} -k {root} -c listen_addresses='' -c fsync=off",
            )
        except BaseException:  # Ctrl-C during initdb included: leave nothing behind
            pg.stop()
            raise
        return pg

    def stop_command(self) -> str:
        prefix = f"runuser -u {RUN_AS} -- " if os.geteuid() == 0 else ""
        return f"{prefix}{self.bindir / 'pg_ctl'} -D {self.datadir} -m fast stop; rm -rf {self.root}"

    def stop(self) -> None:
        subprocess.run(
            self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"),
            capture_output=True,
            cwd="/",
        )
        shutil.rmtree(self.root, ignore_errors=True)
