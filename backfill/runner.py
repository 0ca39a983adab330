"""`backfill run`: walk rows lacking feedback, fetch their records, patch and checkpoint.

Data flow, one batch at a time: rows come out of ``runs`` (keyset walk, short read
transaction) -> feedback comes in from LangSmith (no transaction open, no lock held)
-> the patch of ``runs`` and the checkpoint rows go back in one short transaction.
A kill at any moment loses at most the batch in flight, which the next run redoes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TextIO

from tqdm import tqdm

from . import db, logs
from .config import Database, LangSmith, Window
from .errors import AlreadyRunning, ApiUnavailable, BackfillError, DatabaseError, UsageError, WrongWorkspace
from .feedback import DONE, FAILED, INVALID, NO_FEEDBACK, Outcome, decide, promised
from .source import BatchFailed, FeedbackSource, Interrupted, UrlTooLong, canonical_run_id

#: A batch whose promised runs come back empty this often is suspicious: a wrong
#: workspace/key, or feedback expired or deleted in LangSmith; the probe tells which.
EMPTY_RATIO = 0.5
EMPTY_MIN_RUNS = 3
#: The probe asks for the window's newest this many runs whose feedback_stats count records.
PROBE_RUNS = 5
#: Write transactions that hit a deadlock or lock timeout are tried this many times.
WRITE_ATTEMPTS = 3


@dataclass(frozen=True)
class RunOptions:
    """The knobs of `backfill run` (see its --help)."""

    window: Window = field(default_factory=Window.parse)
    batch_size: int = 100
    delay_ms: int = 1000
    max_attempts: int = 3
    limit: int | None = None
    dry_run: bool = False
    progress: bool = False
    max_retries: int = 5
    backoff_s: float = 0.5
    refetch: bool = False
    #: With refetch: also replace the extractor's reduced records by the API's (revert restores them).
    replace_extractor_records: bool = False
    #: --outage-wait: how long an API outage is waited out before the run stops (exit 1)
    outage_wait_s: float = 600.0
    #: the first wait on a 429 without Retry-After (doubling to 60 s); see source.py
    rate_limit_first_s: float = 10.0

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.batch_size <= 1000, "--batch-size must be between 1 and 1000"),
            (self.delay_ms >= 0, "--delay-ms must be 0 or more"),
            (self.max_attempts >= 1, "--max-attempts must be 1 or more"),
            (self.limit is None or self.limit >= 1, "--limit must be 1 or more"),
            (self.max_retries >= 1, "max_retries must be 1 or more"),
            (self.refetch or not self.replace_extractor_records, "--replace-extractor-records needs --refetch"),
            (self.outage_wait_s >= 0, "--outage-wait must be 0 or more"),
            (self.rate_limit_first_s >= 0, "rate_limit_first_s must be 0 or more"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)


@dataclass
class RunSummary:
    """What an invocation did; ``exit_code`` follows README's table."""

    invocation_id: int | None = None
    pending_at_start: int = 0
    examined: int = 0
    enriched: int = 0
    records: int = 0
    no_feedback: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    api_requests: int = 0
    api_errors: int = 0
    dropped: int = 0
    elapsed_s: float = 0.0
    interrupted_by: int | None = None
    dry_run: bool = False
    would_be_invalid: int = 0
    rate_limit_wait_s: float = 0.0  # seconds spent waiting out 429s
    outage_wait_s: float = 0.0  # seconds spent backing off failing requests and outage probes

    @property
    def exit_code(self) -> int:
        if self.interrupted_by is not None:
            return 128 + self.interrupted_by
        return 3 if sum(self.failed.values()) else 0

    @property
    def outcome(self) -> str:
        if self.interrupted_by is not None:
            return "interrupted"
        return "completed_with_failures" if sum(self.failed.values()) else "completed"

    def lines(self) -> list[str]:
        """The final summary a DBA reads on stderr."""
        failed = sum(self.failed.values())
        by_reason = ", ".join(f"{k} {v}" for k, v in sorted(self.failed.items()))
        rate = self.examined / self.elapsed_s if self.elapsed_s > 0 else 0.0
        head = "dry run: would examine" if self.dry_run else "examined"
        out = [
            f"{head} {self.examined} row(s) of {self.pending_at_start} pending in {self.elapsed_s:.1f}s"
            f" ({rate:.1f} rows/s)",
        ]
        if not self.dry_run:
            out += [
                f"  enriched     {self.enriched} row(s), {self.records} feedback record(s) stored",
                f"  no feedback  {self.no_feedback} row(s)",
                f"  failed       {failed} row(s)" + (f" ({by_reason})" if by_reason else ""),
                f"  API requests {self.api_requests} ({self.api_errors} failed)",
            ]
            if self.rate_limit_wait_s or self.outage_wait_s:
                out.append(
                    f"  waited       {self.rate_limit_wait_s:.1f}s on rate limits (429),"
                    f" {self.outage_wait_s:.1f}s on API failures and outages"
                )
            if self.dropped:
                out.append(f"  dropped      {self.dropped} record(s) for runs not asked or repeated across pages")
            if self.skipped:
                out.append(f"  skipped      {self.skipped} row(s) held or changed by another writer (next run)")
        else:
            out.append(f"  invalid      {self.would_be_invalid} row(s) would be recorded invalid, without an API call")
        return out


@dataclass
class Row:
    """A row of the window as the walk returns it (never the whole document)."""

    id: int
    run_id: str
    run_date: dt.date
    data_type: str | None
    feedback_stats: Any
    attempts: int = 0


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
    err = err or sys.stderr
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
        with _signals(stop) as (stop_event, caught):
            _locked_run(gw, langsmith, options, summary, stop_event, caught, err)
        return summary
    finally:
        summary.elapsed_s = time.monotonic() - started
        gw.close()


def follow(
    database: Database,
    langsmith: LangSmith,
    options: RunOptions,
    since: str,
    until: str | None,
    interval_s: float,
    *,
    stop: threading.Event | None = None,
    err: TextIO | None = None,
) -> int:
    """`backfill run --follow`: a pass every ``interval_s`` until SIGTERM/SIGINT; returns 0.

    The window is recomputed each pass (``--since 2d`` keeps following the newest rows).
    An API outage, a wrong workspace or a database error is reported and the next pass
    tries again; a refused API key or a missing schema ends the loop (exit 1).
    """
    err = err or sys.stderr
    logs.ensure(err)
    with _signals(stop) as (event, _caught):
        while not event.is_set():
            opts = replace(options, window=Window.parse(since, until, options.window.projects))
            try:
                summary = run(database, langsmith, opts, stop=event, err=err)
                logs.event("pass_finished", "pass: " + summary.lines()[0].strip(), **logs.summary_fields(summary))
            except Interrupted:
                break
            except (ApiUnavailable, WrongWorkspace, DatabaseError, AlreadyRunning) as exc:
                logs.event("pass_failed", f"pass failed: {exc}", logging.ERROR, error=type(exc).__name__)
            if event.wait(interval_s):
                break
    logs.event("follow_stopped", "follow: stopped cleanly")
    return 0


def _params(options: RunOptions, refetch_since: dt.datetime | None = None) -> dict[str, Any]:
    return {
        "projects": list(options.window.projects) or None,
        "max_attempts": options.max_attempts,
        "refetch_since": refetch_since,
        "replace_extractor": options.replace_extractor_records,
    }


def _days(window: Window) -> Iterator[dt.date]:
    day = window.since
    while day < window.until:
        yield day
        day += dt.timedelta(days=1)


def count_pending(gw: db.Gateway, options: RunOptions, refetch_since: dt.datetime | None = None) -> int:
    """How many rows the walk will visit (the progress bar's total), counted a day at a time."""
    query = "count_refetch" if options.refetch else "count_pending"
    params = _params(options, refetch_since)
    pending = 0
    for day in _days(options.window):
        pending += gw.one(query, {**params, "day": day})["pending"]
        gw.commit()
    return pending


def walk(gw: db.Gateway, options: RunOptions, refetch_since: dt.datetime | None = None) -> Iterator[list[Row]]:
    """Batches of rows to examine: the window's days in order, keyset on id within a day.

    A batch may span days, so that small days still fill API requests. Each read commits at
    once: no transaction stays open while the batch is fetched.
    """
    params = _params(options, refetch_since)
    query = "walk_refetch" if options.refetch else "walk_batch"
    left = options.limit if options.limit is not None else -1  # -1: no limit
    batch: list[Row] = []
    for day in _days(options.window):
        after_id = 0
        while left != 0:
            want = options.batch_size - len(batch) if left < 0 else min(options.batch_size - len(batch), left)
            rows = gw.execute(query, {**params, "day": day, "after_id": after_id, "batch_size": want})
            gw.commit()
            batch += [Row(**r) for r in rows]
            if rows:
                after_id = rows[-1]["id"]
                left = left - len(rows) if left > 0 else left
            if len(batch) == options.batch_size or left == 0:
                yield batch
                batch = []
            if len(rows) < want:
                break  # this day is done
        if left == 0:
            break
    if batch:
        yield batch


def _invalid(row: Row) -> Outcome | None:
    if canonical_run_id(row.run_id) is None:
        return Outcome(INVALID, "invalid_run_id", error=f"run_id {row.run_id[:80]!r} is not a UUID")
    if row.data_type != "object":
        return Outcome(INVALID, "not_an_object", error=f"data is a JSON {row.data_type}, not an object")
    return None


def _dry_run(
    gw: db.Gateway,
    options: RunOptions,
    summary: RunSummary,
    listing: Callable[[str, dt.date, str], None] | None,
) -> None:
    refetch_since = _refetch_since(gw) if options.refetch else None
    summary.pending_at_start = count_pending(gw, options, refetch_since)
    for batch in walk(gw, options, refetch_since):
        for row in batch:
            summary.examined += 1
            bad = _invalid(row)
            if bad is not None:
                summary.would_be_invalid += 1
            if listing:
                listing(row.run_id, row.run_date, f"invalid ({bad.reason})" if bad else "fetch")


@contextlib.contextmanager
def _signals(stop: threading.Event | None) -> Iterator[tuple[threading.Event, list[int]]]:
    """SIGINT/SIGTERM set the stop event (a second one interrupts at once)."""
    event = stop or threading.Event()
    caught: list[int] = []
    if stop is not None or threading.current_thread() is not threading.main_thread():
        yield event, caught
        return

    def handler(signum: int, _frame: object) -> None:
        if caught:
            # a second signal: abandon the batch in flight now (its transaction rolls back)
            raise Interrupted(f"interrupted again (signal {signum}): the batch in flight was abandoned")
        caught.append(signum)
        event.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield event, caught
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _locked_run(
    gw: db.Gateway,
    langsmith: LangSmith,
    options: RunOptions,
    summary: RunSummary,
    stop: threading.Event,
    caught: list[int],
    err: TextIO,
) -> None:
    """Under the database's lease (AlreadyRunning if another command holds it): renewed by a
    heartbeat through any API wait, checked inside every write transaction, released at the end."""
    with db.holding(gw, "run --refetch" if options.refetch else "run") as lease:
        _leased_run(gw, lease, langsmith, options, summary, stop, caught, err)


def _leased_run(
    gw: db.Gateway,
    lease: db.Lease,
    langsmith: LangSmith,
    options: RunOptions,
    summary: RunSummary,
    stop: threading.Event,
    caught: list[int],
    err: TextIO,
) -> None:
    refetch_since = _refetch_since(gw) if options.refetch else None
    summary.pending_at_start = count_pending(gw, options, refetch_since)
    params = {
        **{k: v for k, v in asdict(options).items() if k not in ("window", "dry_run", "progress")},
        "since": options.window.since.isoformat(),
        "until": options.window.until.isoformat(),
        "projects": list(options.window.projects),
        "refetch_since": refetch_since.isoformat() if refetch_since else None,
    }
    summary.invocation_id = gw.one(
        "start_invocation", {"params": db.Jsonb(params), "pending": summary.pending_at_start}
    )["id"]
    lease.invocation_id = summary.invocation_id
    logs.event(
        "run_started",
        f"invocation {summary.invocation_id}: {summary.pending_at_start} row(s) pending in {options.window.describe()}",
        invocation_id=summary.invocation_id,
        pending=summary.pending_at_start,
        since=options.window.since.isoformat(),
        until=options.window.until.isoformat(),
        projects=list(options.window.projects),
        refetch=options.refetch,
        batch_size=options.batch_size,
        delay_ms=options.delay_ms,
    )
    lease.check(gw)  # the lease names its invocation from the same commit on (`backfill status`)
    gw.commit()
    source = FeedbackSource(
        langsmith,
        delay_ms=options.delay_ms,
        max_retries=options.max_retries,
        backoff_s=options.backoff_s,
        stop=stop,
    )
    bar = tqdm(
        total=summary.pending_at_start if options.limit is None else min(options.limit, summary.pending_at_start),
        disable=not options.progress,
        file=err,
        unit="row",
        dynamic_ncols=True,
    )
    counted = (0, 0)  # API requests/errors already added to the invocation row
    try:
        for batch in walk(gw, options, refetch_since):
            counted = _batch(gw, source, batch, options, summary, counted)
            bar.update(len(batch))
            if stop.is_set():
                break
    except Interrupted:
        pass
    except BackfillError as exc:
        _finish(gw, summary, source, counted, "error", str(exc))
        raise
    finally:
        bar.close()
        source.close()
    if caught:
        summary.interrupted_by = caught[0]
    elif stop.is_set():
        summary.interrupted_by = signal.SIGINT
    _finish(gw, summary, source, counted, summary.outcome, None)


def _finish(
    gw: db.Gateway,
    summary: RunSummary,
    source: FeedbackSource,
    counted: tuple[int, int],
    outcome: str,
    message: str | None,
) -> None:
    summary.api_requests, summary.api_errors = source.requests, source.errors
    summary.dropped = source.stray + source.duplicates
    summary.rate_limit_wait_s, summary.outage_wait_s = source.rate_limit_wait, source.outage_wait
    # The connection may be gone (that may be why we are here): then the invocation row
    # simply stays unfinished, as after a kill; the lease is released by its own connection.
    with contextlib.suppress(DatabaseError):
        gw.rollback()
        gw.execute(
            "finish_invocation",
            {
                "invocation_id": summary.invocation_id,
                "outcome": outcome,
                "message": message,
                "api_requests": source.requests - counted[0],
                "api_errors": source.errors - counted[1],
                "rate_limit_wait_s": source.rate_limit_wait - source.counted_waits[0],
                "outage_wait_s": source.outage_wait - source.counted_waits[1],
            },
        )
        gw.commit()


def _refetch_since(gw: db.Gateway) -> dt.datetime:
    """Where a --refetch pass starts: an unfinished pass resumes with its own start time."""
    last = gw.execute("last_refetch")
    gw.commit()
    if last and last[0]["outcome"] not in ("completed", "completed_with_failures") and last[0]["since"]:
        return dt.datetime.fromisoformat(last[0]["since"])
    now: dt.datetime = gw.one("now")["now"]
    gw.commit()
    return now


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
        if not exc.needs_proof or source.last_success > exc.seq or source.healthy(exc.detail):
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


def _batch(
    gw: db.Gateway,
    source: FeedbackSource,
    batch: list[Row],
    options: RunOptions,
    summary: RunSummary,
    counted: tuple[int, int],
) -> tuple[int, int]:
    _configure(source, options)
    outcomes: dict[str, Outcome] = {}
    to_fetch: list[Row] = []
    for row in batch:
        bad = _invalid(row)
        if bad is not None:
            outcomes[row.run_id] = bad
        else:
            to_fetch.append(row)
    if to_fetch:
        fetched = fetch_isolating(source, [r.run_id for r in to_fetch])
        _check_workspace(gw, source, options, to_fetch, fetched)
        for row in to_fetch:
            got = fetched[row.run_id]
            last_attempt = row.attempts + 1 >= options.max_attempts
            outcomes[row.run_id] = (
                Outcome(FAILED, "api_error", error=got)
                if isinstance(got, str)
                # a refetch never replaces stored records by fewer ones
                else decide(got, row.feedback_stats, keep_partial=last_attempt and not options.refetch)
            )
    requests, errors = source.requests - counted[0], source.errors - counted[1]
    waits = (source.rate_limit_wait, source.outage_wait)
    write(
        gw,
        batch,
        outcomes,
        summary,
        requests,
        errors,
        refetch=options.refetch,
        replace="extractor" if options.replace_extractor_records else "none",
        rate_limit_wait_s=waits[0] - source.counted_waits[0],
        outage_wait_s=waits[1] - source.counted_waits[1],
    )
    source.counted_waits = waits
    return source.requests, source.errors


def _configure(source: FeedbackSource, options: RunOptions) -> None:
    """The outage and rate-limit knobs of ``options``, on the run's source.

    Set here, before each batch, because the source is built in ``_locked_run``, which the
    runner-lease work rewrites; passing them at construction is the tidier place once merged.
    """
    source.outage_wait_s = options.outage_wait_s
    source.rate_limit_first_s = options.rate_limit_first_s


def _check_workspace(
    gw: db.Gateway,
    source: FeedbackSource,
    options: RunOptions,
    rows: list[Row],
    fetched: dict[str, list[dict[str, Any]] | str],
) -> None:
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
    probe = _probe_runs(gw, options)
    got = fetch_isolating(source, probe) if probe else {}
    answered = [rid for rid in probe if not isinstance(got[rid], str)]
    silent = [rid for rid in answered if not got[rid]]
    if not answered or len(silent) > EMPTY_RATIO * len(answered):
        raise WrongWorkspace(
            f"LangSmith returned no feedback for {len(empty)} of {len(promising)} runs whose feedback_stats"
            f" count records, nor for {len(silent)} of the window's {len(answered)} newest such runs: is"
            " LANGSMITH_API_KEY (and LANGSMITH_WORKSPACE_ID) the workspace these runs came from?"
            " Stopped; nothing was written off"
        )


def _probe_runs(gw: db.Gateway, options: RunOptions) -> list[str]:
    """The window's newest ``PROBE_RUNS`` runs whose feedback_stats count records."""
    w = options.window
    rows = gw.execute(
        "workspace_probe_runs",
        {"since": w.since, "until": w.until, "projects": list(w.projects) or None, "n": PROBE_RUNS},
    )
    gw.commit()  # no transaction stays open while the probe is fetched
    return [r["run_id"] for r in rows if canonical_run_id(r["run_id"]) is not None]


def write(
    gw: db.Gateway,
    batch: list[Row],
    outcomes: dict[str, Outcome],
    summary: RunSummary,
    requests: int = 0,
    errors: int = 0,
    *,
    refetch: bool = False,
    replace: str = "none",
    rate_limit_wait_s: float = 0.0,
    outage_wait_s: float = 0.0,
) -> None:
    """Patch the enriched rows and checkpoint the batch, in one transaction.

    With ``refetch``, feedback_records are replaced where they are still ours; ``replace``
    ("extractor" or "any") also replaces records someone else wrote (see patch_refetch).
    The waits are the seconds the batch spent on 429s and on API failures, added to the
    invocation row.
    """
    # done rows, and a mismatch's partial records on its last attempt
    patch = [{"run_id": rid, "records": list(o.records)} for rid, o in outcomes.items() if o.records]
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            with gw.transaction():
                patched: dict[str, dict[str, Any]] = {}
                mine: list[dict[str, Any]] = []
                if patch:
                    ids = [p["run_id"] for p in patch]
                    locked = {r["run_id"]: r["id"] for r in gw.execute("lock_rows", {"run_ids": ids})}
                    mine = [
                        {"id": locked[p["run_id"]], "records": p["records"]} for p in patch if p["run_id"] in locked
                    ]
                if mine:
                    query = "patch_refetch" if refetch else "patch_batch"
                    params = {"patch": db.Jsonb(mine), "ids": [p["id"] for p in mine], "replace": replace}
                    patched = {r["run_id"]: r for r in gw.execute(query, params)}
                rows, tally = _checkpoint_rows(batch, outcomes, patched)
                gw.execute(
                    "checkpoint",
                    {"rows": db.Jsonb(rows), "invocation_id": summary.invocation_id, "refetch": refetch},
                )
                gw.execute(
                    "count_invocation",
                    {
                        "invocation_id": summary.invocation_id,
                        "examined": len(rows),
                        "enriched": tally[DONE],
                        "no_feedback": tally[NO_FEEDBACK],
                        "failed": tally[FAILED] + tally[INVALID],
                        "records": tally["records"],
                        "api_requests": requests,
                        "api_errors": errors,
                        "rate_limit_wait_s": rate_limit_wait_s,
                        "outage_wait_s": outage_wait_s,
                    },
                )
            break
        except DatabaseError as exc:
            if attempt == WRITE_ATTEMPTS or not isinstance(exc.__context__, db.RETRYABLE):
                raise
            time.sleep(0.1 * attempt)
    summary.examined += len(rows)
    summary.enriched += tally[DONE]
    summary.records += tally["records"]
    summary.no_feedback += tally[NO_FEEDBACK]
    summary.skipped += len(batch) - len(rows)
    for rid in (r["run_id"] for r in rows if r["state"] in (FAILED, INVALID)):
        o = outcomes[rid]
        summary.failed[o.reason or o.state] += 1


def _checkpoint_rows(
    batch: list[Row], outcomes: dict[str, Outcome], patched: dict[str, dict[str, Any]]
) -> tuple[list[dict[str, Any]], Counter[str]]:
    rows: list[dict[str, Any]] = []
    tally: Counter[str] = Counter()
    for row in batch:
        o = outcomes[row.run_id]
        if o.records and row.run_id not in patched:
            # another writer holds the row, or gave it feedback_records meanwhile: not ours to
            # mark; a row still lacking records is walked again by the next run
            continue
        rows.append(
            {
                "run_id": row.run_id,
                "run_date": row.run_date.isoformat(),
                "state": o.state,
                "reason": o.reason,
                "records": len(o.records),
                "stats_count": promised(row.feedback_stats),
                "prior": patched[row.run_id]["prior"] if row.run_id in patched else None,
                "prior_records": patched[row.run_id]["prior_records"] if row.run_id in patched else None,
                "row_id": row.id,
                "records_md5": patched[row.run_id]["records_md5"] if row.run_id in patched else None,
                "last_error": o.error,
            }
        )
        tally[o.state] += 1
        tally["records"] += len(o.records)
    return rows, tally
