"""The named queries as parsed from backfill/sql/queries.sql: no query text carries a comment-only tail."""

from __future__ import annotations

from backfill.sql import QUERIES, _parse


def test_no_query_ends_with_a_comment_or_a_banner() -> None:
    tails = {
        name: text.splitlines()[-1] for name, text in QUERIES.items() if text.splitlines()[-1].lstrip().startswith("--")
    }
    assert tails == {}


def test_every_query_has_a_statement() -> None:
    empty = [
        name for name, text in QUERIES.items() if all(line.lstrip().startswith("--") for line in text.splitlines())
    ]
    assert empty == []


def test_a_banner_between_blocks_belongs_to_no_query() -> None:
    text = "-- a --\n-- what a does\nSELECT 1;\n\n-- ====\n-- section\n-- ====\n\n-- b --\n-- what b does\nSELECT 2;\n"
    assert _parse(text) == {"a": "-- what a does\nSELECT 1;", "b": "-- what b does\nSELECT 2;"}


def test_finish_invocation_ends_with_its_where_clause() -> None:
    assert QUERIES["finish_invocation"].endswith("WHERE id = %(invocation_id)s;")
