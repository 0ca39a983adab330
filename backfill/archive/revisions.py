"""Our Alembic revisions, read from the package's files (backfill/migrations), never from a database.

`backfill check` and `backfill run` compare the revision a database records with ``head()``;
`backfill db` (operations.migrate) runs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory

#: The revisions, wherever the package is installed (site-packages or a checkout).
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def script_directory() -> ScriptDirectory:
    # imported here: `backfill status` and `--help` need no Alembic
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    return ScriptDirectory.from_config(cfg)


def head() -> str:
    """The newest revision of the package."""
    return str(script_directory().get_current_head())


def revisions() -> list[str]:
    """Every revision id of the package (fb0001 ...), newest first."""
    return [s.revision for s in script_directory().walk_revisions()]
