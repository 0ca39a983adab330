"""Where a batch's answers come from: the API run by run, or a project's staged records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backfill.archive import gateway as db
from backfill.archive import staging
from backfill.domain.listing import Listing
from backfill.domain.records import canonical_run_id, promised
from backfill.domain.rows import Row, invalid
from backfill.langsmith.by_run import fetch_isolating
from backfill.langsmith.transport import Transport
from backfill.runner.pipeline import Fetched


@dataclass
class ByRun:
    """Every valid row of the batch asked of the API by run id, a refused request isolated."""

    transport: Transport

    def prepare(self, batch: list[Row]) -> list[str]:
        return [r.run_id for r in batch if invalid(r) is None]

    def fetch(self, prepared: list[str], into: Fetched) -> None:
        into.asked = prepared
        into.answers = dict(fetch_isolating(self.transport, prepared, into.tally)) if prepared else {}


@dataclass
class Staged:
    """A project's rows answered from the records its listing staged; the API is asked, run by
    run, only for the rows the staged records may not serve:

    * a row examined before (it holds a status entry: re-archived or walked again, its staged
      copy may predate a reviewer's edit or deletion),
    * a row whose staged records an earlier listing staged (a pass that extends a listing
      lists only what was created since),
    * a row whose staged records are not as many as its feedback_stats promise (feedback
      created after the listing began or deleted since, or a record the listing missed).

    A row with none staged and none promised is answered with no records. Under a closed
    horizon the walk (``archive.reader.walk`` with the listing) brings only the rows the
    listing cannot settle (staged records, records promised, examined before, unprovable):
    the others, proven to have none, are settled by the day's mark unread (``domain.settling``).
    """

    gw: db.Gateway
    transport: Transport
    listing: Listing

    def prepare(self, batch: list[Row]) -> tuple[dict[str, list[dict[str, Any]]], list[Row]]:
        valid = [r for r in batch if invalid(r) is None]
        stale: set[str] = set()
        have = staging.staged(self.gw, self.listing, [r.run_id for r in valid], stale)
        before = staging.examined_before(self.gw, valid)
        self.gw.commit()  # one read transaction for both
        answers: dict[str, list[dict[str, Any]]] = {}
        short: list[Row] = []
        for r in valid:
            c = canonical_run_id(r.run_id) or ""
            if r.run_id in before or c in stale or len(have.get(c, [])) != promised(r.feedback_stats):
                short.append(r)
            else:
                answers[r.run_id] = have.get(c, [])
        return answers, short

    def fetch(self, prepared: tuple[dict[str, list[dict[str, Any]]], list[Row]], into: Fetched) -> None:
        staged, short = prepared
        into.asked = [r.run_id for r in short]
        into.answers = dict(staged)
        if short:
            into.answers.update(fetch_isolating(self.transport, into.asked, into.tally))
