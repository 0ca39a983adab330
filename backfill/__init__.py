"""feedback-backfill: restore LangSmith feedback records into a PostgreSQL archive of runs."""

from __future__ import annotations

from .config import Database, LangSmith, Window
from .runner import RunOptions, RunSummary, run
from .status import status

__version__ = "0.1.0"

__all__ = ["Database", "LangSmith", "RunOptions", "RunSummary", "Window", "__version__", "run", "status"]
