"""Each project's strategy for this invocation, chosen from what the archive knows and said in the first lines."""

from __future__ import annotations

from collections.abc import Mapping

from backfill import logs
from backfill.archive import gateway as db
from backfill.archive.planning import figures
from backfill.domain.options import RunOptions
from backfill.domain.packing import requests
from backfill.domain.strategy import AUTO_RULE, Choice, choose
from backfill.runner.summary import RunSummary


def plan(gw: db.Gateway, options: RunOptions, summary: RunSummary, by_project: Mapping[str, int]) -> list[Choice]:
    """Each project's choice (empty: the runs strategy over the window as asked), said in the first
    lines; ``by_project``: the rows the walk will visit, per project (``archive.reader.pending_by_project``)."""
    o, pending = options, summary.pending_at_start
    summary.delay_ms = o.delay_ms
    if o.strategy == "runs" or (o.strategy == "auto" and o.limit is not None) or pending == 0:
        why = "--strategy runs" if o.strategy == "runs" else "--limit" if o.limit is not None else "nothing pending"
        # the promises are not read here: the fewest requests the ids alone need
        summary.expected_requests = requests(min(pending, o.limit or pending), 0, o.batch_size)
        summary.choices = [
            f"runs for the whole window ({why}), ~{requests(pending, 0, o.batch_size):,} request(s) or more"
        ]
        logs.event("strategy", f"strategy {o.strategy}: " + summary.choices[0], strategy="runs")
        return []
    choices = [choose(f, o.strategy) for f in figures(gw, o, by_project)]
    listed = [c for c in choices if c.strategy == "project"]
    expected = sum(c.expected for c in choices)
    runs = sum(c.runs_expected for c in choices)
    summary.expected_requests = expected
    head = (
        f"project listing for {len(listed)} of {len(choices)} project(s), ~{expected:,} request(s) expected"
        f" (run by run ~{runs:,})" + (f"; {AUTO_RULE}" if o.strategy == "auto" else "")
    )
    summary.choices = [head] + [c.line() for c in choices]
    logs.event("strategy", f"strategy {o.strategy}: {head}", strategy=o.strategy, expected=expected, runs=runs)
    for c in choices:
        logs.event("strategy_project", "  " + c.line(), project=c.project, strategy=c.strategy, expected=c.expected)
    return choices
