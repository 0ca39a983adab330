"""The results table the figures fill, and the markdown it becomes (docs/benchmarks.md's Results)."""

from __future__ import annotations

import hashlib
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import ROOT, SERVER_SETTINGS, Server


@dataclass
class Row:
    figure: str
    measure: str
    ours: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    met: str = ""


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    def add(self, *args: str) -> None:
        self.rows.append(Row(*args))


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def machine(server: Server) -> list[str]:
    cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    mem = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
    return [
        f"- CPU: {os.cpu_count()} (nproc {len(os.sched_getaffinity(0))}) x {cpu.group(1).strip() if cpu else '?'}",
        f"- RAM: {int(mem.group(1)) / 2**20:.1f} GiB" if mem else "- RAM: ?",
        f"- PostgreSQL {server.version} (EmbeddedPostgres: fsync=off; "
        + ", ".join(f"{k}={v}" for k, v in SERVER_SETTINGS.items())
        + ")",
        f"- Python {platform.python_version()}, {platform.platform()}",
    ]


def render(res: Results, server: Server, command: str, elapsed: float) -> str:
    head = ["figure", "measure", "backfill.run", "per-run design (or reference)", "ratio", "target", "met?"]
    lines = [
        f"Command: `{command}` ({elapsed / 60:.1f} min)",
        "",
        *machine(server),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for r in res.rows:
        lines.append("| " + " | ".join([r.figure, r.measure, r.ours, r.baseline, r.ratio, r.target, r.met]) + " |")
    lines += ["", *(d + "\n" for d in res.details)]
    return "\n".join(lines)


FINGERPRINT_LABEL = "sha256 of the backfill/ sources, its migrations included"


def fingerprint() -> str:
    """A hash of the package, its SQL and its migrations: the code these figures measured.

    The revisions live in backfill/migrations and alembic/ is a link to it: each file is
    hashed once, under its real path, however many ways it can be reached.
    """
    root = ROOT.resolve()
    patterns = ("backfill/**/*.py", "backfill/**/*.sql", "alembic/**/*.py")
    files = {path.resolve() for pattern in patterns for path in ROOT.glob(pattern)}
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]
