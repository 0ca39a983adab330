"""The project strategy for one project: list (``listing``), check a sample, apply the staged records.

The apply phase is the runs strategy's pipeline with the answers taken from the staging
table instead of the API: the window's rows of the project come from the same walk (its
days in order, keyset on id, the same skips), each row's outcome from the same ``decide``
and the batch goes through the same ``store.write`` (patch in place, checkpoint, ledger,
FOR UPDATE SKIP LOCKED, the lease checked inside the transaction). A row whose staged
records are not as many as its feedback_stats promise (feedback created after the pass
began or deleted since, or a record the listing missed), a row examined before (it holds a
status entry: re-archived or walked again, its staged copy may predate a reviewer's edit)
and a row whose staged records an earlier listing staged (a pass that extends a listing
lists only what was created since) are fetched run by run before being judged, as today; a
row with none staged and none promised is ``no_feedback``. Staged records of runs that are not
rows of the window are counted and never written. The apply phase asks the API for few
rows, so it fetches in line rather than one batch ahead.

Trust, but check: before the staged records are relied on, the run-by-run answers for a
sample of the window's runs (``SAMPLE_RUNS`` promising records, ``SAMPLE_RUNS`` with staged
records) are compared with the listing, record by record (canonical JSON), over the records created
in the listed range. Any difference, or fewer than half of the sample answered (a check of
almost nothing), makes the project fall back to the runs strategy, with one line saying why.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from . import listing, logs
from .feedback import canonical_run_id, promised
from .isolate import fetch_isolating
from .listing import Listing, ListingFailed
from .walk import Row, invalid, walk

if TYPE_CHECKING:
    from tqdm import tqdm

    from .options import RunOptions
    from .runner import Runner
    from .strategy import Choice

#: Runs of each kind in the sampled check: one request of at most 100 run ids, a page or two.
SAMPLE_RUNS = 50


def run_project(runner: Runner, choice: Choice, bar: tqdm[Any]) -> None:
    """List (or resume the listing of) one project, check it, apply it; or fall back to ``runs``."""
    o, gw = runner.options, runner.gw
    opts = replace(o, window=replace(o.window, projects=(choice.project,)))
    current: Listing | None = None
    reason: str | None = None
    try:
        sid = listing.session_id(gw, runner.source, choice.project, opts.window)
        current = listing.begin(gw, choice.project, sid, opts.window, runner.summary.invocation_id, fresh=o.refetch)
        reason = current.fallback
        if reason is None and current.completed_at is None:
            listing.list_all(gw, runner.source, current, choice.records, runner.summary.invocation_id)
            _done(runner, current, None)
        if reason is None:
            reason = check_sample(runner, current, opts)
            if reason is not None:
                _done(runner, current, reason)
    except ListingFailed as exc:
        reason = exc.reason
        if current is not None:
            _done(runner, current, reason)
    summary = runner.summary
    if reason is not None:
        summary.fallbacks[choice.project] = reason
        logs.event(
            "strategy_fallback",
            f"{choice.project}: fetched run by run instead: {reason}",
            logging.WARNING,
            project=choice.project,
        )
        runner.pipeline(bar, opts)
    else:
        assert current is not None
        params = {"session_id": current.session_id, "since": opts.window.since, "until": opts.window.until}
        summary.listed_outside += gw.one("staged_outside", params)["outside"]
        gw.commit()
        summary.listed_records += current.records
        apply(runner, current, opts, bar)
    if current is not None and not runner.signals.stop.is_set():
        with gw.transaction():
            gw.execute("listing_applied", {"listing_id": current.id})


def _done(runner: Runner, current: Listing, fallback: str | None) -> None:
    delta = runner.source.unrecorded()
    with runner.gw.transaction():
        runner.gw.execute("listing_done", {"listing_id": current.id, "fallback": fallback, "requests": delta[0]})
        runner.gw.execute("count_invocation", listing.api_only(runner.summary.invocation_id, delta))
    runner.source.record(delta)
    current.fallback = fallback


def staged(
    runner: Runner, current: Listing, rows: list[Row], stale: set[str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Canonical run id -> its staged records (parsed back from their JSON text); the runs with a
    record staged by an earlier listing than ``current`` are added to ``stale`` when given.
    The caller ends the read's transaction (with its other reads: fewer round trips)."""
    ids = [c for c in (canonical_run_id(r.run_id) for r in rows) if c]
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if ids:
        for r in runner.gw.execute("staged_for_runs", {"run_ids": ids, "session_id": current.session_id}):
            out[r["run_id"]].append(json.loads(r["record"]))
            if stale is not None and r["listing_id"] != current.id:
                stale.add(r["run_id"])
    return out


def _examined_before(runner: Runner, rows: list[Row]) -> set[str]:
    """The rows' run ids (as stored) that hold a status entry (the caller ends the read's transaction)."""
    if not rows:
        return set()
    return {r["run_id"] for r in runner.gw.execute("examined_before", {"run_ids": [r.run_id for r in rows]})}


def _to_fetch(runner: Runner, current: Listing, valid: list[Row]) -> tuple[dict[str, list[dict[str, Any]]], list[Row]]:
    """The staged records of the batch, and the rows that are fetched run by run instead: a row
    examined before (re-archived, perhaps after a reviewer edited or deleted a record that an
    earlier listing staged), one whose staged copies come from an earlier listing (this pass
    listed only what was created since), and one whose staged count is not its promise."""
    stale: set[str] = set()
    have = staged(runner, current, valid, stale)
    before = _examined_before(runner, valid)
    runner.gw.commit()  # one read transaction for both
    short = []
    for r in valid:
        c = canonical_run_id(r.run_id) or ""
        if r.run_id in before or c in stale or len(have.get(c, [])) != promised(r.feedback_stats):
            short.append(r)
    return have, short


def apply(runner: Runner, current: Listing, opts: RunOptions, bar: tqdm[Any]) -> None:
    """The window's rows of the project, judged from the staged records (run by run where they fall short)."""
    for batch in walk(runner.gw, opts, runner.refetch_since, runner.settling):
        valid = [r for r in batch if invalid(r) is None]
        have, short = _to_fetch(runner, current, valid)
        fetched = fetch_isolating(runner.source, [r.run_id for r in short]) if short else {}
        runner.check_workspace(short, fetched)
        answers = {r.run_id: fetched.get(r.run_id, have.get(canonical_run_id(r.run_id) or "", [])) for r in valid}
        runner.batch(batch, answers, asked=len(short))
        bar.update(len(batch))
        if runner.signals.stop.is_set():
            break
    else:  # the walk's end: its last days may have had no row to write
        runner.settle([])


def _in_range(rec: dict[str, Any], current: Listing) -> bool:
    when = listing.created_at(rec)
    return when is not None and current.listed_from <= when <= current.listed_to


def check_sample(runner: Runner, current: Listing, opts: RunOptions) -> str | None:
    """Why the listing cannot be trusted (it differs from the run-by-run answers of a sample), or None."""
    w = opts.window
    rows = runner.gw.execute(
        "sample_runs",
        {
            "project": current.project,
            "session_id": current.session_id,
            "since": w.since,
            "until": w.until,
            "n": SAMPLE_RUNS,
            "salt": str(current.id),
        },
    )
    runner.gw.commit()
    ids = [r["run_id"] for r in rows if canonical_run_id(r["run_id"])]
    if not ids:
        return None
    got = fetch_isolating(runner.source, ids)
    have = staged(runner, current, [Row(0, rid, w.since, "object", None) for rid in ids])
    runner.gw.commit()
    missing = extra = changed = expected = answered = 0
    for rid in ids:
        answer = got[rid]
        if isinstance(answer, str):
            continue  # the run's own fetch failed: it says nothing about the listing
        answered += 1
        listed = {str(r.get("id")): _canonical(r) for r in have.get(canonical_run_id(rid) or "", [])}
        due = {str(r.get("id")): _canonical(r) for r in answer if _in_range(r, current)}
        held = {str(r.get("id")) for r in answer}
        missing += len(due.keys() - listed.keys())
        extra += len(listed.keys() - held)
        # the same record, listed with other content (a copy staged before a reviewer's edit)
        changed += sum(1 for k in due.keys() & listed.keys() if due[k] != listed[k])
        expected += len(due)
    runner.summary.sampled += answered
    if answered * 2 < len(ids):
        return f"only {answered} of the {len(ids)} sampled run(s) could be fetched run by run to check the listing"
    if missing or extra or changed:
        return (
            f"the project listing differs from the run-by-run answers for {answered} sampled run(s):"
            f" {missing} of their {expected} record(s) missing from it, {extra} listed that they do not hold,"
            f" {changed} listed otherwise than they hold"
        )
    return None


def _canonical(rec: dict[str, Any]) -> str:
    """A record compared by content: its JSON with sorted keys."""
    return json.dumps(rec, sort_keys=True)
