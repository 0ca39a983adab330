"""What the archive knows of each project of the window, for the strategy's choice (``domain.strategy``)."""

from __future__ import annotations

from collections.abc import Mapping

from backfill.archive import gateway as db
from backfill.archive.reader import window_params
from backfill.archive.staging import latest
from backfill.domain.listing import extends as listing_extends
from backfill.domain.options import RunOptions
from backfill.domain.strategy import ProjectFigures, ruled_out


def figures(gw: db.Gateway, options: RunOptions, pending: Mapping[str, int]) -> list[ProjectFigures]:
    """Each project of the window, with its pending rows: the walk's own count per project
    (``reader.pending_by_project``; rows lacking records include rows already examined and found
    without feedback, so sharing the total out by them could call a project with pending rows
    "nothing pending"). The records promised are read from the documents (strategy_promised)
    unless, for auto, the rows that promise any (index-only) rule every listing out: a dense
    archive is then planned without reading a document (``ruled_out``)."""
    window = options.window
    params = window_params(window)
    rows = {r["project"]: r["rows"] for r in gw.execute("strategy_rows", params)}
    extends = {p: listing_extends(latest(gw, p), window, fresh=options.refetch) for p in rows}

    def each(promised: Mapping[str, Mapping[str, int]], at_least: bool) -> list[ProjectFigures]:
        out = []
        for project, n in rows.items():
            p = promised.get(project, {})
            promised_pending = p.get("promised", 0) if options.refetch else p.get("promised_lacking", 0)
            pend = min(pending.get(project, 0), n)
            out.append(
                ProjectFigures(project, n, pend, p.get("promised", 0), promised_pending, extends[project], at_least)
            )
        return out

    # each row that promises records promises one at least: lower bounds of both figures
    promising = {
        r["project"]: {"promised": r["promising"], "promised_lacking": r["promising_lacking"]}
        for r in gw.execute("strategy_promising", params)
    }
    out = each(promising, at_least=True)
    if options.strategy != "auto" or not all(ruled_out(f.pending, f.records) for f in out):
        out = each({r["project"]: r for r in gw.execute("strategy_promised", params)}, at_least=False)
    gw.commit()
    return out
