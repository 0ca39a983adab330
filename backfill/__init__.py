"""feedback-backfill: restore LangSmith feedback records into a PostgreSQL archive of runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from backfill.archive.status import status
from backfill.config import Database, LangSmith, Window
from backfill.domain.options import RunOptions
from backfill.runner.summary import RunSummary

if TYPE_CHECKING:
    from backfill.runner.invocation import run

__version__ = "0.1.0"

__all__ = ["Database", "LangSmith", "RunOptions", "RunSummary", "Window", "__version__", "run", "status"]


def __getattr__(name: str) -> Any:
    # `run` is imported when first used: `import backfill` (and so `backfill --help` and
    # `backfill status`) must not load the LangSmith SDK, which only `run` needs. (`status` can
    # be imported at once: it has no such dependency; imported late, the submodule
    # `backfill.status` would shadow the function.)
    if name == "run":
        from backfill.runner.invocation import run

        globals()["run"] = run
        return run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
