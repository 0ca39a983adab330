"""`backfill run`: orchestrates the walk, the source and the store, one batch at a time.

Data flow: rows come out of ``runs`` (``walk``: keyset walk, short read transactions) ->
feedback comes in from LangSmith (``source``/``isolate``: no transaction open, no lock held)
-> the patch of ``runs`` and the checkpoint rows go back in one short transaction
(``store``). A kill at any moment loses at most the batch in flight, which the next run
redoes. ``Runner`` holds the collaborators of one invocation; ``signals`` and ``follow``
live apart.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from functools import partial
from typing import Any, TextIO

from tqdm import tqdm

from . import db, logs, stage, strategy
from .ahead import Ahead
from .config import Database, LangSmith
from .errors import BackfillError, DatabaseError, Interrupted, UsageError, WrongWorkspace
from .feedback import FAILED, Outcome, canonical_run_id, decide, promised
from .isolate import fetch_isolating
from .options import RunOptions, RunSummary
from .pack import pack, scaled
from .settle import Settling, horizon
from .signals import Signals, handling
from .source import FeedbackSource
from .store import ApiCounts, write
from .walk import Row, invalid, pending_by_project, refetch_since, walk

#: A batch whose promised runs come back empty this often is suspicious: a wrong
#: workspace/key, or feedback expired or deleted in LangSmith; the probe tells which.
EMPTY_RATIO = 0.5
EMPTY_MIN_RUNS = 3
#: The probe asks for the window's newest this many runs whose feedback_stats count records.
PROBE_RUNS = 5

__all__ = ["RunOptions", "RunSummary", "Runner", "fetch_isolating", "run", "run_with"]


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
            _dry_run(gw, options, summary, listing)
            return summary
        if langsmith is None:
            raise UsageError("LangSmith settings are required unless --dry-run")
        with db.holding(gw, "run --refetch" if options.refetch else "run") as lease:
            Runner(gw, lease, langsmith, options, summary, signals, err or sys.stderr).run()
        return summary
    finally:
        summary.elapsed_s = time.monotonic() - started
        gw.close()


def _dry_run(
    gw: db.Gateway,
    options: RunOptions,
    summary: RunSummary,
    listing: Callable[[str, dt.date, str], None] | None,
) -> None:
    since = refetch_since(gw) if options.refetch else None
    pending = pending_by_project(gw, options, since)
    summary.pending_at_start = sum(pending.values())
    strategy.plan(gw, options, summary, pending)
    for batch in walk(gw, options, since):
        for row in batch:
            summary.examined += 1
            bad = invalid(row)
            if bad is not None:
                summary.would_be_invalid += 1
            if listing:
                listing(row.run_id, row.run_date, f"invalid ({bad.reason})" if bad else "fetch")


def _promise(row: Row) -> int:
    """What the row's feedback_stats promise; an invalid row is never asked, so it promises nothing."""
    return 0 if invalid(row) is not None else promised(row.feedback_stats)


class Runner:
    """One invocation under the database's lease: its gateway, source, lease, options, summary and signals.

    The lease (AlreadyRunning if another command holds it) is renewed by a heartbeat through
    any API wait and checked inside every write transaction.
    """

    def __init__(
        self,
        gw: db.Gateway,
        lease: db.Lease,
        langsmith: LangSmith,
        options: RunOptions,
        summary: RunSummary,
        signals: Signals,
        err: TextIO,
    ) -> None:
        self.gw, self.lease, self.options, self.summary, self.signals, self.err = (
            gw,
            lease,
            options,
            summary,
            signals,
            err,
        )
        self.source = FeedbackSource(
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
        #: each project's strategy (``strategy.plan``); empty: the runs strategy over the window as asked
        self.choices: list[strategy.Choice] = []
        # records promised by the runs fetched so far, and received for them (``pack.scaled``)
        self.promised = self.received = 0
        self.settling = Settling()  # the days this walk may mark settled (``settle``)

    def run(self) -> None:
        """Start the invocation row, walk the batches, finish the row (whatever stopped the walk)."""
        self._start()
        # a second signal cancels the query on the wire (libpq's cancel request, signal-safe)
        self.signals.cancels.append(self.gw.cancel)
        self.gw.abandon = self.signals.abandon
        o = self.options
        total = self.summary.pending_at_start if o.limit is None else min(o.limit, self.summary.pending_at_start)
        bar = tqdm(total=total, disable=not o.progress, file=self.err, unit="row", dynamic_ncols=True)
        try:
            self._strategies(bar)
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
            bar.close()
            self.source.close()
            self.signals.cancels.remove(self.gw.cancel)
            self.gw.abandon = None
        if self.signals.signum is not None or self.signals.stop.is_set():
            self.summary.stopped = True
            self.summary.interrupted_by = self.signals.signum  # None: the caller's stop, no signal
        self._finish(self.summary.outcome, None)

    def _strategies(self, bar: tqdm[Any]) -> None:
        """The projects listed (``stage``) one after the other, then the others run by run.

        Without a project to list, the runs strategy walks the window exactly as asked.
        """
        listed = [c for c in self.choices if c.strategy == "project"]
        if not listed:
            self.pipeline(bar, self.options)
            return
        rest = tuple(c.project for c in self.choices if c.strategy == "runs")
        # the walks together cover the window as asked: a day is marked once each has ended it (``settle``)
        self.settling.cover(len(listed) + bool(rest), self.options.window, (c.project for c in self.choices))
        for choice in listed:
            stage.run_project(self, choice, bar)
            if self.signals.stop.is_set():
                return
        if rest:
            self.pipeline(bar, replace(self.options, window=replace(self.options.window, projects=rest)))

    def pipeline(self, bar: tqdm[Any], options: RunOptions) -> None:
        """The runs strategy over ``options``' window: batch N is checked, patched and checkpointed
        while the request of batch N+1 is on the wire.

        Only the fetch runs ahead (``ahead.Ahead``, one batch, the worker alone uses the
        source); reads and writes stay on this thread. After a stop, the batch fetched ahead
        is not written: nothing of it is marked, as nothing of a batch in flight ever was.
        """
        batches = self._requests(options)
        current = next(batches, None)
        pending = Ahead(partial(self._fetch, current)) if current else None
        try:
            while current is not None and pending is not None:
                fetched = pending.result()
                pending = None
                self.check_workspace([r for r in current if r.run_id in fetched], fetched)
                upcoming = None if self.signals.stop.is_set() else next(batches, None)
                if upcoming is not None:
                    pending = Ahead(partial(self._fetch, upcoming))
                self.batch(current, fetched)
                bar.update(len(current))
                if self.signals.stop.is_set():
                    break
                current = upcoming
            if current is None:  # the walk's end: its last days may have had no row to write
                self.settle([])
        finally:
            if pending is not None:  # stopped, or failed writing: let the worker end (its batch is dropped)
                pending.settle(self.source.settings.timeout_s + 1)

    def _fetch(self, batch: list[Row]) -> dict[str, list[dict[str, Any]] | str]:
        """The worker's part: the records of the batch's valid rows (no database)."""
        run_ids = [r.run_id for r in batch if invalid(r) is None]
        return fetch_isolating(self.source, run_ids) if run_ids else {}

    def _requests(self, options: RunOptions) -> Iterator[list[Row]]:
        """The walk's rows regrouped by ``pack``: the rows of one request are written together.

        A request is sent once it is closed (the next run promising records did not fit, or it
        names its most ids); the last, open one waits for the walk's next rows. At most one
        request's rows are held over between reads.
        """
        held: list[Row] = []
        for batch in walk(self.gw, options, self.refetch_since, self.settling):
            held += batch
            most = min(self.source.max_ids, self.options.batch_size)
            sizes = pack(self._promises(held), most)
            if sizes and sizes[-1] < most:
                sizes.pop()  # still open
            for size in sizes:
                yield held[:size]
                held = held[size:]
        for size in pack(self._promises(held), min(self.source.max_ids, self.options.batch_size)):
            yield held[:size]
            held = held[size:]

    def _promises(self, rows: list[Row]) -> list[float]:
        factor = scaled(self.promised, self.received)
        return [_promise(r) * factor for r in rows]

    def _start(self) -> None:
        o, summary = self.options, self.summary
        self.refetch_since = refetch_since(self.gw) if o.refetch else None
        self.settling = horizon(self.gw, o)
        pending = pending_by_project(self.gw, o, self.refetch_since)
        summary.pending_at_start = sum(pending.values())
        params = {
            **{k: v for k, v in asdict(o).items() if k not in ("window", "dry_run", "progress")},
            "since": o.window.since.isoformat(),
            "until": o.window.until.isoformat(),
            "projects": list(o.window.projects),
            "refetch_since": self.refetch_since.isoformat() if self.refetch_since else None,
        }
        summary.invocation_id = self.gw.one(
            "start_invocation", {"params": db.Jsonb(params), "pending": summary.pending_at_start}
        )["id"]
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
        self.choices = strategy.plan(self.gw, o, summary, pending)
        self._record_strategy(strategy.used(self.choices, summary)[0], 0)  # a killed run's row says it too
        self.gw.commit()

    def _finish(self, outcome: str, message: str | None) -> None:
        s, src = self.summary, self.source
        s.api_requests, s.api_errors = src.requests_sent, src.requests_failed
        s.dropped = src.stray + src.duplicates
        s.rate_limit_wait_s, s.outage_wait_s = src.rate_limit_wait, src.outage_wait
        s.records_fetched = src.records_received
        s.strategy, s.requests_saved = strategy.used(self.choices, s)
        left = src.unrecorded()
        # The connection may be gone (that may be why we are here): then the invocation row
        # simply stays unfinished, as after a kill; the lease is released by its own connection.
        with contextlib.suppress(DatabaseError):
            self.gw.rollback()
            self.gw.execute(
                "finish_invocation",
                {
                    "invocation_id": s.invocation_id,
                    "outcome": outcome,
                    "message": message,
                    "api_requests": left[0],
                    "api_errors": left[1],
                    "rate_limit_wait_s": left[2],
                    "outage_wait_s": left[3],
                },
            )
            self._record_strategy(s.strategy, s.requests_saved)
            self.gw.commit()

    def _record_strategy(self, name: str, saved: int) -> None:
        params = {
            "invocation_id": self.summary.invocation_id,
            "strategy": name,
            "requests_saved": saved,
            "choice": db.Jsonb({c.project: c.strategy for c in self.choices}),
        }
        self.gw.execute("invocation_strategy", params)

    def batch(self, batch: list[Row], fetched: dict[str, list[dict[str, Any]] | str], asked: int | None = None) -> None:
        """Decide each row's outcome from what was ``fetched`` (``_fetch``, or staged: then ``asked``
        of the rows were fetched from the API), then write the batch."""
        o, source = self.options, self.source
        outcomes: dict[str, Outcome] = {}
        to_fetch: list[Row] = []
        for row in batch:
            bad = invalid(row)
            if bad is not None:
                outcomes[row.run_id] = bad
            else:
                to_fetch.append(row)
        if to_fetch:
            self.summary.runs_fetched += len(to_fetch) if asked is None else asked
            answered = [r for r in to_fetch if not isinstance(fetched[r.run_id], str)]
            self.promised += sum(_promise(r) for r in answered)
            self.received += sum(len(fetched[r.run_id]) for r in answered)
            for row in to_fetch:
                got = fetched[row.run_id]
                last_attempt = row.attempts + 1 >= o.max_attempts
                outcomes[row.run_id] = (
                    Outcome(FAILED, "api_error", error=got)
                    if isinstance(got, str)
                    # a refetch never replaces stored records by fewer ones
                    else decide(got, row.feedback_stats, keep_partial=last_attempt and not o.refetch)
                )
        delta = source.unrecorded()
        written = write(
            self.gw,
            batch,
            outcomes,
            self.summary.invocation_id,
            ApiCounts(*delta),
            refetch=o.refetch,
            replace="extractor" if o.replace_extractor_records else "none",
        )
        source.record(delta)
        self.summary.add(written)
        self.settle(batch, skipped=written.skipped > 0)

    def settle(self, batch: list[Row], skipped: bool = False) -> None:
        """Mark the days whose every row read is now checkpointed (``settle``), after the batch's commit."""
        ready = self.settling.written((r.run_date for r in batch), skipped)
        self.settling.mark(self.gw, ready, self.summary.invocation_id)

    def check_workspace(self, rows: list[Row], fetched: dict[str, list[dict[str, Any]] | str]) -> None:
        """Stop (``WrongWorkspace``) if the API key is not the workspace the runs came from.

        A batch where most runs whose feedback_stats promise records come back empty raises
        the question, but cannot answer it: a key of another workspace gets [] for everything,
        and so do runs whose feedback expired or was deleted in LangSmith, which are the oldest
        ones, where the walk starts (deciding from the batch alone stopped every run at that
        same first batch, for ever). So the question goes to a probe that deleted feedback
        cannot fool: the window's newest runs whose feedback_stats promise records. A wrong key
        gets nothing for (most of) them; then the run stops, writing nobody off. Otherwise the
        empty runs are ``failed``/``mismatch`` (``decide``), retried up to --max-attempts, and
        the walk goes on to newer days.
        """
        promising = [r for r in rows if promised(r.feedback_stats) > 0 and not isinstance(fetched[r.run_id], str)]
        empty = [r for r in promising if not fetched[r.run_id]]
        if len(promising) < EMPTY_MIN_RUNS or len(empty) <= EMPTY_RATIO * len(promising):
            return
        probe = self._probe_runs()
        got = fetch_isolating(self.source, probe) if probe else {}
        answered = [rid for rid in probe if not isinstance(got[rid], str)]
        silent = [rid for rid in answered if not got[rid]]
        if not answered or len(silent) > EMPTY_RATIO * len(answered):
            raise WrongWorkspace(
                f"LangSmith returned no feedback for {len(empty)} of {len(promising)} runs whose feedback_stats"
                f" count records, nor for {len(silent)} of the window's {len(answered)} newest such runs: is"
                " LANGSMITH_API_KEY (and LANGSMITH_WORKSPACE_ID) the workspace these runs came from?"
                " Stopped; nothing was written off"
            )

    def _probe_runs(self) -> list[str]:
        """The window's newest ``PROBE_RUNS`` runs whose feedback_stats count records."""
        w = self.options.window
        rows = self.gw.execute(
            "workspace_probe_runs",
            {"since": w.since, "until": w.until, "projects": list(w.projects) or None, "n": PROBE_RUNS},
        )
        self.gw.commit()  # no transaction stays open while the probe is fetched
        return [r["run_id"] for r in rows if canonical_run_id(r["run_id"]) is not None]
