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


def grants(role: str, *, create_role: bool = False) -> str:
    """sql/grants.sql for ``role`` (quoted as an identifier), as psql -v role=... would apply it:
    a psql script, ``\\set ON_ERROR_STOP on`` first. ``create_role``: also create ``role`` (a
    LOGIN role without password) unless it exists."""
    ident = '"' + role.replace('"', '""') + '"'
    first, rest = _text("grants.sql").split("\n", 1)  # first: \\set ON_ERROR_STOP on
    rest = rest.replace(':"role"', ident)
    if not create_role:
        return f"{first}\n{rest}"
    literal = "'" + role.replace("'", "''") + "'"
    # psql's \\if, not a DO block: no dollar quoting around a name that could hold one
    create = (
        f"SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {literal}) AS backfill_create_role \\gset\n"
        "\\if :backfill_create_role\n"
        f"CREATE ROLE {ident} LOGIN;\n"
        "\\else\n"
        "\\echo 'the role exists: not created, granted all the same'\n"
        "\\endif\n"
        # the password is set interactively, never in argv, this output or the server's log
        f"-- then: \\password {ident}   (in psql, as a role with CREATEROLE; or peer/certificate auth)\n\n"
    )
    return f"{first}\n{create}{rest}"


def schema() -> str:
    """sql/schema.sql: our DDL as `alembic upgrade head --sql` prints it, for review."""
    return _text("schema.sql")


def _text(name: str) -> str:
    return files(__package__).joinpath(name).read_text("utf-8")
