"""For the application's own Alembic: a filter that keeps its autogenerate off our objects.

Our revisions add tables, indexes on the app's ``runs`` and a view to the app's schema; the
app's models know none of them, so its ``alembic revision --autogenerate`` would propose to
drop them all. In the app's ``env.py``::

    from backfill.alembic import include_object

    context.configure(..., include_object=include_object)

The names below are every object ``backfill db upgrade`` creates, checked against the
catalog by tests/integration/test_app_alembic.py: a revision that adds an object must add its name here.
(Module ``backfill.alembic``; ``from alembic import ...`` elsewhere in the package still
imports Alembic itself, as imports are absolute.)
"""

from __future__ import annotations

from typing import Any

#: Where our history is kept, apart from the app's ``alembic_version`` (backfill/migrations/env.py).
VERSION_TABLE = "feedback_backfill_alembic_version"

#: Our tables; their own indexes and constraints go with them.
TABLES = frozenset(
    {
        "feedback_backfill_status",
        "feedback_backfill_invocations",
        "feedback_backfill_lease",
        "feedback_backfill_settled",
        "feedback_backfill_listing",
        "feedback_backfill_staged",
        VERSION_TABLE,
    }
)

#: Our indexes on the app's ``runs`` (fb0002, fb0005, fb0008, fb0009).
RUNS_INDEXES = frozenset(
    {
        "runs_feedback_records_gin_idx",
        "runs_feedback_stats_gin_idx",
        "runs_feedback_pending_idx",
        "runs_feedback_promised_idx",
        "runs_feedback_extractor_idx",
        "runs_feedback_missing_idx",
        "runs_feedback_unprovable_idx",
        "runs_feedback_pending_project_idx",
    }
)

#: The analyst view (fb0003, fb0005).
VIEWS = frozenset({"feedback_records_v"})

#: Extended statistics on ``runs`` (fb0005): autogenerate never reflects them; listed so the
#: catalog test accounts for everything the migrations create.
STATISTICS = frozenset({"runs_feedback_pending_stx"})

#: Every name above: what the app's autogenerate must leave alone.
OBJECTS = TABLES | RUNS_INDEXES | VIEWS | STATISTICS


def include_object(object: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic's ``include_object`` hook: False for our objects and anything on our tables."""
    if name in OBJECTS:
        return False
    table = getattr(object, "table", None)  # a column, index or constraint: on which table?
    return getattr(table, "name", None) not in TABLES


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic's ``include_name`` hook, the same filter applied before reflection (cheaper
    on a large schema: our tables are never reflected)."""
    return name not in OBJECTS
