"""Trace-shaped archives: traces of one root run and its children, feedback on roots only.

The real archive is mostly child runs (LLM calls, tools) that never get feedback; reviewers
judge the root of a trace. ``trace_archive`` builds such an archive deterministically from a
seed; ``trace_feedback`` is the matching feedback function for the fake, and each run's
``RunInfo`` is what the fake's catalog needs (``FakeLangSmith.add_runs``) to list a
project's feedback by creation time::

    runs = list(trace_archive(2000))
    copy_archive(conn, runs)
    fake = FakeLangSmith(key, feedback=trace_feedback())
    fake.add_runs(r.info for r in runs)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import psycopg
from psycopg.types.json import Jsonb

from backfill.sandbox import synthetic
from backfill.sandbox.fake_langsmith.listing import RunInfo

CHILD_KINDS = (("llm", "ChatModel"), ("tool", "search"), ("retriever", "retriever"), ("parser", "parser"))


class TraceRun(NamedTuple):
    """One run of a trace archive: the row's columns, its document, and its catalog entry."""

    run_id: str
    trace_id: str
    project: str
    run_date: dt.date
    document: dict[str, Any]
    info: RunInfo


def _tag(seed: str, head: bytes) -> bytes:
    return hashlib.sha256(b"root:" + seed.encode() + b":" + head).digest()[:4]


def root_id(seed: str, trace: int) -> str:
    """The root run (= trace) id of trace number ``trace``.

    Its last 4 bytes are a digest of the first 12 (the version bits included), so that the
    feedback function knows a root from a child by its id alone: no table of a million ids.
    """
    head = uuid.UUID(bytes=hashlib.sha256(f"{seed}:trace:{trace}".encode()).digest()[:16], version=4).bytes[:12]
    return str(uuid.UUID(bytes=head + _tag(seed, head)))


def child_id(seed: str, trace: int, k: int) -> str:
    """The id of the ``k``-th child run (k >= 1) of trace number ``trace``."""
    return synthetic._uuid(seed, "trace", str(trace), "run", str(k))


def is_root(run_id: str, seed: str = "traces") -> bool:
    b = uuid.UUID(run_id).bytes
    return b[12:] == _tag(seed, b[:12])


def trace_feedback(seed: str = "traces", reviewed: float = 0.5) -> Callable[[str], list[dict[str, Any]]]:
    """The feedback function of ``trace_archive(seed=seed, reviewed=reviewed)``: records (1-3,
    mostly 1) for a ``reviewed`` share of the roots, none for children and unknown ids."""

    def feedback(run_id: str) -> list[dict[str, Any]]:
        run_id = str(uuid.UUID(run_id))
        if not is_root(run_id, seed) or synthetic._rng(run_id, f"reviewed:{seed}").random() >= reviewed:
            return []
        for salt in range(256):  # the synthetic records of a related id, made this run's
            records = synthetic.feedback_for_run(f"{run_id}:{salt}")
            if records:
                return [{**r, "run_id": run_id, "trace_id": run_id} for r in records]
        return []

    return feedback


def _start_of(run_id: str, run_date: dt.date, now: dt.datetime) -> dt.datetime:
    """When a root run started on ``run_date``: any time of a past day; on today's date, at
    least an hour before ``now`` (an archive holds runs that have started and been extracted)."""
    midnight = dt.datetime.combine(run_date, dt.time(), tzinfo=dt.UTC)
    span = min(86400.0, max(0.0, (now - midnight).total_seconds() - 3600))
    rng = synthetic._rng(run_id, "start")
    return midnight + dt.timedelta(seconds=int(rng.random() * span), microseconds=rng.randrange(10**6))


def _trace(
    seed: str,
    t: int,
    project: str,
    run_date: dt.date,
    runs_per_trace: int,
    feedback: Callable[[str], list[dict[str, Any]]],
    size_bytes: int,
    now: dt.datetime,
) -> list[TraceRun]:
    root = root_id(seed, t)
    session = synthetic.session_id_for(project)
    start = _start_of(root, run_date, now)
    rng = synthetic._rng(root, "children")
    runs, at = [], start
    for k in range(runs_per_trace):
        run_id = root if k == 0 else child_id(seed, t, k)
        stats = synthetic.feedback_stats_for(feedback(run_id))
        doc = synthetic.run_document(run_id, root, project, run_date, size_bytes, with_session_id=True, stats=stats)
        begins = start if k == 0 else at
        if k > 0:
            doc["run_type"], doc["name"] = CHILD_KINDS[(k - 1) % len(CHILD_KINDS)]
            at = begins + dt.timedelta(milliseconds=rng.randrange(50, 5000))
            doc["end_time"] = synthetic._iso(at)
        doc["start_time"] = synthetic._iso(begins)
        runs.append(TraceRun(run_id, root, project, run_date, doc, RunInfo(run_id, session, begins, project)))
    runs[0].document["end_time"] = synthetic._iso(at + dt.timedelta(milliseconds=10))
    return runs


def trace_archive(
    traces: int,
    runs_per_trace: int = 10,
    projects: Sequence[str] = ("proj-a", "proj-b"),
    days: int = 14,
    reviewed: float = 0.5,
    until: dt.date | None = None,
    seed: str = "traces",
    *,
    size_bytes: int = 0,
    now: dt.datetime | None = None,
) -> Iterator[TraceRun]:
    """``traces`` traces of ``runs_per_trace`` runs (the root first), round robin over
    ``projects`` and over the ``days`` days up to ``until`` (default: today). Documents carry
    ``session_id`` and ``feedback_stats`` consistent with ``trace_feedback(seed, reviewed)``.

    Deterministic from the arguments, except that runs dated today start at least an hour
    before ``now`` (default: the wall clock): build an archive once and reuse the list.
    """
    now = now or dt.datetime.now(dt.UTC)
    until = until or now.date()
    feedback = trace_feedback(seed, reviewed)
    for t in range(traces):
        project = projects[t % len(projects)]
        run_date = until - dt.timedelta(days=(t // len(projects)) % days)
        yield from _trace(seed, t, project, run_date, runs_per_trace, feedback, size_bytes, now)


def copy_archive(conn: psycopg.Connection[Any], runs: Iterable[TraceRun]) -> int:
    """Insert ``runs`` into the app's ``runs`` table by COPY (as the demo and the benchmarks
    build archives); return how many. The caller commits."""
    n = 0
    with conn.cursor().copy("COPY runs (run_id, trace_id, project, run_date, data) FROM STDIN") as copy:
        for r in runs:
            copy.write_row((r.run_id, r.trace_id, r.project, r.run_date, Jsonb(r.document)))
            n += 1
    return n
