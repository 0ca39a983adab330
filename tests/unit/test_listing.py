"""The fake's project listing without HTTP: slices by created_at partition one listing exactly."""

from __future__ import annotations

import datetime as dt

from backfill.sandbox import synthetic, traces
from backfill.sandbox.fake_langsmith import FakeLangSmith, RunInfo

NOW = dt.datetime(2026, 6, 15, 12, 30, tzinfo=dt.UTC)
SESSION = synthetic.session_id_for("proj-a")
US = dt.timedelta(microseconds=1)


def held() -> FakeLangSmith:
    """A fake (never started: no socket) holding a trace archive, plus ties on created_at."""
    fake = FakeLangSmith(feedback=traces.trace_feedback())
    fake.add_runs(r.info for r in traces.trace_archive(300, runs_per_trace=3, now=NOW))
    # three runs whose records share one instant: a cut there must not split or repeat them
    tie = "2026-06-12T08:00:00.000000Z"
    for i in range(3):
        run_id = synthetic.run_id_for(i, "ties")
        fake.add_runs([RunInfo(run_id, SESSION, NOW - dt.timedelta(days=5))])
        rec = {"id": synthetic.run_id_for(i, "tie-records"), "run_id": run_id, "key": "k", "created_at": tie}
        fake.set_feedback(run_id, [rec])
    return fake


def created(record: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(record["created_at"])


def test_slices_by_created_at_partition_the_listing_in_order() -> None:
    fake = held()
    full = fake.listed(session=SESSION)
    instants = sorted({created(r) for r in full})
    assert len(full) > 80 and len(instants) < len(full)  # the ties are in
    tie = dt.datetime(2026, 6, 12, 8, tzinfo=dt.UTC)
    for step in (1, 7, 40, len(instants)):
        # cuts on records' own instants (the tie among them), so every bound is exercised inclusively
        cuts = sorted({*instants[::step], tie}) + [instants[-1] + US]
        pieces = [
            fake.listed(session=SESSION, min_created_at=lo.isoformat(), max_created_at=(hi - US).isoformat())
            for lo, hi in zip(cuts, cuts[1:], strict=False)
        ]
        # newest slice first: the concatenation is the listing itself, record for record
        assert [r for piece in reversed(pieces) for r in piece] == full
    # both bounds inclusive: a slice of one instant holds exactly the records created then
    assert [
        r["id"] for r in fake.listed(session=SESSION, min_created_at=tie.isoformat(), max_created_at=tie.isoformat())
    ] == sorted((r["id"] for r in full if created(r) == tie), reverse=True)


def test_slices_with_open_ends_and_the_other_filters() -> None:
    fake = held()
    full = fake.listed(session=SESSION, level="run")
    cut = created(full[len(full) // 2])
    newer = fake.listed(session=SESSION, level="run", min_created_at=cut.isoformat())
    older = fake.listed(session=SESSION, level="run", max_created_at=(cut - US).isoformat())
    assert newer + older == full
    verdicts = fake.listed(session=SESSION, key="final_verdict", min_created_at=cut.isoformat())
    assert verdicts == [r for r in newer if r["key"] == "final_verdict"]
