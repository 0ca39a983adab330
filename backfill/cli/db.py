"""`backfill db`: our schema from the installed package (upgrade, downgrade, current, history, grants, schema)."""

from __future__ import annotations

from typing import Annotated

import typer

from backfill.cli.params import DatabaseUrl
from backfill.config import Database
from backfill.errors import UsageError

db_app = typer.Typer(
    no_args_is_help=True,
    help="Our schema, from the installed package: upgrade, downgrade, current, history, grants, schema.",
    epilog='Example: backfill db upgrade && backfill db grants backfill_runner | psql "$OWNER_DATABASE_URL"',
)

EPILOG_DB = (
    "The same revisions as `alembic upgrade head` in a checkout; history in feedback_backfill_alembic_version."
    " Migrations go straight to PostgreSQL, not through PgBouncer (CREATE INDEX CONCURRENTLY)."
)


@db_app.command(
    "upgrade", epilog="Example: backfill db upgrade   (or: backfill db upgrade --sql > review.sql)\n\n" + EPILOG_DB
)
def db_upgrade_command(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    sql: Annotated[
        bool, typer.Option("--sql", help="Print the SQL instead of running it (no database needed).")
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Create or update our tables, indexes and view (online: indexes built CONCURRENTLY)."""
    from backfill.operations import migrate

    if sql:
        migrate.offline_sql(revision)
        return
    migrate.upgrade(Database.from_env(database_url), revision, log=True)


@db_app.command(
    "downgrade", epilog="Example: backfill db downgrade base --sql > undo.sql   (base removes all)\n\n" + EPILOG_DB
)
def db_downgrade_command(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Revision to go down to (base: remove everything of ours).")],
    sql: Annotated[bool, typer.Option("--sql", help="Print the SQL (from head down) instead of running it.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Undo our migrations down to REVISION; the app's tables and rows are never touched."""
    from backfill.operations import migrate

    if sql:
        migrate.offline_sql(migrate.head(), downgrade_to=revision)
        return
    migrate.downgrade(Database.from_env(database_url), revision, log=True)


@db_app.command("current", epilog="Example: backfill db current   (prints fb0008 (head) when up to date)")
def db_current_command(ctx: typer.Context, database_url: DatabaseUrl = None) -> None:
    """Print the database's revision of our schema (nothing before the first upgrade)."""
    from backfill.operations import migrate

    migrate.current(Database.from_env(database_url))


@db_app.command("history", epilog="Example: backfill db history")
def db_history_command() -> None:
    """List our revisions, newest first (no database needed)."""
    from backfill.operations import migrate

    migrate.history()


@db_app.command(
    "grants", epilog='Example: backfill db grants backfill_runner | psql -v ON_ERROR_STOP=1 "$OWNER_DATABASE_URL"'
)
def db_grants_command(
    ctx: typer.Context,
    role: Annotated[str, typer.Argument(help="The login role that runs `backfill run` (it must exist).")],
) -> None:
    """Print the least-privilege GRANTs for ROLE (run, status, retry, verify; not revert/reset)."""
    from backfill.sql import grants

    if not role.strip() or "\0" in role:
        raise UsageError("ROLE must be a role name")
    typer.echo(grants(role), nl=False)


@db_app.command("schema", epilog="Example: backfill db schema > schema.sql   (the DDL to review or apply by hand)")
def db_schema_command() -> None:
    """Print our DDL for review: what `backfill db upgrade --sql` prints (sql/schema.sql)."""
    from backfill.sql import schema

    typer.echo(schema(), nl=False)
