"""The workspace guard: stop before writing anybody off when the API key is not the runs' workspace."""

from __future__ import annotations

from dataclasses import dataclass

from backfill.archive import gateway as db
from backfill.archive.reader import committing, window_params
from backfill.config import Window
from backfill.domain.records import canonical_run_id, promised
from backfill.domain.rows import Row
from backfill.domain.workspace import EMPTY_MIN_RUNS, PROBE_RUNS, suspicious, wrong_workspace
from backfill.errors import WrongWorkspace
from backfill.langsmith.by_run import fetch_isolating
from backfill.langsmith.transport import Transport
from backfill.runner.pipeline import Fetched

__all__ = ["EMPTY_MIN_RUNS", "PROBE_RUNS", "WorkspaceGuard", "probe_runs"]


def probe_runs(gw: db.Gateway, window: Window) -> list[str]:
    """The window's newest ``PROBE_RUNS`` runs whose feedback_stats count records (a read of its own)."""
    rows = committing(gw)("workspace_probe_runs", {**window_params(window), "n": PROBE_RUNS})
    return [r["run_id"] for r in rows if canonical_run_id(r["run_id"]) is not None]


@dataclass
class WorkspaceGuard:
    """Stops the run (``WrongWorkspace``) if the API key is not the workspace the runs came from.

    A batch where most runs whose feedback_stats promise records come back empty raises the
    question, but cannot answer it: a key of another workspace gets [] for everything, and so
    do runs whose feedback expired or was deleted in LangSmith, which are the oldest ones,
    where the walk starts. So the question goes to a probe that deleted feedback cannot fool:
    the window's newest runs whose feedback_stats promise records. A wrong key gets nothing
    for (most of) them; then the run stops, writing nobody off. Otherwise the empty runs are
    ``failed``/``mismatch`` (``decide``), retried up to --max-attempts, and the walk goes on.
    """

    gw: db.Gateway
    transport: Transport
    window: Window

    def check(self, batch: list[Row], fetched: Fetched) -> None:
        asked = set(fetched.asked)
        answers = fetched.answers
        promising = [
            r
            for r in batch
            if r.run_id in asked and promised(r.feedback_stats) > 0 and not isinstance(answers[r.run_id], str)
        ]
        empty = [r for r in promising if not answers[r.run_id]]
        if not suspicious(len(empty), len(promising)):
            return
        probe = probe_runs(self.gw, self.window)
        got = fetch_isolating(self.transport, probe, fetched.tally) if probe else {}
        answered = [rid for rid in probe if not isinstance(got[rid], str)]
        silent = [rid for rid in answered if not got[rid]]
        if wrong_workspace(len(silent), len(answered)):
            raise WrongWorkspace(
                f"LangSmith returned no feedback for {len(empty)} of {len(promising)} runs whose feedback_stats"
                f" count records, nor for {len(silent)} of the window's {len(answered)} newest such runs: is"
                " LANGSMITH_API_KEY (and LANGSMITH_WORKSPACE_ID) the workspace these runs came from?"
                " Stopped; nothing was written off"
            )
