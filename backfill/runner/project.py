"""The project strategy for one project: list it (``runner.listing``), check a sample, apply the staged records.

The apply is the one pipeline with ``answers.Staged``: the window's rows of the project come
from the same walk (its days in order, keyset on id, the same skips), each row's outcome from
the same ``judge`` and each batch goes through the same ``Checkpoint``. Staged records of
runs that are not rows of the window are counted and never written. Once the listing is
complete and checked, the walk reads only the rows it cannot answer for (staged, promising,
examined before, unprovable): the others are proven to have no feedback and settled by the
day's mark without a checkpoint row (``domain.settling``), so that the apply's database work
follows the records, not the runs. Whatever makes the
listing fail or its check fail makes the project fall back to the runs strategy, with one
line saying why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from backfill import logs
from backfill.archive import gateway as db
from backfill.archive import staging
from backfill.domain.listing import Listing, ListingFailed
from backfill.domain.options import RunOptions
from backfill.domain.strategy import Choice
from backfill.runner.listing import Lister
from backfill.runner.summary import RunSummary


def list_and_check(
    gw: db.Gateway, lister: Lister, choice: Choice, options: RunOptions, summary: RunSummary
) -> tuple[Listing | None, str | None]:
    """List (or resume the listing of) one project and check it: the listing, and why it cannot
    be applied (the project then falls back to ``runs``), or None."""
    current: Listing | None = None
    reason: str | None = None
    try:
        sid = lister.session_id(choice.project, options.window)
        current = staging.begin(gw, choice.project, sid, options.window, summary.invocation_id, fresh=options.refetch)
        reason = current.fallback
        if reason is None and current.completed_at is None:
            lister.list_all(current, choice.records)
            lister.done(current, None)
        if reason is None:
            reason, sampled = lister.check_sample(current, options.window)
            summary.sampled += sampled
            if reason is not None:
                lister.done(current, reason)
    except ListingFailed as exc:
        reason = exc.reason
        if current is not None:
            lister.done(current, reason)
    if reason is not None:
        summary.fallbacks[choice.project] = reason
        logs.event(
            "strategy_fallback",
            f"{choice.project}: fetched run by run instead: {reason}",
            logging.WARNING,
            project=choice.project,
        )
    else:
        assert current is not None
        summary.listed_outside += staging.outside(gw, current, options.window)
        summary.listed_records += current.records
    return current, reason


def run_project(
    gw: db.Gateway,
    lister: Lister,
    choice: Choice,
    options: RunOptions,
    summary: RunSummary,
    apply: Callable[[RunOptions, Listing | None], bool],
) -> None:
    """One project, listed and applied (``apply(options, listing)``; a None listing: run by run);
    the listing is marked applied once ``apply`` went through the whole window."""
    opts = options.only(choice.project)
    current, reason = list_and_check(gw, lister, choice, opts, summary)
    finished = apply(opts, current if reason is None else None)
    if current is not None and finished:
        staging.applied(gw, current)
