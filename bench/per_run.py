"""The per-run design of the spec (phase-12-feedback-data-loss.md), as the baseline.

Its code sketch, made runnable against the archive:

    feedback_list = list(self.client.list_feedback(run_ids=[run_id]))   # one API call per run
    if feedback_list:
        run_data['feedback_records'] = [feedback.dict() for feedback in feedback_list]

stored with one ``UPDATE runs SET data = jsonb_set(...)`` and one commit per row, through
a real ``langsmith.Client`` built as the spec builds it (the SDK's defaults otherwise). The
spec's ``client.get_run(run_id)`` is left out: the archive already holds the run, and the
baseline should not be charged for a second request per row.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

#: The rows the per-run design visits: the window's rows without feedback_records, in order.
SELECT_RUNS = """
SELECT run_id FROM runs
WHERE run_date >= %(since)s AND run_date < %(until)s AND data -> 'feedback_records' IS NULL
ORDER BY run_date, id
LIMIT %(limit)s
"""

#: One statement per row, committed alone.
UPDATE_ROW = "UPDATE runs SET data = jsonb_set(data, '{feedback_records}', %(records)s) WHERE run_id = %(run_id)s"

_dumps = functools.partial(json.dumps, default=str)  # Feedback.dict() holds UUIDs and datetimes


@dataclass
class PerRunResult:
    rows: int = 0
    enriched: int = 0
    records: int = 0
    elapsed_s: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.elapsed_s if self.elapsed_s else 0.0


def langsmith_fetch(api_url: str, api_key: str) -> Callable[[str], list[dict[str, Any]]]:
    """The spec's fetch: ``list(client.list_feedback(run_ids=[run_id]))``, one request per run."""
    from langsmith import Client

    client = Client(api_url=api_url, api_key=api_key, auto_batch_tracing=False)

    def fetch(run_id: str) -> list[dict[str, Any]]:
        feedback_list = list(client.list_feedback(run_ids=[run_id]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydantic v2 deprecates .dict(); the spec calls it
            return [feedback.dict() for feedback in feedback_list]

    return fetch


def run_per_run(
    database_url: str,
    fetch: Callable[[str], list[dict[str, Any]]],
    since: dt.date,
    until: dt.date,
    limit: int,
    delay_ms: int = 0,
) -> PerRunResult:
    """Enrich up to ``limit`` rows of the window, one API call, one UPDATE and one commit per row.

    ``fetch`` is ``langsmith_fetch(...)`` for the spec's design, or an in-process function
    (no API at all) to measure the database side alone.
    """
    result = PerRunResult()
    with psycopg.connect(database_url) as conn:
        run_ids = [r[0] for r in conn.execute(SELECT_RUNS, {"since": since, "until": until, "limit": limit})]
        conn.commit()
        started = time.perf_counter()
        last_call: float | None = None
        for run_id in run_ids:
            if delay_ms and last_call is not None:  # the spec's "1000ms rate limiting"
                time.sleep(max(0.0, last_call + delay_ms / 1000 - time.perf_counter()))
            last_call = time.perf_counter()
            records = fetch(run_id)
            if records:
                conn.execute(UPDATE_ROW, {"records": Jsonb(records, dumps=_dumps), "run_id": run_id})
                result.enriched += 1
                result.records += len(records)
            conn.commit()
            result.rows += 1
        result.elapsed_s = time.perf_counter() - started
    return result
