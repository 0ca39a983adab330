"""What `backfill run` is asked: the knobs of one invocation, checked when made."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from backfill.config import Window
from backfill.errors import UsageError


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
    #: the first wait on a 429 without Retry-After (doubling to 60 s); see backfill/langsmith/transport.py
    rate_limit_first_s: float = 10.0
    #: --strategy: auto (per project, from what the database knows), runs, or project (backfill/domain/strategy.py)
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

    @property
    def marks_days(self) -> bool:
        """Whether a walk under these options may mark the days it reads whole as settled."""
        return not (self.refetch or self.dry_run or self.limit is not None or self.window.projects)

    def only(self, *projects: str) -> RunOptions:
        """The same options over these projects of the window."""
        return replace(self, window=replace(self.window, projects=tuple(projects)))
