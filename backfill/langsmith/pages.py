"""The one page loop of GET /feedback: offsets until a short page, records kept once each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backfill.domain.rows import Tally

#: The API's maximum page size for GET /feedback.
PAGE_LIMIT = 100


class PagingFailed(Exception):
    """The answer cannot be paged as it is (``detail``): a malformed record, paging that does
    not advance (a server ignoring ``offset`` serves the first page again), too many pages."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def page_through(
    get_page: Callable[[dict[str, Any]], list[Any]],
    params: dict[str, Any],
    owner: Callable[[dict[str, Any]], str | None],
    tally: Tally,
    max_pages: int,
) -> list[tuple[str, dict[str, Any]]]:
    """Every record of the query ``params``, as (owner, record), in the order served.

    ``owner`` names whom a record is for, None when it is not ours (a run not asked, another
    project's record): such records, and repeats of a record id across pages, are dropped and
    counted in ``tally``.
    """
    seen: set[str] = set()
    out: list[tuple[str, dict[str, Any]]] = []
    offset = pages = 0
    while True:
        page = get_page({**params, "limit": PAGE_LIMIT, "offset": offset})
        pages += 1
        new = 0
        for rec in page:
            if not isinstance(rec, dict):
                raise PagingFailed("malformed answer: a feedback record is not a JSON object")
            who = owner(rec)
            key = str(rec.get("id"))
            if who is None or key in seen:
                tally.dropped += 1
                continue
            seen.add(key)
            new += 1
            out.append((who, rec))
        tally.records += new
        if len(page) < PAGE_LIMIT:
            return out
        if new == 0:
            raise PagingFailed("paging did not advance")
        if pages >= max_pages:
            raise PagingFailed(f"more than {max_pages} pages")
        offset += len(page)
