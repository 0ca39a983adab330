"""The write side: the patch of ``runs`` and the checkpoint of the batch, in one transaction.

``write`` retries a transaction that hit a deadlock or a lock timeout, and returns what it
counted (``Written``); the invocation row gets the same counts in that same transaction.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from backfill.archive import gateway as db
from backfill.archive.ledger import api_params
from backfill.domain.records import DONE, FAILED, INVALID, NO_FEEDBACK, Outcome, promised
from backfill.domain.rows import Row, Tally, Written
from backfill.errors import DatabaseError

#: Write transactions that hit a deadlock or lock timeout are tried this many times.
WRITE_ATTEMPTS = 3


def write(
    gw: db.Gateway,
    batch: list[Row],
    outcomes: dict[str, Outcome],
    invocation_id: int | None = None,
    api: Tally | None = None,
    *,
    refetch: bool = False,
    replace: str = "none",
) -> Written:
    """Patch the enriched rows and checkpoint the batch, in one transaction; return what it counted.

    With ``refetch``, feedback_records are replaced where they are still ours; ``replace``
    ("extractor" or "any") also replaces records someone else wrote (see patch_refetch).
    ``api`` (what fetching the batch cost: requests, errors, seconds waited on 429s and on API
    failures) is added to the invocation row in the same transaction.
    """
    api = api or Tally()
    # done rows, and a mismatch's partial records on its last attempt
    patch = [{"run_id": rid, "records": list(o.records)} for rid, o in outcomes.items() if o.records]
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            with gw.transaction():
                # before the patch, which gives some of them records
                unwritten = _settled_empty(gw, batch)
                patched = _patch(gw, patch, refetch, replace)
                rows, tally = _checkpoint_rows(batch, outcomes, patched)
                gw.execute("checkpoint", {"rows": db.Jsonb(rows), "invocation_id": invocation_id, "refetch": refetch})
                taken = [r["run_id"] for r in rows if r["run_id"] in unwritten]
                if taken:
                    gw.execute("settled_examined", {"run_ids": taken})
                gw.execute(
                    "count_invocation",
                    {
                        "invocation_id": invocation_id,
                        "examined": len(rows),
                        "enriched": tally[DONE],
                        "no_feedback": tally[NO_FEEDBACK],
                        "failed": tally[FAILED] + tally[INVALID],
                        "records": tally["records"],
                        **api_params(api),
                    },
                )
            break
        except DatabaseError as exc:
            if attempt == WRITE_ATTEMPTS or not isinstance(exc.__context__, db.RETRYABLE):
                raise
            time.sleep(0.1 * attempt)
    failed: Counter[str] = Counter()
    for rid in (r["run_id"] for r in rows if r["state"] in (FAILED, INVALID)):
        o = outcomes[rid]
        failed[o.reason or o.state] += 1
    return Written(
        examined=len(rows),
        enriched=tally[DONE],
        records=tally["records"],
        no_feedback=tally[NO_FEEDBACK],
        skipped=len(batch) - len(rows),
        failed=failed,
    )


def _settled_empty(gw: db.Gateway, batch: list[Row]) -> set[str]:
    """The batch's rows that a mark settled without a checkpoint row (``domain.settling``): their
    checkpoint rows, written now, take them off the mark's count in the same transaction."""
    below = [r.id for r in batch if r.settled]
    if not below:
        return set()
    return {r["run_id"] for r in gw.execute("settled_empty_among", {"ids": below})}


def _patch(gw: db.Gateway, patch: list[dict[str, Any]], refetch: bool, replace: str) -> dict[str, dict[str, Any]]:
    """Lock the rows to patch (skipping those another writer holds) and patch them: run_id -> what was written."""
    if not patch:
        return {}
    locked = {r["run_id"]: r["id"] for r in gw.execute("lock_rows", {"run_ids": [p["run_id"] for p in patch]})}
    mine = [{"id": locked[p["run_id"]], "records": p["records"]} for p in patch if p["run_id"] in locked]
    if not mine:
        return {}
    query = "patch_refetch" if refetch else "patch_batch"
    params = {"patch": db.Jsonb(mine), "ids": [p["id"] for p in mine], "replace": replace}
    return {r["run_id"]: r for r in gw.execute(query, params)}


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
