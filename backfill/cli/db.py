"""`backfill db`: our schema from the installed package (upgrade, downgrade, current, history, grants, schema)."""

from __future__ import annotations

from typing import Annotated

import typer

from backfill.cli.help import Command, Group
from backfill.cli.params import COMMON, DatabaseUrl, option
from backfill.config import Database
from backfill.errors import UsageError

db_app = typer.Typer(
    cls=Group,
    no_args_is_help=True,
    help="Our schema, from the installed package: upgrade, downgrade, current, history, grants, schema.",
    epilog='Example: backfill db upgrade && backfill db grants backfill_runner | psql "$OWNER_DATABASE_URL"',
)

EPILOG_DB = (
    "The same revisions as `alembic upgrade head` in a checkout; history in feedback_backfill_alembic_version."
    " Migrations go straight to PostgreSQL, not through PgBouncer (CREATE INDEX CONCURRENTLY)."
)


@db_app.command(
    "upgrade",
    epilog="Example: backfill db upgrade   (or: backfill db upgrade --sql > review.sql)\n\n" + EPILOG_DB,
    cls=Command,
)
def db_upgrade_command(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision.", metavar="REVISION")] = "head",
    sql: Annotated[
        bool, option("--sql", help="Print the SQL instead of running it (no database needed).", panel=COMMON)
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Create or update our tables, indexes and view (online: indexes built CONCURRENTLY)."""
    from backfill.operations import migrate

    if sql:
        migrate.offline_sql(revision)
        return
    reached = migrate.upgrade(Database.from_env(database_url), revision, log=True)
    typer.echo(migrate.at(reached), err=True)


@db_app.command(
    "downgrade",
    epilog="Example: backfill db downgrade base --sql > undo.sql   (base removes all)\n\n" + EPILOG_DB,
    cls=Command,
)
def db_downgrade_command(
    ctx: typer.Context,
    revision: Annotated[
        str, typer.Argument(help="Revision to go down to (base: remove everything of ours).", metavar="REVISION")
    ],
    sql: Annotated[
        bool, option("--sql", help="Print the SQL (from head down) instead of running it.", panel=COMMON)
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Undo our migrations down to REVISION; the app's tables and rows are never touched."""
    from backfill.operations import migrate

    if sql:
        migrate.offline_sql(migrate.head(), downgrade_to=revision)
        return
    reached = migrate.downgrade(Database.from_env(database_url), revision, log=True)
    typer.echo(migrate.at(reached), err=True)


@db_app.command("current", epilog="Example: backfill db current   (prints fb0009 (head) when up to date)", cls=Command)
def db_current_command(ctx: typer.Context, database_url: DatabaseUrl = None) -> None:
    """Print the database's revision of our schema (nothing before the first upgrade)."""
    from backfill.operations import migrate

    migrate.current(Database.from_env(database_url))


@db_app.command("history", epilog="Example: backfill db history", cls=Command)
def db_history_command() -> None:
    """List our revisions, newest first (no database needed)."""
    from backfill.operations import migrate

    migrate.history()


@db_app.command(
    "grants",
    epilog='Example: backfill db grants backfill_runner --create-role | psql "$OWNER_DATABASE_URL"'
    "   (then \\password backfill_runner in psql)",
    cls=Command,
)
def db_grants_command(
    ctx: typer.Context,
    role: Annotated[str, typer.Argument(help="The login role that runs `backfill run`.", metavar="ROLE")],
    create_role: Annotated[
        bool,
        option("--create-role", help="Also create ROLE (LOGIN, no password) unless it exists.", panel=COMMON),
    ] = False,
) -> None:
    """Print a psql script granting ROLE what check, run, status, retry, verify, db current need (not revert)."""
    from backfill.sql import grants

    if not role.strip() or any(c < " " for c in role) or len(role.encode()) > 63:
        raise UsageError("ROLE must be a role name (at most 63 bytes, no control characters)")
    typer.echo(grants(role, create_role=create_role), nl=False)


@db_app.command(
    "schema", epilog="Example: backfill db schema > schema.sql   (the DDL to review or apply by hand)", cls=Command
)
def db_schema_command() -> None:
    """Print our DDL for review: what `backfill db upgrade --sql` prints (sql/schema.sql)."""
    from backfill.sql import schema

    typer.echo(schema(), nl=False)
