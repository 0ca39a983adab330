"""`backfill run`: one invocation under the lease, each project's strategy through the one pipeline.

Data flow: rows come out of ``runs`` (``archive.reader``: keyset walk, short read
transactions) -> feedback comes in from LangSmith (``langsmith``: no transaction open, no
lock held) -> the patch of ``runs`` and the checkpoint rows go back in one short transaction
(``archive.writer``). A kill at any moment loses at most the batch in flight, which the next
run redoes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TextIO

from tqdm import tqdm

from backfill import logs
from backfill.archive import gateway as db
from backfill.archive import ledger, settled
from backfill.archive.lease import Lease, holding
from backfill.archive.reader import pending_by_project, refetch_since, walk
from backfill.config import Database, LangSmith
from backfill.domain.listing import Listing
from backfill.domain.options import RunOptions
from backfill.domain.rows import Row, Tally, invalid
from backfill.domain.settling import Settling
from backfill.domain.strategy import Choice, used
from backfill.errors import BackfillError, DatabaseError, Interrupted, UsageError
from backfill.langsmith.transport import Transport
from backfill.runner.answers import ByRun, Staged
from backfill.runner.batches import Packer, packed
from backfill.runner.checkpoint import Checkpoint
from backfill.runner.guard import WorkspaceGuard
from backfill.runner.pipeline import Fetched, Nothing, pipeline
from backfill.runner.planning import plan
from backfill.runner.preflight import Preflight
from backfill.runner.project import Projects
from backfill.runner.signals import Signals, handling
from backfill.runner.summary import RunSummary

__all__ = ["RunOptions", "RunSummary", "run", "run_with"]


def run(
    database: Database,
    langsmith: LangSmith | None,
    options: RunOptions,
    *,
    stop: threading.Event | None = None,
    listing: Callable[[str, dt.date, str], None] | None = None,
    err: TextIO | None = None,
) -> RunSummary:
    """Backfill the window; the Python API behind `backfill run`.

    ``stop`` (set it to stop after the current batch) defaults to one set by SIGINT/SIGTERM.
    ``listing(run_id, run_date, action)`` receives each row of a --dry-run.
    """
    if options.dry_run:
        return run_with(database, langsmith, options, Signals(), listing=listing, err=err)
    with handling(stop) as signals:
        return run_with(database, langsmith, options, signals, listing=listing, err=err)


def run_with(
    database: Database,
    langsmith: LangSmith | None,
    options: RunOptions,
    signals: Signals,
    *,
    listing: Callable[[str, dt.date, str], None] | None = None,
    err: TextIO | None = None,
) -> RunSummary:
    """``run`` under signals handled by the caller (``follow`` handles them for all its passes)."""
    summary = RunSummary(dry_run=options.dry_run)
    started = time.monotonic()
    gw = db.connect(database)
    try:
        gw.require_schema()
        if options.dry_run:
            dry_run(gw, options, summary, signals.stop, listing)
            return summary
        if langsmith is None:
            raise UsageError("LangSmith settings are required unless --dry-run")
        checks = Preflight(options.window)
        checks.database(gw)  # before the lease: a role that may not run may not take it either
        with holding(gw, "run --refetch" if options.refetch else "run") as lease:
            Invocation(gw, lease, langsmith, options, summary, signals, err or sys.stderr, checks).run()
        return summary
    finally:
        summary.elapsed_s = time.monotonic() - started
        gw.close()


class DryRunCount:
    """The sink of ``--dry-run``: counts what the walk would examine, and which rows are invalid."""

    def __init__(self, summary: RunSummary, listing: Callable[[str, dt.date, str], None] | None) -> None:
        self.summary, self.listing = summary, listing

    def accept(self, batch: list[Row], fetched: Fetched) -> None:
        return None

    def write(self, batch: list[Row], fetched: Fetched) -> None:
        for row in batch:
            self.summary.examined += 1
            bad = invalid(row)
            if bad is not None:
                self.summary.would_be_invalid += 1
            if self.listing:
                self.listing(row.run_id, row.run_date, f"invalid ({bad.reason})" if bad else "fetch")

    def end(self) -> None:
        return None

    def unwritten(self, tally: Any) -> None:
        return None


def dry_run(
    gw: db.Gateway,
    options: RunOptions,
    summary: RunSummary,
    stop: threading.Event,
    listing: Callable[[str, dt.date, str], None] | None,
) -> None:
    """What `backfill run` would examine, and the plan: the walk through the pipeline, nothing asked or written."""
    since = refetch_since(gw) if options.refetch else None
    pending = pending_by_project(gw, options, since)
    summary.pending_at_start = sum(pending.values())
    plan(gw, options, summary, pending)
    pipeline(walk(gw, options, since), Nothing(), DryRunCount(summary, listing), stop)


class Invocation:
    """One invocation under the database's lease: its row, its transport, each project's strategy.

    The lease (AlreadyRunning if another command holds it) is renewed by a heartbeat through
    any API wait and checked inside every write transaction. Before the first row is marked,
    the pre-flight's API probe (``Preflight.api``: key, endpoint, workspace) must pass.
    """

    def __init__(
        self,
        gw: db.Gateway,
        lease: Lease,
        langsmith: LangSmith,
        options: RunOptions,
        summary: RunSummary,
        signals: Signals,
        err: TextIO,
        checks: Preflight,
    ) -> None:
        self.gw, self.lease, self.options, self.summary, self.signals, self.err = (
            gw,
            lease,
            options,
            summary,
            signals,
            err,
        )
        self.checks = checks  # its database part passed (``run_with``); its API part is ``_preflight``
        self.uncounted = Tally()  # requests no batch was charged with and no row counts yet
        self.transport = Transport(
            langsmith,
            delay_ms=options.delay_ms,
            max_retries=options.max_retries,
            backoff_s=options.backoff_s,
            stop=signals.stop,
            abandon=signals.abandon,
            outage_wait_s=options.outage_wait_s,
            rate_limit_first_s=options.rate_limit_first_s,
        )
        self.refetch_since: dt.datetime | None = None
        #: each project's strategy (``plan``); empty: the runs strategy over the window as asked
        self.choices: list[Choice] = []
        self.packer = Packer(lambda: min(self.transport.max_ids, options.batch_size))
        self.settling = Settling()  # the days this walk may mark settled (``domain.settling``)
        self.guard = WorkspaceGuard(gw, self.transport, options.window)
        self.sinks: list[Checkpoint] = []
        self.bar: tqdm[Any] | None = None

    def run(self) -> None:
        """Start the invocation row, walk the batches, finish the row (whatever stopped the walk)."""
        self._start()
        # a second signal cancels the query on the wire (libpq's cancel request, signal-safe)
        self.signals.cancels.append(self.gw.cancel)
        self.gw.abandon = self.signals.abandon
        o = self.options
        total = self.summary.pending_at_start if o.limit is None else min(o.limit, self.summary.pending_at_start)
        self.bar = tqdm(total=total, disable=not o.progress, file=self.err, unit="row", dynamic_ncols=True)
        try:
            self._preflight()
            self._strategies()
        except Interrupted:
            pass
        except DatabaseError as exc:
            if not self.signals.abandon.is_set():  # else: the query the second signal cancelled
                self._finish("error", str(exc))
                raise
        except BackfillError as exc:
            self._finish("error", str(exc))
            raise
        finally:
            self.bar.close()
            self.transport.close()
            self.signals.cancels.remove(self.gw.cancel)
            self.gw.abandon = None
        if self.signals.signum is not None or self.signals.stop.is_set():
            self.summary.stopped = True
            self.summary.interrupted_by = self.signals.signum  # None: the caller's stop, no signal
        self._finish(self.summary.outcome, None)

    def _preflight(self) -> None:
        """Key, endpoint and workspace, asked before any row is marked; with nothing pending nothing
        can be marked, and a run asks the API nothing. Its requests and waits are the run's; the
        records it fetched are not (no row gets them): they stay out of the counts."""
        if not self.summary.pending_at_start:
            return
        tally = Tally()
        try:
            self.checks.api(self.gw, self.transport, tally)
        finally:
            tally.records = tally.dropped = 0
            self.summary.spent(tally)
            self.uncounted += tally  # if the probe failed, on the invocation row when it is finished
        with self.gw.transaction():
            ledger.count_api(self.gw, self.summary.invocation_id, self.uncounted)
        self.uncounted = Tally()

    def _strategies(self) -> None:
        """The projects listed one after the other (each while the one before is applied), then
        the others run by run.

        Without a project to list, the runs strategy walks the window exactly as asked.
        """
        listed = [c for c in self.choices if c.strategy == "project"]
        if not listed:
            self.apply(self.options, None)
            return
        rest = tuple(c.project for c in self.choices if c.strategy == "runs")
        # the walks together cover the window as asked: a day is marked once each has ended it
        self.settling.cover(len(listed) + bool(rest), self.options.window, (c.project for c in self.choices))
        projects = Projects(
            self.gw, self.transport, self.summary, self.apply, self.signals.stop, self._settle_s, self.signals.cancels
        )
        projects.run(listed, self.options)
        if self.signals.stop.is_set():
            return
        if rest:
            self.apply(self.options.only(*rest), None)

    def apply(self, options: RunOptions, listing: Listing | None) -> bool:
        """``options``' window through the pipeline: answered from ``listing``'s staged records,
        or run by run (packed by promise) without one; whether it went through the whole window."""
        rows = walk(self.gw, options, self.refetch_since, self.settling, listing)
        sink = Checkpoint(self.gw, self.options, self.summary, self.settling, self.packer, self.guard.check, self.bar)
        self.sinks.append(sink)
        if listing is None:
            pipeline(packed(rows, self.packer), ByRun(self.transport), sink, self.signals.stop, self._settle_s)
        else:
            answers = Staged(self.gw, self.transport, listing)
            pipeline(rows, answers, sink, self.signals.stop, self._settle_s)
        return not self.signals.stop.is_set()

    @property
    def _settle_s(self) -> float:
        return self.transport.settings.timeout_s + 1

    def _start(self) -> None:
        o, summary = self.options, self.summary
        self.refetch_since = refetch_since(self.gw) if o.refetch else None
        self.settling = settled.horizon(self.gw, o)
        pending = pending_by_project(self.gw, o, self.refetch_since)
        summary.pending_at_start = sum(pending.values())
        params = {
            **{k: v for k, v in asdict(o).items() if k not in ("window", "dry_run", "progress")},
            "since": o.window.since.isoformat(),
            "until": o.window.until.isoformat(),
            "projects": list(o.window.projects),
            "refetch_since": self.refetch_since.isoformat() if self.refetch_since else None,
        }
        summary.invocation_id = ledger.start(self.gw, params, summary.pending_at_start)
        self.lease.invocation_id = summary.invocation_id
        logs.event(
            "run_started",
            f"invocation {summary.invocation_id}: {summary.pending_at_start} row(s) pending in {o.window.describe()}",
            invocation_id=summary.invocation_id,
            pending=summary.pending_at_start,
            since=o.window.since.isoformat(),
            until=o.window.until.isoformat(),
            projects=list(o.window.projects),
            refetch=o.refetch,
            batch_size=o.batch_size,
            delay_ms=o.delay_ms,
        )
        self.lease.check(self.gw)  # the lease names its invocation from the same commit on (`backfill status`)
        self.gw.commit()
        self.choices = plan(self.gw, o, summary, pending)
        self._record_strategy(used(self.choices, summary.fallbacks, 0)[0], 0)  # a killed run's row says it too
        self.gw.commit()

    def _finish(self, outcome: str, message: str | None) -> None:
        s = self.summary
        s.strategy, s.requests_saved = used(self.choices, s.fallbacks, s.api_requests)
        leftover = Tally()
        leftover += self.uncounted
        for sink in self.sinks:
            leftover += sink.leftover
        # The connection may be gone (that may be why we are here): then the invocation row
        # simply stays unfinished, as after a kill; the lease is released by its own connection.
        with contextlib.suppress(DatabaseError):
            self.gw.rollback()
            ledger.finish(self.gw, s.invocation_id, outcome, message, leftover)
            self._record_strategy(s.strategy, s.requests_saved)
            self.gw.commit()

    def _record_strategy(self, name: str, saved: int) -> None:
        ledger.strategy(self.gw, self.summary.invocation_id, name, saved, {c.project: c.strategy for c in self.choices})
