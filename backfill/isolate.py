"""Feedback in, whatever the API refuses: a refused request is split until the culprit is alone."""

from __future__ import annotations

from typing import Any

from .source import BatchFailed, FeedbackSource, UrlTooLong


def fetch_isolating(source: FeedbackSource, run_ids: list[str]) -> dict[str, list[dict[str, Any]] | str]:
    """Records per run; a request the API refuses is split until the culprit is alone.

    The value is the run's records, or the reason its fetch failed. Requests name at most
    ``source.max_ids`` runs (lowered for the rest of the invocation by a 414/431).

    Poison or outage: a 500 may come from one run in the request, or from the API itself. A
    refused request is halved and both halves are asked before either is split further, so
    that a healthy API proves itself along the way: with one poisoned run, one half of each
    pair succeeds. A run is written off (``failed``/``api_error``) only once a request made
    after its own failure has succeeded; where none has, and where both halves fail (two
    poisoned runs, or an outage), ``source.healthy()`` probes with a run known to be fine,
    and waits out an outage (no row marked, no attempt spent) before asking again. One
    poisoned run in a batch of n costs at most 2*log2(n) + 2 requests: the whole batch, two
    per halving, and one probe when the culprit is the last of its pair.
    """
    out: dict[str, list[dict[str, Any]] | str] = {}
    i = 0
    while i < len(run_ids):
        chunk = run_ids[i : i + source.max_ids]
        try:
            out.update(_fetch_or_isolate(source, chunk))
        except UrlTooLong:
            continue  # max_ids was lowered: the same ids again, in smaller requests
        i += len(chunk)
    return out


def _fetch_or_isolate(source: FeedbackSource, run_ids: list[str]) -> dict[str, list[dict[str, Any]] | str]:
    try:
        return dict(source.fetch(run_ids))
    except UrlTooLong as exc:
        if len(run_ids) == 1:
            return {run_ids[0]: f"API error: {exc.detail} (URL too long for one run id)"}
        # the next requests name half as many runs; the caller asks these ids again
        source.max_ids = min(source.max_ids, max(1, len(run_ids) // 2))
        raise
    except BatchFailed as exc:
        return _isolate(source, run_ids, exc)


def _isolate(source: FeedbackSource, run_ids: list[str], exc: BatchFailed) -> dict[str, list[dict[str, Any]] | str]:
    """``run_ids`` were refused as a whole (``exc``): find the culprit(s)."""
    if len(run_ids) == 1:
        if source.proven(exc):
            return {run_ids[0]: f"API error: {exc.detail}"}
        return fetch_isolating(source, run_ids)  # an outage was waited out: ask again
    mid = len(run_ids) // 2
    out: dict[str, list[dict[str, Any]] | str] = {}
    refused: list[tuple[list[str], BatchFailed]] = []
    for half in (run_ids[:mid], run_ids[mid:]):
        try:
            out.update(source.fetch(half))
        except BatchFailed as refusal:
            refused.append((half, refusal))
        except UrlTooLong:
            source.max_ids = min(source.max_ids, max(1, len(half) // 2))
            out.update(fetch_isolating(source, half))
    if len(refused) == 2 and all(r.needs_proof for _, r in refused) and not source.healthy(refused[1][1].detail):
        return fetch_isolating(source, run_ids)  # both halves failed in an outage, now over: ask again
    for half, why in refused:
        out.update(_isolate(source, half, why))
    return out
