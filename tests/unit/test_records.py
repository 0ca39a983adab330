"""Records compared and dated (``domain.records``): created_at, canonical JSON, diff by id."""

from __future__ import annotations

import datetime as dt

import pytest

from backfill.domain.records import canonical, created_at, diff

UTC = dt.UTC


@pytest.mark.parametrize(
    ("raw", "when"),
    [
        ("2026-11-20T10:00:00+00:00", dt.datetime(2026, 11, 20, 10, tzinfo=UTC)),
        ("2026-11-20T10:00:00Z", dt.datetime(2026, 11, 20, 10, tzinfo=UTC)),
        ("2026-11-20T10:00:00.123456", dt.datetime(2026, 11, 20, 10, 0, 0, 123456, tzinfo=UTC)),  # naive: UTC
        ("2026-11-20T11:00:00+01:00", dt.datetime(2026, 11, 20, 10, tzinfo=UTC)),
        ("2026-11-20", dt.datetime(2026, 11, 20, tzinfo=UTC)),
        ("yesterday", None),
        ("", None),
        (None, None),
        (1732096800, None),  # an epoch is not the API's format
    ],
)
def test_created_at(raw: object, when: dt.datetime | None) -> None:
    got = created_at({"created_at": raw})
    assert got == when
    assert got is None or got.tzinfo is not None


def test_created_at_missing() -> None:
    assert created_at({}) is None


def test_canonical_ignores_key_order_only() -> None:
    a = {"id": "1", "value": {"verdict": "PASS", "score": 1}, "comment": None}
    b = {"comment": None, "value": {"score": 1, "verdict": "PASS"}, "id": "1"}
    assert canonical(a) == canonical(b) == '{"comment": null, "id": "1", "value": {"score": 1, "verdict": "PASS"}}'
    assert canonical(a) != canonical(a | {"comment": ""})
    assert canonical([1, "é"]) == '[1, "\\u00e9"]'


def test_diff_by_id_added_changed_deleted_each_sorted() -> None:
    old = [{"id": "b", "v": 1}, {"id": "a", "v": 1}, {"id": "c", "v": 1}, {"id": "d", "v": {"x": 1, "y": 2}}]
    new = [{"id": "e", "v": 1}, {"id": "c", "v": 2}, {"id": "a", "v": 2}, {"id": "d", "v": {"y": 2, "x": 1}}]
    assert diff(old, new) == (["e"], ["a", "c"], ["b"])  # d only reordered its keys: unchanged
    assert diff(new, new) == ([], [], [])
    assert diff([], new) == (["a", "c", "d", "e"], [], [])
    assert diff([{"id": 7, "v": 1}], [{"id": "7", "v": 1}]) == ([], ["7"], [])  # one id as text; its JSON changed
