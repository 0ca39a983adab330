"""What `backfill run` is asked (``RunOptions``) and what it did (``RunSummary``, rendered for the DBA)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .config import Window
from .errors import UsageError
from .pack import lower_bound

if TYPE_CHECKING:
    from .store import Written


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
    #: the first wait on a 429 without Retry-After (doubling to 60 s); see backfill/source.py
    rate_limit_first_s: float = 10.0
    #: --strategy: auto (per project, from what the database knows), runs, or project (backfill/strategy.py)
    strategy: str = "auto"

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
            (self.strategy in ("auto", "runs", "project"), "--strategy must be auto, runs or project"),
            (self.strategy != "project" or self.limit is None, "--limit works with --strategy runs or auto (runs)"),
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
    #: stopped before the window was through: by a signal (``interrupted_by``) or by the caller's ``stop``
    stopped: bool = False
    interrupted_by: int | None = None  # the signal's number, when a signal stopped it
    dry_run: bool = False
    would_be_invalid: int = 0
    rate_limit_wait_s: float = 0.0  # seconds spent waiting out 429s
    outage_wait_s: float = 0.0  # seconds spent backing off failing requests and outage probes
    runs_fetched: int = 0  # valid rows whose feedback was asked of the API
    records_fetched: int = 0  # records the API returned for them
    #: the strategy used (runs, project, mixed), auto's choice as said, and what listing saved
    strategy: str = "runs"
    choices: list[str] = field(default_factory=list)
    requests_saved: int = 0  # against the runs strategy's estimate for the same rows
    listed_records: int = 0  # records the project listings staged
    listed_outside: int = 0  # ... of runs that are not rows of the window: never written
    sampled: int = 0  # runs of the sampled checks
    fallbacks: dict[str, str] = field(default_factory=dict)  # project -> why it was fetched run by run

    def add(self, written: Written) -> None:
        """Count a batch the store wrote."""
        self.examined += written.examined
        self.enriched += written.enriched
        self.records += written.records
        self.no_feedback += written.no_feedback
        self.skipped += written.skipped
        self.failed.update(written.failed)

    @property
    def lower_bound(self) -> int:
        """The fewest requests that could have fetched what this invocation fetched (``pack.lower_bound``)."""
        return lower_bound(self.runs_fetched, self.records_fetched)

    @property
    def exit_code(self) -> int:
        if self.stopped:
            # 128 + the signal, as a shell reports it; a stop without a signal (the Python API) as SIGINT
            return 128 + (self.interrupted_by or 2)
        return 3 if sum(self.failed.values()) else 0

    @property
    def outcome(self) -> str:
        if self.stopped:
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
                f"  API requests {self.api_requests} ({self.api_errors} failed) for {self.runs_fetched} run(s)"
                f" and {self.records_fetched} record(s); lower bound {self.lower_bound}",
            ]
            out += self._strategy_lines()
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
            out += [f"  strategy     {line}" for line in self.choices[:1]] + [f"    {c}" for c in self.choices[1:]]
        return out

    def _strategy_lines(self) -> list[str]:
        if self.strategy == "runs" and not self.fallbacks:
            return [f"  strategy     runs ({self.choices[0]})"] if self.choices[:1] else []
        out = [
            f"  strategy     {self.strategy}: {self.requests_saved:,} request(s) saved against run by run;"
            f" {self.listed_records:,} record(s) listed, {self.listed_outside:,} of runs outside the window"
            f" (ignored), {self.sampled} run(s) sampled"
        ]
        out += [f"  fallback     {p}: {why}" for p, why in self.fallbacks.items()]
        return out
