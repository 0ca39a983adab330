"""Alembic, called from Python: what `alembic upgrade head` runs, for the demo and tests."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from sqlalchemy import create_engine, pool

from alembic import command

from .config import Database
from .errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_INI = ROOT / "alembic.ini"


def alembic_config() -> Config:
    if not ALEMBIC_INI.exists():
        raise ConfigError(f"alembic.ini not found in {ROOT}: install from a source checkout (pip install -e .)")
    return Config(str(ALEMBIC_INI))


def upgrade(database: Database, revision: str = "head") -> None:
    """Run our migrations up to ``revision`` on one connection (``config.attributes``)."""
    _run(database, command.upgrade, revision)


def downgrade(database: Database, revision: str = "base") -> None:
    _run(database, command.downgrade, revision)


def _run(database: Database, fn: object, revision: str) -> None:
    cfg = alembic_config()
    engine = create_engine(database.sqlalchemy_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            cfg.attributes["connection"] = conn
            fn(cfg, revision)  # type: ignore[operator]
    finally:
        engine.dispose()
