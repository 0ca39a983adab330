"""What our migrations that build indexes CONCURRENTLY share (fb0002, fb0005, fb0006, fb0008, fb0009).

Kept stable: a revision's SQL must not change once released (sql/schema.sql is checked
against ``alembic upgrade head --sql``).
"""

from __future__ import annotations

from sqlalchemy import text

from alembic import context, op


def lock_timeout() -> str:
    """``-x lock_timeout=...`` (default 5s): how long CREATE INDEX CONCURRENTLY waits for a lock."""
    value = context.get_x_argument(as_dictionary=True).get("lock_timeout", "5s")
    if not value.replace(".", "").isalnum():
        raise ValueError(f"-x lock_timeout must look like 5s or 500ms, got {value!r}")
    return value


def invalid(name: str) -> bool:
    """True when an index of that name exists in our schema but is INVALID (an interrupted build)."""
    row = (
        op.get_bind()
        .execute(
            text(
                "SELECT i.indisvalid FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid"
                " WHERE c.relname = :name AND c.relnamespace = current_schema()::regnamespace"
            ),
            {"name": name},
        )
        .first()
    )
    return row is not None and not row[0]


def build_indexes(indexes: dict[str, str], first: tuple[str, ...] = ()) -> None:
    """CREATE INDEX CONCURRENTLY each ``name: on`` of ``indexes``, in order, outside a transaction,
    an invalid leftover dropped first (offline: a comment telling the DBA to); ``first``: other
    statements that must not run in a transaction, executed before them under the same settings."""
    with op.get_context().autocommit_block():
        op.execute(f"SET lock_timeout = '{lock_timeout()}'")
        op.execute("SET statement_timeout = 0")
        for statement in first:
            op.execute(statement)
        for name, on in indexes.items():
            if context.is_offline_mode():
                op.execute(
                    f"-- if {name} exists with pg_index.indisvalid = false (an interrupted"
                    f" build), first: DROP INDEX CONCURRENTLY {name}"
                )
            elif invalid(name):
                op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
            op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {on}")
        op.execute("RESET statement_timeout")
        op.execute("RESET lock_timeout")


def drop_indexes(names: list[str], last: tuple[str, ...] = ()) -> None:
    """DROP INDEX CONCURRENTLY each of ``names``, in order (it waits for the transactions using
    the index: no time limit), then the statements ``last``, outside a transaction."""
    with op.get_context().autocommit_block():
        op.execute(f"SET lock_timeout = '{lock_timeout()}'")
        op.execute("SET statement_timeout = 0")
        for name in names:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        for statement in last:
            op.execute(statement)
        op.execute("RESET statement_timeout")
        op.execute("RESET lock_timeout")
