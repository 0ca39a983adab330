"""Alembic, called from Python: what `backfill db ...` (and the demo and tests) run.

The Config is built in code, its ``script_location`` the revisions inside the installed
package (backfill/migrations), so `pip install` is all a DBA needs; a checkout's
``alembic upgrade head`` (alembic.ini, top-level ``alembic`` -> backfill/migrations) runs the
very same files. Alembic's INFO lines ("Running upgrade  -> fb0001, ...") go to stderr.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool
from sqlalchemy.exc import SQLAlchemyError

from alembic import command
from backfill.alembic import VERSION_TABLE
from backfill.config import Database
from backfill.errors import DatabaseError, redact

#: The revisions, wherever the package is installed (site-packages or a checkout).
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
LOG_FORMAT = "%(levelname)-5.5s [%(name)s] %(message)s"  # alembic.ini's "generic" format


def alembic_config(*, log: bool = False, stdout: TextIO | None = None) -> Config:
    """Our Alembic Config, without alembic.ini; ``log``: Alembic's INFO lines to stderr."""
    cfg = Config(stdout=stdout or sys.stdout, output_buffer=stdout or sys.stdout)
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["log"] = log
    return cfg


def log_to_stderr() -> None:
    """Alembic's INFO lines on stderr, as alembic.ini's logging does (once per process)."""
    logger = logging.getLogger("alembic")
    if not any(getattr(h, "_backfill", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler._backfill = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def head() -> str:
    """The newest revision of the package."""
    return str(ScriptDirectory.from_config(alembic_config()).get_current_head())


def upgrade(database: Database, revision: str = "head", *, log: bool = False) -> str | None:
    """Run our migrations up to ``revision`` on one connection (``config.attributes``);
    returns the revision the database is at after it."""
    return _run(database, lambda cfg: command.upgrade(cfg, revision), log, reached=True)


def downgrade(database: Database, revision: str = "base", *, log: bool = False) -> str | None:
    """Undo our migrations down to ``revision``; returns the revision the database is at (None: base)."""
    return _run(database, lambda cfg: command.downgrade(cfg, revision), log, reached=True)


def at(revision: str | None) -> str:
    """The line `backfill db upgrade`/`downgrade` end with: where the database is now."""
    if revision is None:
        return "database at base: none of our revisions applied"
    top = head()
    return f"database at {revision} (head)" if revision == top else f"database at {revision} (head is {top})"


def current(database: Database, stdout: TextIO | None = None) -> None:
    """Print the database's revision (``<rev> (head)``), as `alembic current` does."""
    _run(database, lambda cfg: command.current(cfg), False, stdout)


def offline_sql(revision: str = "head", *, downgrade_to: str | None = None, stdout: TextIO | None = None) -> None:
    """Print the SQL of an upgrade to ``revision`` (or a downgrade from it to ``downgrade_to``),
    exactly what `alembic upgrade head --sql` prints in a checkout; no database is touched."""
    cfg = alembic_config(stdout=stdout)
    cfg.attributes["offline_url"] = "postgresql+psycopg://"
    if downgrade_to is None:
        command.upgrade(cfg, revision, sql=True)
    else:
        command.downgrade(cfg, f"{revision}:{downgrade_to}", sql=True)


def history(stdout: TextIO | None = None) -> None:
    """Print the revisions, newest first (`alembic history`)."""
    command.history(alembic_config(stdout=stdout))


def _run(
    database: Database,
    fn: Callable[[Config], None],
    log: bool,
    stdout: TextIO | None = None,
    *,
    reached: bool = False,
) -> str | None:
    """``fn`` on one connection; ``reached``: then read the revision the database is at."""
    cfg = alembic_config(log=log, stdout=stdout)
    try:
        engine = create_engine(database.sqlalchemy_url, poolclass=pool.NullPool)
    except (SQLAlchemyError, ValueError) as exc:  # e.g. a port that is not a number
        raise DatabaseError(redact(f"DATABASE_URL is not usable: {_line(exc)}", database.secrets())) from None
    try:
        with engine.connect() as conn:
            cfg.attributes["connection"] = conn
            fn(cfg)
            if not reached:
                return None
            # read from the version table, not assumed from the target: "heads", "-1" and
            # "+1" name no revision, and a downgrade to base leaves the table empty
            return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
    except SQLAlchemyError as exc:
        raise DatabaseError(redact(f"database error: {_line(exc)}", database.secrets())) from None
    finally:
        engine.dispose()


def _line(exc: BaseException) -> str:
    """The first line of the driver's message (SQLAlchemy appends SQL and a link)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return " ".join(text.splitlines()[0].split()) if text else type(exc).__name__
