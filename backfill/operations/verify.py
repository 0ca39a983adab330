"""`backfill verify`: a sample of enriched runs fetched again and compared with what is stored.

It goes through the one pipeline: the batches are the sampled rows as stored, the answers
the API's by run, and the sink compares (and with --fix, writes under the lease).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from backfill.archive import gateway as db
from backfill.archive.lease import Lease
from backfill.archive.reader import committing
from backfill.archive.writer import write
from backfill.config import Database, LangSmith, Window
from backfill.domain.records import DONE, Outcome, decide, diff
from backfill.domain.rows import Row, Tally
from backfill.errors import UsageError
from backfill.langsmith.transport import Transport
from backfill.runner.answers import ByRun
from backfill.runner.pipeline import Fetched, pipeline

Stored = dict[str, Any]  # a verify_rows row: the run as stored, with what we wrote


@dataclass
class Drift:
    """How a run's stored records differ from what the API returns now."""

    run_id: str
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def drifted(self) -> bool:
        return bool(self.added or self.changed or self.deleted or self.error)

    def line(self) -> str:
        if self.error:
            return f"{self.run_id}  not verified: {self.error}"
        return (
            f"{self.run_id}  {len(self.added)} added, {len(self.changed)} changed, "
            f"{len(self.deleted)} deleted since stored"
        )


@dataclass
class LocalChange:
    """A row whose stored records are no longer the ones we wrote (md5 in the ledger)."""

    run_id: str
    kind: str  # vanished (absent or null: re-archived) | extractor (its reduced records) | changed

    def line(self) -> str:
        what = {
            "vanished": "records vanished since we wrote them (re-archived?)",
            "extractor": "the extractor's own records replaced ours (left; see run --refetch"
            " --replace-extractor-records)",
            "changed": "records changed in the database since we wrote them",
        }[self.kind]
        return f"{self.run_id}  local change: {what}"


@dataclass
class VerifyReport:
    checked: int = 0
    drifts: list[Drift] = field(default_factory=list)
    unverified: list[Drift] = field(default_factory=list)
    fixed: int = 0
    api_requests: int = 0
    local: list[LocalChange] = field(default_factory=list)
    local_fixed: int = 0

    @property
    def exit_code(self) -> int:
        """3 drift or local changes found and left; else 1 when some runs could not be fetched; else 0."""
        if len(self.drifts) > self.fixed or len(self.local) > self.local_fixed:
            return 3
        return 1 if self.unverified else 0

    def lines(self) -> list[str]:
        out = [c.line() for c in self.local]
        out += [d.line() for d in self.drifts + self.unverified]
        totals = [sum(len(getattr(d, k)) for d in self.drifts) for k in ("added", "changed", "deleted")]
        out.append(
            f"verified {self.checked} enriched run(s) against LangSmith: {len(self.drifts)} drifted"
            f" ({totals[0]} records added, {totals[1]} changed, {totals[2]} deleted since stored);"
            f" {self.fixed} re-patched; {len(self.unverified)} not verified (API error);"
            f" {self.api_requests} API request(s)"
        )
        kinds = {k: sum(c.kind == k for c in self.local) for k in ("vanished", "changed", "extractor")}
        out.append(
            f"local changes: {len(self.local)} run(s) no longer hold the records we wrote"
            f" ({kinds['vanished']} vanished, {kinds['changed']} changed, {kinds['extractor']} the extractor's);"
            f" {self.local_fixed} re-enriched"
        )
        return out


def compare(run_id: str, stored: list[dict[str, Any]], fresh: list[dict[str, Any]]) -> Drift:
    """Records by id: added (new in the API), changed (different JSON), deleted (gone)."""
    added, changed, deleted = diff(stored, fresh)
    return Drift(run_id, added=added, changed=changed, deleted=deleted)


def _row(r: Stored) -> Row:
    return Row(r["id"], r["run_id"], r["run_date"], r["data_type"], r["feedback_stats"])


@dataclass
class _Asked:
    """Verify's answers: the runs that still hold what we wrote, and with --fix those changed
    locally (not the extractor's), asked of the API by run."""

    by_run: ByRun
    fix: bool

    def prepare(self, batch: list[Stored]) -> list[str]:
        refetch = [r for r in batch if not r["ours"] and not r["extractor"]] if self.fix else []
        return [r["run_id"] for r in batch if r["ours"]] + [r["run_id"] for r in refetch]

    def fetch(self, prepared: list[str], into: Fetched) -> None:
        self.by_run.fetch(prepared, into)


@dataclass
class _Compare:
    """Verify's sink: each run's stored records against the API's; with --fix, re-patched."""

    gw: db.Gateway
    report: VerifyReport
    fix: bool
    spent: Tally = field(default_factory=Tally)

    def accept(self, batch: list[Stored], fetched: Fetched) -> None:
        self.spent += fetched.tally

    def write(self, batch: list[Stored], fetched: Fetched) -> None:
        report, got = self.report, fetched.answers
        # Rows that no longer hold what we wrote are a local change, not drift of the API.
        ours = [r for r in batch if r["ours"]]
        changed = [r for r in batch if not r["ours"]]
        for r in changed:
            kind = "vanished" if r["vanished"] else "extractor" if r["extractor"] else "changed"
            report.local.append(LocalChange(r["run_id"], kind))
        report.checked += len(batch)
        # the extractor's records are left alone; vanished and changed ones are re-enriched
        rows, outcomes = self._redo([r for r in changed if r["run_id"] in got], got, lambda r, a: True)
        if rows:
            report.local_fixed += write(self.gw, rows, outcomes, refetch=True, replace="any").enriched
        rows, outcomes = self._redo(ours, got, self._drifted)
        if self.fix and rows:
            report.fixed += write(self.gw, rows, outcomes, refetch=True).enriched

    def _redo(
        self, stored: list[Stored], got: dict[str, Any], keep: Callable[[Stored, list[dict[str, Any]]], bool]
    ) -> tuple[list[Row], dict[str, Outcome]]:
        """The rows whose answer ``keep`` retains, with what writing them would store."""
        rows: list[Row] = []
        outcomes: dict[str, Outcome] = {}
        for r in stored:
            answer = got[r["run_id"]]
            if isinstance(answer, str):
                self.report.unverified.append(Drift(r["run_id"], error=answer))
                continue
            if not keep(r, answer):
                continue
            outcome = decide(answer, r["feedback_stats"])
            if outcome.state == DONE:
                rows.append(_row(r))
                outcomes[r["run_id"]] = outcome
        return rows, outcomes

    def _drifted(self, r: Stored, answer: list[dict[str, Any]]) -> bool:
        drift = compare(r["run_id"], r["stored"] or [], answer)
        if drift.drifted:
            self.report.drifts.append(drift)
        return drift.drifted

    def end(self) -> None:
        return None

    def unwritten(self, tally: Tally) -> None:
        return None


def verify(
    database: Database,
    langsmith: LangSmith,
    window: Window,
    *,
    sample: int | None = 100,
    fix: bool = False,
    batch_size: int = 100,
    delay_ms: int = 1000,
    stop: threading.Event | None = None,
) -> VerifyReport:
    """Re-fetch ``sample`` random enriched runs (all when None) and compare with what is stored."""
    if sample is not None and sample < 1:
        raise UsageError("--sample must be 1 or more")
    report = VerifyReport()
    stop = stop or threading.Event()
    gw = db.connect(database)
    transport = Transport(langsmith, delay_ms=delay_ms, stop=stop)
    try:
        gw.require_schema()
        if fix:  # --fix writes: under the lease, as `verify --fix` (a plain verify only reads)
            gw.lease = Lease.take(database, "verify --fix")
        read = committing(gw)
        run_ids = [
            r["run_id"] for r in read("verify_sample", {"since": window.since, "until": window.until, "sample": sample})
        ]

        def batches() -> Iterator[list[Stored]]:
            for start in range(0, len(run_ids), batch_size):
                yield read("verify_rows", {"run_ids": run_ids[start : start + batch_size]})

        sink = _Compare(gw, report, fix)
        pipeline(batches(), _Asked(ByRun(transport), fix), sink, stop)
        report.api_requests = sink.spent.requests
        return report
    finally:
        if gw.lease is not None:
            gw.lease.release()  # type: ignore[attr-defined]
        transport.close()
        gw.close()
