"""Which runs share a request: packed by the records their ``feedback_stats`` promise.

A request names at most ``max_ids`` runs and a page holds at most 100 records, so a window
needs at least ``lower_bound(runs, records)`` requests. Fixed batches of 100 runs would cost
a second page whenever a batch's runs held more than 100 records. Here the next request takes runs in walk
order while the records they promise fit ``budget``; runs that promise nothing ride along in
any request with room for their id (a verdict entered after the extractor fetched them is
still found). Stale or missing stats cost nothing in correctness: ``langsmith.by_run.fetch``
follows ``offset`` pages whenever a page comes back full.

Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

#: The records a request may promise: one less than a page, so that a full page always means
#: "more than promised" (and is followed by the next page), and a request whose promises are
#: exact costs exactly one request, never a second, empty page.
BUDGET = 99
#: Runs per request (the API's limit; ``Transport.max_ids`` may be lower after a 414).
MAX_IDS = 100
#: Records per page (GET /feedback's largest ``limit``).
PAGE = 100


def pack(promises: Sequence[float], max_ids: int = MAX_IDS, budget: int = BUDGET) -> list[int]:
    """The sizes of consecutive requests for runs promising ``promises`` records, in order.

    Next fit: a run joins the current request unless the request already names ``max_ids``
    runs, or the run promises records and the request's promised records would then pass
    ``budget`` (a request of runs promising nothing yet takes any run: one that alone passes
    the budget is paged, and zeros still ride with it). Every request but the last is
    closed; the last could still take runs promising nothing unless it names ``max_ids``.
    Promises may be fractions (``scaled``).
    """
    if max_ids < 1:
        raise ValueError("max_ids must be 1 or more")
    sizes: list[int] = []
    n, records = 0, 0.0
    for p in promises:
        p = max(0, p)
        if n and (n >= max_ids or (p and records and records + p > budget)):
            sizes.append(n)
            n, records = 0, 0.0
        n += 1
        records += p
    if n:
        sizes.append(n)
    return sizes


def scaled(promised: int, received: int) -> float:
    """The factor applied to promises: what the API returned per record promised so far, at most 1.

    Overstated stats (records deleted in LangSmith since the extractor counted them) would
    otherwise cut requests short of a page: x3 overstated stats packed at face value cost
    more requests than fixed batches of 100 runs. Until a page's worth has been promised the
    stats are taken as they are; understated ones are left to paging.
    """
    if promised < PAGE:
        return 1.0
    return min(1.0, max(0.01, received / promised))


def requests(runs: int, promised: int, most: int = MAX_IDS) -> int:
    """The requests ``pack`` needs at least for ``runs`` runs promising ``promised`` records, at
    most ``most`` ids each: the estimate of the runs strategy wherever one is shown."""
    return max(-(-runs // min(most, MAX_IDS)), -(-promised // BUDGET))


def lower_bound(runs: int, records: int) -> int:
    """The fewest requests that can fetch ``records`` records of ``runs`` runs: max(⌈runs/100⌉, ⌈records/100⌉)."""
    return max(-(-runs // MAX_IDS), -(-records // PAGE))
