"""What `backfill run` did (``RunSummary``), counted batch by batch and rendered for the DBA."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from backfill.domain.packing import lower_bound
from backfill.domain.rows import Tally, Written
from backfill.domain.units import count, duration


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
    #: rows examined without feedback by a listing's proof: settled by the day's mark, no checkpoint row
    settled: int = 0
    #: the plan's estimate: requests expected (``runner.planning``), and the pacing they are made at
    expected_requests: int = 0
    delay_ms: int = 0

    def spent(self, tally: Tally) -> None:
        """Count requests made for this invocation (a batch's, a listing slice's, a probe's)."""
        self.api_requests += tally.requests
        self.api_errors += tally.errors
        self.rate_limit_wait_s += tally.rate_limit_wait_s
        self.outage_wait_s += tally.outage_wait_s
        self.records_fetched += tally.records
        self.dropped += tally.dropped

    def listed(self, part: RunSummary) -> None:
        """Count what a project's listing, run on the worker into ``part``, did."""
        for name in ("api_requests", "api_errors", "rate_limit_wait_s", "outage_wait_s", "records_fetched", "dropped"):
            setattr(self, name, getattr(self, name) + getattr(part, name))
        self.sampled += part.sampled
        self.fallbacks.update(part.fallbacks)
        self.listed_outside += part.listed_outside
        self.listed_records += part.listed_records

    def add(self, written: Written) -> None:
        """Count a batch the archive wrote."""
        self.examined += written.examined
        self.enriched += written.enriched
        self.records += written.records
        self.no_feedback += written.no_feedback
        self.skipped += written.skipped
        self.failed.update(written.failed)

    def settle(self, rows: int) -> None:
        """Count rows a mark settled without a checkpoint row (examined, no feedback)."""
        self.examined += rows
        self.no_feedback += rows
        self.settled += rows

    @property
    def lower_bound(self) -> int:
        """The fewest requests that could have fetched what this invocation fetched (``packing.lower_bound``)."""
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
                f"  no feedback  {self.no_feedback} row(s)"
                + (f", {self.settled} of them settled by the listing without a checkpoint row" if self.settled else ""),
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
            out.append(f"  estimate     {self.estimate()}")
        return out

    def estimate(self) -> str:
        """What the plan expects to cost: requests, and the time the pacing alone takes for them."""
        n = self.expected_requests
        floor = duration(n * self.delay_ms / 1000)
        return f"~{count(n, 'API request')}, at least {floor} at --delay-ms {self.delay_ms} (the pacing alone)"

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
