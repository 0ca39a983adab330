"""A fake LangSmith API on 127.0.0.1: GET /feedback, /sessions and /info, with fault injection.

It speaks real HTTP so that the real ``langsmith.Client`` (paths, query parameters,
``x-api-key``, offset paging) is exercised, not a mock of it. The package is split by job:
``plumbing`` (the HTTP server, its handler and the socket tricks of a reset), ``faults``
(the fault-injection API tests and benchmarks call), ``listing`` (the run catalog behind
project listings: ``session=``, ``level``, ``min_created_at``, ``max_created_at``), ``server``
(``FakeLangSmith``: its lifecycle and the answers), ``__main__`` (the command line).

Order of checks for GET /feedback (infrastructure faults come before the application):
latency, stall, reset, URL too long (414, ``max_ids``), windows (``outage``,
``rate_limit_window``), fail_next, auth (401), validation (422), poison (500), empty_all,
data (``listing_misses``, stray/duplicate, ``ignore_offset``), truncate.

Run standalone: ``python -m backfill.sandbox.fake_langsmith --port 8123 --api-key K``; the
fault modes of real incidents are options too (``--outage 25 --fault-after 30``: after the
first 30 requests, 25 s of 500s; ``--rate-limit-window 20``, ``--ignore-offset``,
``--max-ids 50``). ``--traces 2000`` holds a trace-shaped archive (backfill.sandbox.traces,
with ``--runs-per-trace``, ``--projects``, ``--days``, ``--reviewed``, ``--until``, ``--seed``,
``--now``: the arguments the database's archive was built with) and lists it by project;
``--listing-misses 7`` makes those listings silently drop every 7th record.
"""

from __future__ import annotations

from backfill.sandbox.fake_langsmith.listing import RunInfo
from backfill.sandbox.fake_langsmith.server import FakeLangSmith, RequestLog

__all__ = ["FakeLangSmith", "RequestLog", "RunInfo"]
