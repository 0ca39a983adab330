"""Demo and test support, shipped because `backfill demo` needs it; never on the production path.

``fake_langsmith`` (a real HTTP server with fault injection), ``synthetic`` (deterministic
runs and feedback), ``embedded`` (a throwaway PostgreSQL), ``demo`` (`backfill demo`) and
``app_schema.sql`` (the app's `runs` schema as deployed). Production modules of ``backfill``
never import this package; only the CLI's `demo` command does, when it runs.
"""

from __future__ import annotations

from importlib.resources import files


def app_schema() -> str:
    """The application's `runs` schema as deployed (for the demo, the tests and the benchmarks)."""
    return files(__package__).joinpath("app_schema.sql").read_text("utf-8")
