"""Durations and counts as a DBA reads them."""

from __future__ import annotations


def duration(seconds: float | None, *, minutes_past_a_day: bool = False) -> str:
    """``1d 2h`` (``1d 2h 03m`` with ``minutes_past_a_day``), ``2h 05m``, ``3m 07s``, ``9s``; ``-`` for None."""
    if seconds is None:
        return "-"
    s = max(int(round(seconds)), 0)
    d, rest = divmod(s, 86400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    if d:
        return f"{d}d {h}h {m:02d}m" if minutes_past_a_day else f"{d}d {h}h"
    if h:
        return f"{h}h {m:02d}m"
    if m:
        return f"{m}m {sec:02d}s"
    return f"{sec}s"


def count(n: int, word: str, plural: str | None = None) -> str:
    """``1 row``, ``2 rows``, ``1,234 rows`` (``plural`` where adding an s is wrong: ``1 reply``, ``2 replies``)."""
    return f"{n:,} {word if n == 1 else plural or word + 's'}"
