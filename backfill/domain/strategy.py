"""Which way each project's feedback comes in: run by run (``runs``) or listed by project (``project``).

``runs`` names every run of the window in some request: about one request per 100 runs
whatever feedback exists. ``project`` lists the project's run-level feedback created since
the window began: about one request per 100 records, whatever the number of runs, plus the
sampled check and the runs whose staged records fall short of their feedback_stats. On an
archive of traces where reviewers judge the root run only, that is a fraction of the cost;
where nearly every run has feedback, it is no cheaper and costs the records of runs outside
the window (late feedback of older runs, listed and ignored).

``auto`` decides per project from what the database knows, before any request: the rows
the walk will visit against the records the window's feedback_stats promise. ``choose`` is
pure (tests/unit); ``archive.planning.figures`` reads the database: index-driven counts, and the documents of
the rows that promise records only where a listing could be chosen (``ruled_out``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from backfill.domain.listing import SLICE_RECORDS
from backfill.domain.packing import MAX_IDS, PAGE, requests
from backfill.domain.units import count

STRATEGIES = ("auto", "runs", "project")
#: ``auto`` lists a project only when that is expected to take at most this share of the
#: requests of asking run by run: the listing also brings the records of runs outside the
#: window, which feedback_stats cannot count, and its staging writes; a dense archive (a
#: record per run) gains nothing from it. A trace-shaped archive where reviewers judge the
#: root run (0.22 records per run) expects about 0.25 of the requests; the demo's (0.4 per
#: run), about 0.45.
AUTO_RATIO = 1 / 3
#: ``AUTO_RATIO`` as the plan says it (``runner.planning``), once before each project's ``Choice.why``.
AUTO_RULE = (
    "auto lists a project only at a third of its requests or less, as a listing also reads"
    " the feedback of runs outside the window"
)
#: Requests a listing spends besides its pages: the sampled check (``runner.listing.SAMPLE_RUNS`` of
#: each kind: up to two requests) and the last, partly filled page of each slice.
CHECK_REQUESTS = 2


@dataclass(frozen=True)
class ProjectFigures:
    """What the database knows of one project of the window."""

    project: str
    rows: int  # rows of the window
    pending: int  # rows the walk will visit
    promised: int  # records the window's feedback_stats promise
    promised_pending: int  # ... of rows still lacking records
    #: the previous listing of the project is applied: a new one lists only what was created since
    #: (then mostly the records of the new rows, which their feedback_stats promise)
    extends: bool = False
    #: promised and promised_pending are the rows that promise records (one each at least), the
    #: documents left unread: a listing was ruled out without them (``ruled_out``)
    at_least: bool = False

    @property
    def records(self) -> int:
        """The records a listing expects: what the window promises, or only its pending rows' when it extends."""
        return self.promised_pending if self.extends else self.promised


@dataclass(frozen=True)
class Choice:
    """The strategy of one project, the requests it is expected to cost, and the runs strategy's."""

    project: str
    strategy: str
    expected: int
    runs_expected: int
    why: str
    records: int = 0  # what the window's feedback_stats promise (the listing plans its slices by it)

    def line(self) -> str:
        return f"{self.project}: {self.strategy}, ~{count(self.expected, 'request')} ({self.why})"


def runs_requests(f: ProjectFigures) -> int:
    """The runs strategy's cost: ``packing``'s lower bound for the pending rows and their promises."""
    return requests(f.pending, f.promised_pending)


def project_requests(f: ProjectFigures) -> int:
    """The project strategy's cost: the pages of the listing, one partial page per slice, the check."""
    slices = max(1, -(-f.records // SLICE_RECORDS))
    return -(-f.records // PAGE) + slices + CHECK_REQUESTS


def choose(f: ProjectFigures, asked: str) -> Choice:
    """``asked`` is auto, runs or project; auto lists when that takes at most AUTO_RATIO of the requests.

    ``why`` says it in the DBA's words: what the stats promise, the other strategy's cost, and the rule.
    """
    runs, listed = runs_requests(f), project_requests(f)
    n = f.records
    if f.pending == 0:
        return Choice(f.project, "runs", 0, 0, "nothing pending", n)
    if asked == "runs":
        return Choice(f.project, "runs", runs, runs, "--strategy runs", n)
    if asked == "project":
        return Choice(f.project, "project", listed, runs, f"--strategy project; run by run ~{runs:,}", n)
    promised = f"{'at least ' if f.at_least else ''}{count(f.promised, 'record')} promised"
    ratio = f"{promised} for {count(f.pending, 'pending row')}"
    if f.promised == 0:
        # stats promising nothing say nothing of the feedback there is (an archive extracted
        # without feedback_stats looks the same): asked run by run
        return Choice(f.project, "runs", runs, runs, f"{ratio}: nothing to plan a listing by", n)
    if listed <= AUTO_RATIO * runs:
        return Choice(f.project, "project", listed, runs, f"{ratio}; run by run ~{runs:,}, 3x or more", n)
    cost = "no cheaper" if listed >= runs else "more than a third of that"
    return Choice(f.project, "runs", runs, runs, f"{ratio}; listing ~{listed:,}, {cost}", n)


def ruled_out(pending: int, records: int) -> bool:
    """Can auto not list a project whose pending rows promise at least ``records`` records?

    A listing costs at least ``project_requests`` of them; the runs strategy at most
    max(⌈pending/100⌉, ⌈promised_pending/99⌉), and a listing of x records always costs more
    than a third of ⌈x/99⌉ (⌈x/100⌉ + 3 > (x/99 + 1)/3), with promised_pending never more than
    what the listing expects. So a listing is ruled out once its least cost exceeds a third
    of ⌈pending/100⌉, whatever the documents would add.
    """
    least = project_requests(ProjectFigures("", 0, pending, records, records))
    return least > AUTO_RATIO * -(-pending // MAX_IDS)


def used(choices: list[Choice], fallbacks: Mapping[str, str], api_requests: int) -> tuple[str, int]:
    """The strategy the invocation used (runs, project, or mixed) and the requests it saved
    against the runs strategy's estimate for the same rows (0 when it listed nothing)."""
    listed = [c for c in choices if c.strategy == "project" and c.project not in fallbacks]
    if not listed:
        return "runs", 0
    name = "project" if len(listed) == len(choices) else "mixed"
    return name, sum(c.runs_expected for c in choices) - api_requests
