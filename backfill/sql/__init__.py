"""The SQL the package loads and ships: the named statements of ``queries.sql`` (parsed once),
``grants.sql`` and ``schema.sql``. The top-level ``sql/`` of a checkout links to these files
for the DBA who reads them there (see sql/README.md)."""

from __future__ import annotations

import re
from importlib.resources import files

_HEADER = re.compile(r"^-- ([a-z0-9_]+) --$", re.MULTILINE)


def _parse(text: str) -> dict[str, str]:
    """Blocks headed ``-- name --``; comment lines after a block's last statement (a section
    banner between blocks) belong to no query and are left out of its text."""
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = body.strip().splitlines()
        while lines and (not lines[-1].strip() or lines[-1].lstrip().startswith("--")):
            lines.pop()
        queries[name] = "\n".join(lines).strip()
    return queries


QUERIES: dict[str, str] = _parse(files(__package__).joinpath("queries.sql").read_text("utf-8"))


def grants(role: str) -> str:
    """sql/grants.sql for ``role`` (quoted as an identifier), as psql -v role=... would apply it."""
    return _text("grants.sql").replace(':"role"', '"' + role.replace('"', '""') + '"')


def schema() -> str:
    """sql/schema.sql: our DDL as `alembic upgrade head --sql` prints it, for review."""
    return _text("schema.sql")


def _text(name: str) -> str:
    return files(__package__).joinpath(name).read_text("utf-8")
