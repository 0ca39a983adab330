"""Deterministic synthetic data: feedback records, their lossy aggregate, archived runs.

Everything derives from sha256 of the run id (never ``hash()``, which is salted per
process), so the fake server, the demo and the tests agree on the same data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import statistics
import uuid
from typing import Any

#: Keys of the second and third record of a run (the first is always final_verdict).
EXTRA_KEYS = ("correctness", "helpfulness")
RATIONALE_KEYS = (
    "criteria_a",
    "criteria_b",
    "criteria_c",
    "criteria_d",
    "decision_factor_1",
    "decision_factor_2",
)
_EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
_WORDS = "the agent answered question with a verdict rationale of criteria and decision factors".split()


def _digest(*parts: str) -> bytes:
    return hashlib.sha256(":".join(parts).encode()).digest()


def _rng(run_id: str, purpose: str = "") -> random.Random:
    # An int seed is stable across Python versions and platforms.
    seed = hashlib.sha256(run_id.encode()).digest() if not purpose else _digest(purpose, run_id)
    return random.Random(int.from_bytes(seed, "big"))


def _uuid(*parts: str) -> str:
    return str(uuid.UUID(bytes=_digest(*parts)[:16], version=4))


def _iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def run_id_for(n: int, seed: str = "demo") -> str:
    """The n-th deterministic run id of a seed (a version-4 UUID string)."""
    return _uuid(seed, str(n))


def session_id_for(project: str) -> str:
    """The deterministic id of project ``project``'s tracer session (what LangSmith calls a project)."""
    return _uuid("session", project)


def feedback_for_run(run_id: str) -> list[dict[str, Any]]:
    """The feedback records the LangSmith API holds for ``run_id`` (GET /feedback shape).

    About 1/3 of run ids have feedback: mostly one ``final_verdict`` record, a few 2-3.
    """
    rng = _rng(run_id)
    if rng.random() >= 1 / 3:
        return []
    roll = rng.random()
    count = 1 if roll < 0.85 else 2 if roll < 0.95 else 3
    # Records of one run are minutes apart, so their created_at values differ.
    created = _EPOCH + dt.timedelta(seconds=rng.randrange(180 * 86400), microseconds=rng.randrange(10**6))
    records = []
    for i in range(count):
        verdict = "PASS" if rng.random() < 0.6 else "FAIL"
        rationale = {k: rng.random() < 0.5 for k in RATIONALE_KEYS}
        modified = created + dt.timedelta(seconds=rng.randrange(0, 3600))
        records.append(
            {
                "id": _uuid("feedback", run_id, str(i)),
                "run_id": run_id,
                "trace_id": run_id,
                "key": "final_verdict" if i == 0 else EXTRA_KEYS[i - 1],
                "score": 1.0 if verdict == "PASS" else 0.0,
                "value": {"verdict": verdict, "rationale": rationale},
                "comment": f"Human verdict: {verdict}",
                "correction": None,
                "feedback_source": {"type": "api", "metadata": {}, "user_id": None},
                "feedback_group_id": None,
                "comparative_experiment_id": None,
                "session_id": None,
                "created_at": _iso(created),
                "modified_at": _iso(modified),
                "extra": None,
            }
        )
        created += dt.timedelta(minutes=1 + rng.randrange(120), microseconds=rng.randrange(10**6))
    return records


def feedback_stats_for(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The aggregate the extractor stored instead of the records (``values`` always empty)."""
    stats: dict[str, dict[str, Any]] = {}
    for rec in records:
        entry = stats.setdefault(
            rec["key"], {"n": 0, "avg": None, "stdev": None, "values": {}, "comments": [], "sources": [], "_s": []}
        )
        entry["n"] += 1
        if isinstance(rec.get("score"), (int, float)) and not isinstance(rec.get("score"), bool):
            entry["_s"].append(float(rec["score"]))
        if rec.get("comment") is not None:
            entry["comments"].append(rec["comment"])
        src = rec.get("feedback_source") or {}
        # The API stores each source as compact JSON text without user_id.
        entry["sources"].append(
            json.dumps({"type": src.get("type"), "metadata": src.get("metadata") or {}}, separators=(",", ":"))
        )
    for entry in stats.values():
        scores = entry.pop("_s")
        if scores:
            entry["avg"] = statistics.fmean(scores)
            entry["stdev"] = statistics.pstdev(scores)
    return stats


def _padding(run_id: str, length: int) -> str:
    rng = _rng(run_id, "padding")
    chunk = " ".join(rng.choice(_WORDS) for _ in range(800)) + " "
    return (chunk * (length // len(chunk) + 1))[:length]


def run_document(
    run_id: str,
    trace_id: str,
    project: str,
    run_date: dt.date,
    size_bytes: int = 0,
    *,
    with_session_id: bool = False,
    stats: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An archived run as the extractor left it: ``feedback_stats`` but no ``feedback_records``.

    With ``size_bytes > 0``, ``outputs["padding"]`` makes ``json.dumps(doc)`` about that long.
    ``with_session_id`` adds the project's id as the extractor stores it (``session_id``); off
    by default so that the archives built before it stay byte-identical. ``stats``: the
    ``feedback_stats`` to store, when the run's feedback is not ``feedback_for_run``'s.
    """
    rng = _rng(run_id, "run")
    start = dt.datetime.combine(run_date, dt.time(), tzinfo=dt.UTC) + dt.timedelta(
        seconds=rng.randrange(86400), microseconds=rng.randrange(10**6)
    )
    end = start + dt.timedelta(milliseconds=rng.randrange(200, 120_000))
    n = rng.randrange(10**6)
    doc: dict[str, Any] = {
        "run_id": run_id,
        "trace_id": trace_id,
        "parent_run_id": None if run_id == trace_id else trace_id,
        "project": project,
        "run_date": run_date.isoformat(),
        "name": "agent",
        "run_type": "chain",
        "status": "success",
        "error": None,
        "tags": [],
        "inputs": {"question": f"Synthetic question #{n}"},
        "outputs": {"answer": f"Synthetic answer #{n}"},
        "start_time": _iso(start),
        "end_time": _iso(end),
        "extra": {"metadata": {"synthetic": True}},
        "feedback_stats": feedback_stats_for(feedback_for_run(run_id)) if stats is None else stats,
    }
    if with_session_id:
        doc["session_id"] = session_id_for(project)
    if size_bytes > 0:
        doc["outputs"]["padding"] = ""
        # Padding is plain ASCII, so each character adds exactly one byte of JSON.
        doc["outputs"]["padding"] = _padding(run_id, max(0, size_bytes - len(json.dumps(doc))))
    return doc
