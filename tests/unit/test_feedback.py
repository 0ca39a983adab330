"""What fetched records mean for a row: pure functions, no database, no API."""

from __future__ import annotations

import pytest

from backfill.domain.records import DONE, FAILED, NO_FEEDBACK, Outcome, decide, promised, sort_records, unstorable


def rec(i: str, created: object = "2026-11-20T10:00:00", **extra: object) -> dict[str, object]:
    return {"id": i, "created_at": created, **extra}


@pytest.mark.parametrize(
    ("stats", "n"),
    [
        (None, 0),
        ([], 0),
        ({}, 0),
        ({"a": {"n": 2}, "b": {"n": 1}}, 3),
        ({"a": {"n": 0}, "b": {"n": -1}, "c": {"n": True}, "d": {"n": "2"}, "e": "x", "f": {"n": 1.0}}, 0),
    ],
)
def test_promised_counts_positive_integer_n_only(stats, n):
    assert promised(stats) == n


def test_sort_records_by_creation_time_then_id_undated_first():
    records = [
        rec("b", "2026-11-20T10:00:00+00:00"),
        rec("a", "2026-11-20T11:00:00+01:00"),  # the same instant as b
        rec("z", None),
        rec("c", "2026-11-19T10:00:00"),
        rec("d", "not a date"),
    ]
    assert [r["id"] for r in sort_records(records)] == ["z", "c", "a", "b", "d"]


def test_unstorable_finds_nul_and_lone_surrogates_in_keys_and_values():
    assert unstorable({"a": ["ok", {"b": "x\x00"}]}) == "\\u0000"
    assert unstorable({"k\ud83d": 1}) == "\\ud83d"
    assert unstorable({"a": "emoji \U0001f600", "n": 1, "b": None}) is None


def test_unstorable_tells_an_escape_written_out_from_the_character():
    # the text backslash-u0000 is storable; the encoder's pass flags it, the walk clears it
    assert unstorable({"comment": "\\u0000 is how JSON writes NUL"}) is None
    assert unstorable([{"v": ["\\u0000", "\udc00"]}]) == "\\udc00"
    assert unstorable({(1, 2): "x\x00"}) == "\\u0000"  # not encodable as JSON: walked


def test_decide():
    one, two = rec("1", "2026-11-20T10:00:00"), rec("2", "2026-11-20T09:00:00")
    assert decide([], None) == Outcome(NO_FEEDBACK)
    assert decide([one, two], {"k": {"n": 2}}) == Outcome(DONE, records=(two, one))
    # more than promised (stats stale): all of them are stored
    assert decide([one, two], {"k": {"n": 1}}).records == (two, one)


def test_decide_mismatch_keeps_what_exists_only_on_the_last_attempt():
    one = rec("1")
    early = decide([one], {"k": {"n": 2}})
    assert early == Outcome(FAILED, "mismatch", error="API returned 1 record(s), feedback_stats count 2")
    last = decide([one], {"k": {"n": 2}}, keep_partial=True)
    assert last == Outcome(
        FAILED, "mismatch", records=(one,), error="API returned 1 record(s), feedback_stats count 2, stored"
    )


def test_decide_refuses_what_jsonb_cannot_store():
    out = decide([rec("1", comment="a\x00b")], None)
    assert (out.state, out.reason, out.records) == (FAILED, "unstorable", ())
    assert out.error == "record 1 holds \\u0000, which PostgreSQL jsonb cannot store"
