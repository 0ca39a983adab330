"""The runs strategy's batches: the walk's rows regrouped so that the rows of one request are written together."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from backfill.domain.packing import pack, scaled
from backfill.domain.rows import Answer, Row, promise


@dataclass
class Packer:
    """Packs rows into requests by what their feedback_stats promise, scaled by what the API has
    returned so far for the promises it was asked (``packing.scaled``)."""

    most_ids: Callable[[], int]  # run ids per request at most (a 414 lowers it)
    promised: int = 0
    received: int = 0

    def learn(self, rows: Iterable[Row], answers: dict[str, Answer]) -> None:
        """Count what the rows answered promised, and what they brought."""
        for r in rows:
            got = answers.get(r.run_id)
            if got is not None and not isinstance(got, str):
                self.promised += promise(r)
                self.received += len(got)

    def sizes(self, rows: list[Row]) -> list[int]:
        factor = scaled(self.promised, self.received)
        return pack([promise(r) * factor for r in rows], self.most_ids())


def packed(walk: Iterable[list[Row]], packer: Packer) -> Iterator[list[Row]]:
    """The walk's rows regrouped by ``packing.pack``: a request is sent once it is closed (the next run
    promising records did not fit, or it names its most ids); the last, open one waits for the
    walk's next rows. At most one request's rows are held over between reads."""
    held: list[Row] = []
    for batch in walk:
        held += batch
        sizes = packer.sizes(held)
        if sizes and sizes[-1] < packer.most_ids():
            sizes.pop()  # still open
        for size in sizes:
            yield held[:size]
            held = held[size:]
    for size in packer.sizes(held):
        yield held[:size]
        held = held[size:]
