"""Feedback by run: the records of named runs, and whatever the API refuses split until the culprit is alone."""

from __future__ import annotations

from typing import Any

from backfill.domain.records import canonical_run_id
from backfill.domain.rows import Answer, Tally
from backfill.langsmith.pages import PagingFailed, page_through
from backfill.langsmith.transport import BatchFailed, Transport, UrlTooLong

#: Pages of one request before paging is given up (the request is split instead): 50,000
#: records. A batch needing more is implausible; a server that ignores ``offset`` is not.
MAX_PAGES = 500


def fetch(transport: Transport, run_ids: list[str], tally: Tally) -> dict[str, list[dict[str, Any]]]:
    """All records of these valid runs (keyed by the ids given), following ``offset`` pages.

    Records for runs not asked, and repeats of a record id, are dropped and counted. A page
    that cannot be paged raises ``BatchFailed``: halves fit in fewer pages, and a single run
    that still cannot be paged is failed, never stored with duplicates.
    """
    wanted = {canonical_run_id(r) or r: r for r in run_ids}
    asked = list(wanted)
    out: dict[str, list[dict[str, Any]]] = {r: [] for r in run_ids}

    def owner(rec: dict[str, Any]) -> str | None:
        return wanted.get(canonical_run_id(str(rec.get("run_id"))) or "")

    try:
        got = page_through(lambda p: transport.get_page(p, tally), {"run": asked}, owner, tally, MAX_PAGES)
    except PagingFailed as exc:
        raise BatchFailed(exc.detail, transport.sent) from None
    for who, rec in got:
        out[who].append(rec)
    transport.known_good = asked[0]
    return out


def fetch_isolating(transport: Transport, run_ids: list[str], tally: Tally) -> dict[str, Answer]:
    """Records per run; a request the API refuses is split until the culprit is alone.

    The value is the run's records, or the reason its fetch failed. Requests name at most
    ``transport.max_ids`` runs (lowered for the rest of the invocation by a 414/431).

    Poison or outage: a 500 may come from one run in the request, or from the API itself. A
    refused request is halved and both halves are asked before either is split further, so
    that a healthy API proves itself along the way: with one poisoned run, one half of each
    pair succeeds. A run is written off (``failed``/``api_error``) only once a request made
    after its own failure has succeeded; where none has, and where both halves fail (two
    poisoned runs, or an outage), ``transport.healthy()`` probes with a run known to be fine,
    and waits out an outage (no row marked, no attempt spent) before asking again. One
    poisoned run in a batch of n costs at most 2*ceil(log2(n)) + 2 requests (16 for 100): the
    whole batch, two per halving, and one probe when the culprit is the last of its pair.
    """
    out: dict[str, Answer] = {}
    i = 0
    while i < len(run_ids):
        chunk = run_ids[i : i + transport.max_ids]
        try:
            out.update(_fetch_or_isolate(transport, chunk, tally))
        except UrlTooLong:
            continue  # max_ids was lowered: the same ids again, in smaller requests
        i += len(chunk)
    return out


def _fetch_or_isolate(transport: Transport, run_ids: list[str], tally: Tally) -> dict[str, Answer]:
    try:
        return dict(fetch(transport, run_ids, tally))
    except UrlTooLong as exc:
        if len(run_ids) == 1:
            return {run_ids[0]: f"API error: {exc.detail} (URL too long for one run id)"}
        # the next requests name half as many runs; the caller asks these ids again
        transport.max_ids = min(transport.max_ids, max(1, len(run_ids) // 2))
        raise
    except BatchFailed as exc:
        return _isolate(transport, run_ids, exc, tally)


def _isolate(transport: Transport, run_ids: list[str], exc: BatchFailed, tally: Tally) -> dict[str, Answer]:
    """``run_ids`` were refused as a whole (``exc``): find the culprit(s)."""
    if len(run_ids) == 1:
        if transport.proven(exc, tally):
            return {run_ids[0]: f"API error: {exc.detail}"}
        return fetch_isolating(transport, run_ids, tally)  # an outage was waited out: ask again
    mid = len(run_ids) // 2
    out: dict[str, Answer] = {}
    refused: list[tuple[list[str], BatchFailed]] = []
    for half in (run_ids[:mid], run_ids[mid:]):
        try:
            out.update(fetch(transport, half, tally))
        except BatchFailed as refusal:
            refused.append((half, refusal))
        except UrlTooLong:
            transport.max_ids = min(transport.max_ids, max(1, len(half) // 2))
            out.update(fetch_isolating(transport, half, tally))
    both = len(refused) == 2 and all(r.needs_proof for _, r in refused)
    if both and not transport.healthy(refused[1][1].detail, tally):
        return fetch_isolating(transport, run_ids, tally)  # both halves failed in an outage, now over: ask again
    for half, why in refused:
        out.update(_isolate(transport, half, why, tally))
    return out
