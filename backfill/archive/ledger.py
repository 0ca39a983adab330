"""The invocation rows (feedback_backfill_invocations): an invocation's start, its counts, its end."""

from __future__ import annotations

from typing import Any

from backfill.archive import gateway as db
from backfill.domain.rows import Tally


def start(gw: db.Gateway, params: dict[str, Any], pending: int) -> int:
    """A new invocation row (the caller commits); its id."""
    row = gw.one("start_invocation", {"params": db.Jsonb(params), "pending": pending})
    return int(row["id"])


def strategy(gw: db.Gateway, invocation_id: int | None, name: str, saved: int, choice: dict[str, str]) -> None:
    """The strategy the invocation uses (or used), and each project's (the caller commits)."""
    params = {"invocation_id": invocation_id, "strategy": name, "requests_saved": saved, "choice": db.Jsonb(choice)}
    gw.execute("invocation_strategy", params)


def finish(gw: db.Gateway, invocation_id: int | None, outcome: str, message: str | None, api: Tally) -> None:
    """End the invocation row, adding the requests no batch was charged with (the caller commits)."""
    params = {"invocation_id": invocation_id, "outcome": outcome, "message": message, **api_params(api)}
    gw.execute("finish_invocation", params)


def api_params(api: Tally) -> dict[str, Any]:
    """count_invocation's API parameters."""
    return {
        "api_requests": api.requests,
        "api_errors": api.errors,
        "rate_limit_wait_s": api.rate_limit_wait_s,
        "outage_wait_s": api.outage_wait_s,
    }


def count_api(gw: db.Gateway, invocation_id: int | None, api: Tally) -> None:
    """Add requests that examined no row (a listing slice, a probe, the sampled check) to the
    invocation row, in the caller's transaction."""
    zero = dict.fromkeys(("examined", "enriched", "no_feedback", "failed", "records"), 0)
    gw.execute("count_invocation", {"invocation_id": invocation_id, **zero, **api_params(api)})


def count_settled(gw: db.Gateway, invocation_id: int | None, rows: int) -> None:
    """Add rows a mark settled without a checkpoint row (examined, no feedback) to the invocation
    row, in the mark's transaction."""
    params = {"invocation_id": invocation_id, "examined": rows, "enriched": 0, "no_feedback": rows, "failed": 0}
    gw.execute("count_invocation", {**params, "records": 0, **api_params(Tally())})
