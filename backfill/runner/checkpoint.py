"""The sink of ``backfill run``: each row judged from its answer, the batch patched and checkpointed, days settled."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backfill.archive import gateway as db
from backfill.archive import settled
from backfill.archive.writer import write
from backfill.domain.options import RunOptions
from backfill.domain.records import FAILED, Outcome, decide
from backfill.domain.rows import Row, Tally, invalid
from backfill.domain.settling import Settling
from backfill.runner.batches import Packer
from backfill.runner.pipeline import Fetched
from backfill.runner.summary import RunSummary


def judge(batch: list[Row], fetched: Fetched, options: RunOptions) -> dict[str, Outcome]:
    """Each row's outcome: invalid without asking, failed when its fetch failed, else ``decide``."""
    outcomes: dict[str, Outcome] = {}
    for row in batch:
        bad = invalid(row)
        if bad is not None:
            outcomes[row.run_id] = bad
            continue
        got = fetched.answers[row.run_id]
        last_attempt = row.attempts + 1 >= options.max_attempts
        outcomes[row.run_id] = (
            Outcome(FAILED, "api_error", error=got)
            if isinstance(got, str)
            # a refetch never replaces stored records by fewer ones
            else decide(got, row.feedback_stats, keep_partial=last_attempt and not options.refetch)
        )
    return outcomes


@dataclass
class Checkpoint:
    """Writes each batch (patch and checkpoint in one transaction, what its fetch cost counted in
    it), then marks the days whose every row read is now checkpointed (``domain.settling``)."""

    gw: db.Gateway
    options: RunOptions
    summary: RunSummary
    settling: Settling
    packer: Packer
    #: run before a batch is written, while no other request is on the wire (the workspace guard)
    check: Callable[[list[Row], Fetched], None] | None = None
    #: the progress bar, moved by each batch written
    bar: Any = None
    #: requests fetched for batches never written: the invocation row gets them at its end
    leftover: Tally = field(default_factory=Tally)

    def accept(self, batch: list[Row], fetched: Fetched) -> None:
        if self.check is not None:
            self.check(batch, fetched)

    def write(self, batch: list[Row], fetched: Fetched) -> None:
        o = self.options
        self.summary.runs_fetched += len(fetched.asked)
        self.packer.learn(batch, fetched.answers)
        written = write(
            self.gw,
            batch,
            judge(batch, fetched, o),
            self.summary.invocation_id,
            fetched.tally,
            refetch=o.refetch,
            replace="extractor" if o.replace_extractor_records else "none",
        )
        self.summary.spent(fetched.tally)
        self.summary.add(written)
        self._settle(batch, skipped=written.skipped > 0)
        if self.bar is not None:
            self.bar.update(len(batch))

    def end(self) -> None:
        self._settle([])  # the walk's end: its last days may have had no row to write

    def unwritten(self, tally: Tally) -> None:
        self.summary.spent(tally)
        self.leftover += tally

    def _settle(self, batch: list[Row], skipped: bool = False) -> None:
        ready = self.settling.written((r.run_date for r in batch), skipped)
        proven = settled.mark(self.gw, self.settling, ready, self.summary.invocation_id)
        if proven:  # examined without feedback, by the listing's proof: no checkpoint row (domain.settling)
            self.summary.settle(proven)
            if self.bar is not None:
                self.bar.update(proven)
